"""Helpers for testing ws-wrapper applications without sockets.

``open_test_client(server)`` connects a :class:`Client` to ``server`` in process, over a real
WebSocket connection on an in-memory stream (the server's side runs the default ``wsproto``
transport with its opening handshake, the client's side trio-websocket), so tests exercise the
same framing, limits and close handshake as production. ``open_raw_peer(server)`` gives a peer
that sends and receives exact frames, for wire-level tests.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from ._client import Client
from ._config import Options
from ._errors import collapse
from ._server import Server
from ._transport import MemoryTransport, TrioWebsocketTransport, memory_transport_pair
from ._transports import client_handshake

__all__ = ["RawPeer", "open_raw_peer", "open_test_client"]


@asynccontextmanager
async def open_test_client(
    server: Server,
    *,
    client: Client | None = None,
    options: Options | None = None,
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
) -> AsyncIterator[Client]:
    """Connect a client to ``server`` over an in-memory WebSocket and yield it.

    No socket is involved, yet the server side runs exactly what ``Server.serve`` runs for a
    connection: the opening handshake with ``path``, ``headers`` and ``subprotocols`` (so the
    ``authorize`` hook and the Origin check apply; a refusal raises
    :class:`ConnectionRejected`), then ``server.accept``. Leaving the block closes the client
    and waits for both sides to finish.
    """
    client = client or Client(options=options)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    try:
        async with trio.open_nursery() as nursery:
            # wsproto on the server side: it runs over in-memory streams exactly as over sockets.
            nursery.start_soon(partial(server._handle_stream, server_stream, transport="wsproto"))
            ws = await client_handshake(
                nursery,
                client_stream,
                "localhost",
                path,
                subprotocols=list(subprotocols),
                extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                max_message_size=client._options.limits.max_message_size,
            )
            transport = TrioWebsocketTransport(ws, client._options.close_timeout)
            await nursery.start(client._run, transport)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
    except BaseExceptionGroup as group:
        raise collapse(group) from None


class RawPeer:
    """A peer that speaks exact frames to a server over an in-memory transport."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport

    async def send(self, frame: str | bytes | dict[str, Any]) -> None:
        """Send a frame; a dict is encoded as compact JSON first."""
        if isinstance(frame, dict):
            frame = json.dumps(frame, separators=(",", ":"))
        await self.transport.send(frame)

    async def receive(self, timeout: float = 5.0) -> str:
        """The next frame the server sent, as text; fails after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            frame = await self.transport.receive()
        return frame if isinstance(frame, str) else frame.decode()

    async def receive_json(self, timeout: float = 5.0) -> Any:
        """The next frame, decoded."""
        return json.loads(await self.receive(timeout))

    async def expect_silence(self, duration: float = 0.05) -> None:
        """Assert that the server sends nothing for ``duration`` seconds."""
        with trio.move_on_after(duration):
            frame = await self.transport.receive()
            raise AssertionError(f"expected no frame, got {frame!r}")


@asynccontextmanager
async def open_raw_peer(server: Server, *, max_message_size: float = math.inf) -> AsyncIterator[RawPeer]:
    """Connect a :class:`RawPeer` to ``server`` over in-memory transports and yield it."""
    ours, theirs = memory_transport_pair(max_message_size=max_message_size)
    theirs.max_message_size = server.options.limits.max_message_size
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept, theirs)
        try:
            yield RawPeer(ours)
        finally:
            await ours.aclose()
