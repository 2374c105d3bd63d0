"""Shared fixtures: a fresh server, and in-process clients and raw peers connected to it."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper import _transports
from trio_wswrapper._transports import TRANSPORTS
from trio_wswrapper.testing import RawPeer

# Installed as a pytest11 entry point too; listed here so that a source checkout loads it.
pytest_plugins = ["trio_wswrapper.pytest_plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--transport",
        default=os.environ.get("WSW_TRANSPORT"),
        choices=list(TRANSPORTS),
        help="run every serve/open_client over this transport (default: the library's; "
        "also set by the WSW_TRANSPORT environment variable)",
    )


@pytest.fixture(autouse=True)
def _transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # serve/open_client resolve their default transport at call time, so the whole suite can
    # run over each transport: pytest --transport=websockets
    name = request.config.getoption("--transport")
    if name is not None:
        monkeypatch.setattr(_transports, "DEFAULT_TRANSPORT", name)


@pytest.fixture
def server() -> wsw.Server:
    """A server with no handlers; heartbeats off so virtual-time tests stay quiet."""
    return wsw.Server(heartbeat_interval=None)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Every ignored frame logs at DEBUG; capturing it keeps those code paths exercised.
    caplog.set_level(logging.DEBUG, logger="trio_wswrapper")


class _Tap:
    """A transport wrapper that records every frame the wrapped side hands to it for sending."""

    def __init__(self, inner: wsw.MemoryTransport, written: list[str]) -> None:
        self._inner = inner
        self._written = written

    async def send(self, message: str) -> None:
        self._written.append(message)
        await self._inner.send(message)

    async def receive(self) -> str | bytes:
        return await self._inner.receive()

    async def aclose(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None:
        await self._inner.aclose(code, reason, wait=wait)

    async def ping(self) -> None:
        await self._inner.ping()


class ServerPeer(RawPeer):
    """A raw peer acting as the *server* for a real :class:`wsw.Client`.

    ``written`` lists every frame the client handed to its transport, including frames the
    peer can no longer receive because the connection ended.
    """

    written: list[str]


RawServer = Callable[..., AbstractAsyncContextManager[tuple[wsw.Client, ServerPeer]]]


@pytest.fixture
def raw_server() -> RawServer:
    """``async with raw_server(client=None, options=None, buffer=256) as (client, peer)``.

    Runs ``Client._run`` on one end of a memory transport pair; the test drives the other end
    with exact frames. ``buffer=0`` makes the client's writer wait until the peer receives.
    """

    @asynccontextmanager
    async def open_raw_server(
        client: wsw.Client | None = None, *, options: wsw.Options | None = None, buffer: int = 256
    ) -> AsyncIterator[tuple[wsw.Client, ServerPeer]]:
        client = client or wsw.Client(options=options)
        ours, theirs = wsw.memory_transport_pair(buffer=buffer)
        peer = ServerPeer(ours)
        peer.written = []
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run, _Tap(theirs, peer.written))
            try:
                yield client, peer
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await ours.aclose()
                    await client.aclose()

    return open_raw_server
