"""python-socketio: its asyncio server on aiohttp, and its asyncio client over WebSocket only."""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

from bench.common import MAX_MESSAGE, SMALL, Timer, finish, main, ready, rss_bytes

WARMUP = 50


def server(args: argparse.Namespace) -> None:
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=MAX_MESSAGE)
    app = web.Application()
    sio.attach(app)

    @sio.on("echo")
    async def echo(sid: str, x: Any) -> Any:
        return x

    @sio.on("rss")
    async def rss(sid: str) -> int:
        return rss_bytes()

    @sio.on("broadcast")
    async def broadcast(sid: str, n: int) -> int:
        for i in range(n):
            await sio.emit("tick", i)
        return n

    async def run() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", args.port))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        ready(sock.getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(run())


def client(args: argparse.Namespace) -> None:
    asyncio.run(run_client(args))


async def run_client(args: argparse.Namespace) -> None:
    import socketio

    url = f"http://127.0.0.1:{args.port}"
    params: dict[str, int] = args.params
    scenario: str = args.scenario
    opened: list[Any] = []

    async def connect(sio: Any = None) -> Any:
        sio = sio or socketio.AsyncClient()
        await sio.connect(url, transports=["websocket"])
        opened.append(sio)
        return sio

    memory = None
    try:
        first = await connect()
        for _ in range(WARMUP):
            await first.call("echo", SMALL)
        if scenario == "S1":
            with Timer() as timer:
                for _ in range(params["requests"]):
                    await first.call("echo", SMALL)
        elif scenario == "S2":
            each = params["requests"] // params["in_flight"]

            async def worker() -> None:
                for _ in range(each):
                    await first.call("echo", SMALL)

            with Timer() as timer:
                await asyncio.gather(*(worker() for _ in range(params["in_flight"])))
            params = {**params, "requests": each * params["in_flight"]}
        elif scenario == "S3":
            events = params["events"]
            done = asyncio.Event()
            remaining = [params["clients"]]

            def counter() -> Any:
                sio = socketio.AsyncClient()
                seen = [0]

                @sio.on("tick")
                async def tick(i: int) -> None:
                    seen[0] += 1
                    if seen[0] == events:
                        remaining[0] -= 1
                        if remaining[0] == 0:
                            done.set()

                return sio

            clients = [await connect(counter()) for _ in range(params["clients"])]
            for c in clients:
                await c.call("echo", SMALL)
            with Timer() as timer:
                await clients[0].call("broadcast", events, timeout=600)
                await done.wait()
        elif scenario == "S4":
            before = await first.call("rss")
            for _ in range(params["connections"]):
                c = await connect()
                await c.call("echo", SMALL)
            memory = (before, await first.call("rss"))
            timer = Timer()
            timer.elapsed = 0.0
        else:
            payload = "x" * params["size"]
            with Timer() as timer:
                for _ in range(params["requests"]):
                    assert len(await first.call("echo", payload)) == params["size"]
        finish(scenario, params, timer.elapsed, memory)
    finally:
        await asyncio.gather(*(sio.disconnect() for sio in opened), return_exceptions=True)


if __name__ == "__main__":
    main(server, client)
