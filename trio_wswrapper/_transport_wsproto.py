"""A sans-IO transport: wsproto driven directly from the connection's reader task.

trio-websocket runs a background reader task per connection and hands each message over a
memory channel, so every message costs a task switch and a queue hop. Here the core's reader
calls :meth:`WsprotoTransport.receive`, which reads bytes from the stream, feeds them to
wsproto and returns the next whole message: no extra task, no queue. Pings are answered
inline by the same call; writes from any task are serialised by one lock.

When nothing else is being written, :meth:`WsprotoTransport.send_nowait` writes a message
straight to the socket from the calling task, without a checkpoint: a reply or a broadcast
then costs no task switch at all. Whatever the socket does not take at once is left for the
connection's writer task (``flush``), so a slow peer never blocks the caller.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ._endpoint import open_stream, parse_url
from ._errors import ConnectionRejected
from ._handshake import HandshakeFailed, RequestCheck, RequestInfo
from ._transport import TransportClosed

__all__ = ["WsprotoTransport", "accept_stream", "connect"]

RECEIVE_SIZE = 65536
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_ping_ids = itertools.count()


class WsprotoTransport:
    """An open WebSocket over ``stream``, framed by the wsproto connection ``conn``.

    ``receive`` must be called by one task at a time (the core's reader); ``send``, ``ping``
    and ``aclose`` may run alongside it. Control frames are handled by ``receive``: a
    ``ping`` returns once a concurrent ``receive`` has seen its pong. A write cancelled
    part-way leaves ``broken`` set: the stream may end inside a frame, so the connection can
    only be dropped.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        *,
        max_message_size: float = math.inf,
        close_timeout: float = 5.0,
        pending: Sequence[Event] = (),
    ) -> None:
        self.stream = stream
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.broken = False
        #: How the connection ended, once it has.
        self.closed: TransportClosed | None = None
        self._conn = conn
        self._events: deque[Event] = deque(pending)
        self._send_lock = trio.StrictFIFOLock()
        self._parts: list[str | bytes] = []
        self._size = 0
        self._pings: dict[bytes, trio.Event] = {}
        self._reading = False
        self._ended = trio.Event()
        self._stream_closed = False
        #: The part of a direct write the socket did not take; written before anything else.
        self._backlog = b""
        self._socket = _plain_socket(stream)

    # -- writing -----------------------------------------------------------------------------

    async def _write(self, event: Event) -> None:
        lock = self._send_lock
        try:
            # The uncontended case skips the lock's own checkpoint: send_all has its own.
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self.closed is not None and not isinstance(event, CloseConnection):
                raise self.closed
            if self.broken:
                raise TransportClosed(1006, "")
            try:
                data = self._conn.send(event)
            except LocalProtocolError:
                # wsproto refuses once the peer's close frame has been read, even while the
                # reader has not reached that event yet.
                raise self.closed or self._end(self._peer_closed(), final=False) from None
            if self._backlog:
                data, self._backlog = self._backlog + data, b""
            try:
                await self.stream.send_all(data)
            except _STREAM_ERRORS:
                raise self._end(self._peer_closed()) from None
            except BaseException:
                self.broken = True
                raise
        finally:
            lock.release()

    async def send(self, message: str | bytes) -> None:
        if self.closed is not None:
            raise self.closed
        await self._write(TextMessage(message) if isinstance(message, str) else BytesMessage(message))

    @property
    def backlog(self) -> bool:
        """Whether a direct write left bytes that :meth:`flush` must still write."""
        return bool(self._backlog)

    def send_nowait(self, message: str) -> bool:
        """Write ``message`` now without yielding, if the socket is idle; False if not taken.

        Only for a plain TCP socket with no write in progress. The socket is non-blocking, so
        this never waits: what it does not take at once stays in :attr:`backlog`. Any error is
        left for the ordinary write path to meet and report.
        """
        sock = self._socket
        if sock is None or self._backlog or self.closed is not None or self.broken:
            return False
        if self._send_lock.locked():
            return False
        fd = sock.fileno()
        if fd < 0:
            return False
        try:
            data = self._conn.send(TextMessage(message))
        except LocalProtocolError:
            return False
        try:
            sent = os.write(fd, data)
        except OSError:
            # Nothing was written (EAGAIN, or a broken connection the writer will report).
            return False
        if sent < len(data):
            self._backlog = data[sent:]
        return True

    async def flush(self) -> None:
        """Write what a direct write left over (the writer task's part of it)."""
        lock = self._send_lock
        async with lock:
            if not self._backlog or self.closed is not None or self.broken:
                await trio.lowlevel.checkpoint()
                return
            data, self._backlog = self._backlog, b""
            try:
                await self.stream.send_all(data)
            except _STREAM_ERRORS:
                raise self._end(self._peer_closed()) from None
            except BaseException:
                self.broken = True
                raise

    async def ping(self) -> None:
        if self.closed is not None:
            raise self.closed
        payload = b"%d" % next(_ping_ids)
        event = self._pings[payload] = trio.Event()
        try:
            await self._write(Ping(payload))
            await event.wait()
        finally:
            self._pings.pop(payload, None)
        if self.closed is not None:
            raise self.closed

    # -- reading -----------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        if self.closed is not None:
            raise self.closed
        self._reading = True
        try:
            return await self._receive()
        finally:
            self._reading = False

    async def _receive(self) -> str | bytes:
        events = self._events
        conn = self._conn
        if events:
            # Like every Trio receive, a checkpoint even when a message is already buffered:
            # tasks woken by the previous message run first. Nothing is consumed before it,
            # so a cancellation here loses nothing.
            await trio.lowlevel.checkpoint()
        while True:
            while events:
                event = events.popleft()
                if type(event) is TextMessage or type(event) is BytesMessage:
                    raw: str | bytes | bytearray = event.data
                    data = bytes(raw) if isinstance(raw, bytearray) else raw
                    if event.message_finished and not self._parts:
                        if len(data) > self.max_message_size:
                            await self._too_big()
                        return data
                    self._parts.append(data)
                    self._size += len(data)
                    if self._size > self.max_message_size:
                        await self._too_big()
                    if event.message_finished:
                        parts, self._parts, self._size = self._parts, [], 0
                        return "".join(parts) if type(event) is TextMessage else b"".join(parts)  # type: ignore[arg-type]
                elif isinstance(event, Ping):
                    with trio.move_on_after(self.close_timeout) as scope:
                        scope.shield = True
                        await self._write(event.response())
                    if scope.cancelled_caught:
                        await self._drop()
                        raise self._end(TransportClosed(1006, ""))
                elif isinstance(event, Pong):
                    self._on_pong(event.payload)
                elif isinstance(event, CloseConnection):
                    await self._on_close(event)
                    assert self.closed is not None
                    raise self.closed
            try:
                data = bytes(await self.stream.receive_some(RECEIVE_SIZE))
            except _STREAM_ERRORS:
                raise self._end(TransportClosed(1006, "")) from None
            if not data:
                await self._drop()
                raise self._end(TransportClosed(1006, ""))
            try:
                conn.receive_data(data)
                events.extend(conn.events())
            except (LocalProtocolError, RemoteProtocolError):
                await self._drop()
                raise self._end(TransportClosed(1006, "")) from None

    def _on_pong(self, payload: bytes | bytearray) -> None:
        # A pong answers its ping and every ping sent before it; unsolicited ones are ignored.
        if bytes(payload) not in self._pings:
            return
        for key in list(self._pings):
            self._pings.pop(key).set()
            if key == payload:
                break

    async def _on_close(self, event: CloseConnection) -> None:
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer closed first: echo its close frame, then end the connection.
            closed = TransportClosed(int(event.code), event.reason or "")
            self._end(closed)
            await self._send_close(event.response())
        elif state is ConnectionState.OPEN:
            # wsproto reports a malformed frame as a close event it wants us to send.
            self._end(TransportClosed(int(event.code), event.reason or ""))
            await self._send_close(CloseConnection(event.code, event.reason))
        else:
            # The reply to our own close frame.
            self._end(TransportClosed(int(event.code), event.reason or ""))
        await self._drop()

    async def _too_big(self) -> None:
        self._parts, self._size = [], 0
        limit = self.max_message_size
        closed = self._end(TransportClosed(1009, f"Exceeded maximum message size: {limit:.0f} bytes"))
        await self._send_close(CloseConnection(1009, closed.reason))
        await self._drop()
        raise closed

    async def _send_close(self, event: CloseConnection) -> None:
        with trio.move_on_after(self.close_timeout) as scope:
            scope.shield = True
            with contextlib.suppress(TransportClosed):
                await self._write(event)

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None:
        if self._stream_closed:
            await trio.lowlevel.checkpoint()
            return
        if self.broken:
            self._end(TransportClosed(1006, ""))
            await self._drop()
            return
        if self._conn.state is ConnectionState.OPEN:
            self._end(TransportClosed(code, reason), final=False)
            await self._send_close(CloseConnection(code, reason or None))
            if wait:
                with trio.move_on_after(self.close_timeout):
                    await self._await_close_reply()
        await self._drop()

    async def _await_close_reply(self) -> None:
        if self._reading:
            # The reader will see the reply (or the end of the stream) and end the connection.
            await self._ended.wait()
            return
        while self._conn.state is ConnectionState.LOCAL_CLOSING:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except _STREAM_ERRORS:
                return
            if not data:
                return
            try:
                self._conn.receive_data(bytes(data))
                for event in self._conn.events():
                    if isinstance(event, CloseConnection):
                        return
            except (LocalProtocolError, RemoteProtocolError):
                return

    def _peer_closed(self) -> TransportClosed:
        """The peer's close code when its close frame is already read but not yet handled by
        the reader (a write raced it), else 1006."""
        for event in self._events:
            if isinstance(event, CloseConnection):
                return TransportClosed(int(event.code), event.reason or "")
        return TransportClosed(1006, "")

    def _end(self, closed: TransportClosed, *, final: bool = True) -> TransportClosed:
        """Record how the connection ended (the first cause wins) and release ping waiters.

        ``final`` is false only when our own close frame is about to go out and the peer's
        reply is still due.
        """
        if self.closed is None:
            self.closed = closed
        for waiter in self._pings.values():
            waiter.set()
        self._pings.clear()
        if final:
            self._ended.set()
        return self.closed

    async def _drop(self) -> None:
        self._stream_closed = True
        self._ended.set()
        if self.closed is None:
            self.closed = TransportClosed(1006, "")
        await trio.aclose_forcefully(self.stream)


