"""A small application for the command-line tests: ``trio-wswrapper serve tests/cli_app.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

import trio_wswrapper as wsw


def build(notified: list[Any] | None = None) -> wsw.Server:
    """A fresh server; events sent to ``notify`` are appended to ``notified``."""
    server = wsw.Server(heartbeat_interval=None)

    @server.on("echo")
    def echo(*args: Any) -> Any:
        return args[0] if len(args) == 1 else list(args)

    @server.on("fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    @server.on("nope")
    def nope() -> None:
        raise wsw.RemoteError("nope")

    @server.on("sleep")
    async def sleep(seconds: float) -> str:
        await trio.sleep(seconds)
        return "slept"

    @server.on("ticks")
    async def ticks(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @server.on("boom")
    async def boom() -> AsyncIterator[int]:
        yield 1
        raise ValueError("gen blew up")

    @server.on("count")
    async def count(n: int) -> None:
        async with wsw.open_channel() as ch:
            for i in range(n):
                await ch.emit("data", i)
            await ch.emit("end")

    @server.on("header")
    def header(name: str) -> str | None:
        handshake = wsw.current_client().handshake
        return handshake.header(name) if handshake is not None else None

    @server.on("notify")
    def notify(*args: Any) -> None:
        if notified is not None:
            notified.append(list(args))

    server.of("chat").on("say", lambda text: f"heard {text}")
    return server


server = build()


def make_server() -> wsw.Server:
    return build()


async def make_server_async() -> wsw.Server:
    await trio.lowlevel.checkpoint()
    return build()


not_a_server = 42
