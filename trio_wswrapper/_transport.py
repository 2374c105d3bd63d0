"""The transport seam: what a connection needs from a WebSocket, and the adapters we ship.

A :class:`Transport` moves whole text or binary messages and closes with a code and reason,
like the Go library's ``Conn``. The layers above never touch trio-websocket directly, so a
second adapter can be added without changing them.
"""

from __future__ import annotations

import contextlib
import math
from typing import Protocol, runtime_checkable

import attrs
import trio
import trio_websocket
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

__all__ = [
    "MemoryTransport",
    "Transport",
    "TransportClosed",
    "TrioWebsocketTransport",
    "memory_transport_pair",
]


class TransportClosed(Exception):
    """The WebSocket is closed: ``code`` and ``reason`` describe how (1006 when dropped)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


@runtime_checkable
class Transport(Protocol):
    """One WebSocket connection, message at a time.

    ``receive`` and ``send`` raise :class:`TransportClosed` once the connection is closed.
    ``send`` is called by one task at a time. ``aclose`` starts or completes the closing
    handshake and is idempotent; with ``wait=False`` it sends the close frame but does not
    wait for the peer's reply (used when the tasks that would read it are being cancelled).
    ``ping`` sends a ping and returns when its pong arrives.
    """

    async def send(self, message: str) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def aclose(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None: ...

    async def ping(self) -> None: ...


def _closed(reason: trio_websocket.CloseReason | None) -> TransportClosed:
    if reason is None:
        return TransportClosed(1006, "")
    return TransportClosed(int(reason.code), reason.reason or "")


@attrs.define(eq=False)
class TrioWebsocketTransport:
    """Adapter for a :class:`trio_websocket.WebSocketConnection` that is already open."""

    ws: trio_websocket.WebSocketConnection
    close_timeout: float = 5.0
    #: A send was cancelled part-way: the stream may end inside a frame, so no close frame
    #: may follow; the connection can only be dropped.
    broken: bool = False

    async def send(self, message: str) -> None:
        if self.broken:
            raise TransportClosed(1006, "")
        try:
            await self.ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc.reason) from None
        except BaseException:
            self.broken = True
            raise

    async def receive(self) -> str | bytes:
        try:
            return await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc.reason) from None

    async def aclose(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None:
        ws = self.ws
        if self.broken:
            with trio.CancelScope(shield=True):
                await ws._close_stream()
            return
        if not wait:
            # trio-websocket has no public "send close, don't wait" call; its reader task may
            # already be cancelled, so waiting for the reply would only run out the timeout.
            with trio.move_on_after(self.close_timeout):
                if ws.closed is None and ws._wsproto.state == ConnectionState.OPEN:
                    with contextlib.suppress(trio_websocket.ConnectionClosed):
                        await ws._send(CloseConnection(code=code, reason=reason or None))
            with trio.CancelScope(shield=True):
                await ws._close_stream()
            return
        # trio-websocket waits for the peer's close frame; a silent peer must not hang us.
        with trio.move_on_after(self.close_timeout) as scope:
            await ws.aclose(code, reason or None)
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True):
                await ws._close_stream()

    async def ping(self) -> None:
        try:
            await self.ws.ping()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc.reason) from None


@attrs.define(eq=False)
class MemoryTransport:
    """One end of an in-process connected pair; see :func:`memory_transport_pair`.

    Messages travel through bounded memory channels; no bytes and no WebSocket framing are
    involved. Closing one end delivers the close code and reason to the other, as a close
    frame would. ``max_message_size`` applies to what this end receives (close 1009).
    """

    _send_channel: trio.MemorySendChannel[str | bytes | TransportClosed]
    _receive_channel: trio.MemoryReceiveChannel[str | bytes | TransportClosed]
    max_message_size: float = math.inf
    closed: TransportClosed | None = None

    async def send(self, message: str | bytes) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            await self._send_channel.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._mark_closed(TransportClosed(1006, "")) from None

    async def receive(self) -> str | bytes:
        if self.closed is not None:
            raise self.closed
        try:
            message = await self._receive_channel.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._mark_closed(TransportClosed(1006, "")) from None
        if isinstance(message, TransportClosed):
            self._end()
            raise self._mark_closed(message)
        if len(message) > self.max_message_size:
            await self.aclose(1009, "Exceeded maximum message size")
            assert self.closed is not None
            raise self.closed
        return message

    async def aclose(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None:
        if self.closed is not None:
            return
        self._mark_closed(TransportClosed(code, reason))
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._send_channel.send_nowait(TransportClosed(code, reason))
        self._end()
        await trio.lowlevel.checkpoint()

    async def ping(self) -> None:
        if self.closed is not None:
            raise self.closed
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        """Drop the connection without a close frame: the peer sees 1006."""
        self._mark_closed(TransportClosed(1006, ""))
        self._end()

    def _end(self) -> None:
        self._send_channel.close()
        self._receive_channel.close()

    def _mark_closed(self, closed: TransportClosed) -> TransportClosed:
        if self.closed is None:
            self.closed = closed
        return self.closed


def memory_transport_pair(
    *, buffer: int = 256, max_message_size: float = math.inf
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-memory transports, for tests and in-process wiring."""
    a_send, b_receive = trio.open_memory_channel[str | bytes | TransportClosed](buffer)
    b_send, a_receive = trio.open_memory_channel[str | bytes | TransportClosed](buffer)
    a = MemoryTransport(a_send, a_receive, max_message_size)
    b = MemoryTransport(b_send, b_receive, max_message_size)
    return a, b