def _plain_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The TCP socket under ``stream`` when bytes written to it reach the peer as they are
    (not through TLS), for :meth:`WsprotoTransport.send_nowait`."""
    while True:
        if isinstance(stream, trio.SocketStream):
            return stream.socket
        inner = getattr(stream, "plain_inner", None)
        if inner is None:
            return None
        stream = inner


async def _read_handshake(stream: trio.abc.Stream, ws: WSConnection) -> list[Event]:
    """Read until the handshake produces events; return them (later ones are frames)."""
    while True:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise HandshakeFailed("the peer closed the connection during the handshake")
        try:
            ws.receive_data(bytes(data))
            events = list(ws.events())
        except RemoteProtocolError as exc:
            if not ws.client and isinstance(exc.event_hint, RejectConnection):
                # A client that is not speaking WebSocket gets an HTTP error, not silence.
                with contextlib.suppress(*_STREAM_ERRORS, LocalProtocolError, h11.ProtocolError):
                    await stream.send_all(ws.send(exc.event_hint))
            raise HandshakeFailed(f"malformed handshake: {exc}") from None
        except (LocalProtocolError, h11.ProtocolError) as exc:
            raise HandshakeFailed(f"malformed handshake: {exc}") from None
        if events:
            return events


@asynccontextmanager
async def connect(
    url: str,
    *,
    ssl_context: ssl_module.SSLContext | None = None,
    subprotocols: Sequence[str] | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] | None = None,
    max_message_size: float = math.inf,
    connect_timeout: float = 10.0,
    close_timeout: float = 5.0,
) -> AsyncIterator[WsprotoTransport]:
    """Open a client connection to ``url`` (``ws://`` or ``wss://``) and yield its transport.

    Raises :class:`HandshakeFailed` (or ``OSError``) when the connection cannot be set up.
    The stream is closed when the context exits.
    """
    endpoint = parse_url(url)
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(connect_timeout):
            stream = await open_stream(endpoint, ssl_context)
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(
                ws.send(
                    Request(
                        host=endpoint.host_header,
                        target=endpoint.target,
                        subprotocols=list(subprotocols or ()),
                        extra_headers=list(extra_headers or ()),
                    )
                )
            )
            events = await _read_handshake(stream, ws)
            first = events[0]
            if isinstance(first, RejectConnection):
                body = b"".join(bytes(e.data) for e in events if isinstance(e, RejectData))
                headers = tuple(
                    (bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1")) for k, v in first.headers
                )
                raise ConnectionRejected(first.status_code, headers, body)
            if not isinstance(first, AcceptConnection) or ws.connection is None:
                raise HandshakeFailed(f"unexpected handshake event {first!r}")
    except trio.TooSlowError:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise HandshakeFailed("timed out during the opening handshake") from None
    except BaseException:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise
    transport = WsprotoTransport(
        stream,
        ws.connection,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        pending=events[1:],
    )
    try:
        yield transport
    finally:
        with trio.CancelScope(shield=True):
            await transport._drop()


async def accept_stream(
    stream: trio.abc.Stream,
    *,
    max_message_size: float = math.inf,
    close_timeout: float = 5.0,
    subprotocols: Sequence[str] = (),
    check: RequestCheck | None = None,
) -> tuple[RequestInfo, WsprotoTransport]:
    """Run the server side of the opening handshake on ``stream``; return the request and
    the open transport.

    The first of the client's subprotocols that is in ``subprotocols`` is selected.
    ``check`` may refuse the request with an HTTP status and body; then, and on any
    malformed handshake, :class:`HandshakeFailed` is raised. The caller owns ``stream``.
    """
    ws = WSConnection(ConnectionType.SERVER)
    events = await _read_handshake(stream, ws)
    request = events[0]
    if not isinstance(request, Request):
        raise HandshakeFailed(f"unexpected handshake event {request!r}")
    info = RequestInfo(
        request.target,
        [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in request.extra_headers],
        request.subprotocols,
    )
    refusal = await check(info) if check is not None else None
    if refusal is not None:
        status = refusal.status
        body = refusal.body.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            *((k.encode(), v.encode()) for k, v in refusal.headers),
        ]
        data = ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        data += ws.send(RejectData(data=body))
        await stream.send_all(data)
        raise HandshakeFailed(f"refused with HTTP {status}")
    chosen = next((p for p in request.subprotocols if p in subprotocols), None)
    await stream.send_all(ws.send(AcceptConnection(subprotocol=chosen)))
    assert ws.connection is not None
    transport = WsprotoTransport(
        stream,
        ws.connection,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        pending=events[1:],
    )
    return info, transport
