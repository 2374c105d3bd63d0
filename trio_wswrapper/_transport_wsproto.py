"""A sans-IO transport: wsproto driven directly from the connection's reader task.

trio-websocket runs a background reader task per connection and hands each message over a
memory channel, so every message costs a task switch and a queue hop. Here the core's reader
calls :meth:`WsprotoTransport.receive`, which reads bytes from the stream, feeds them to
wsproto and returns the next whole message: no extra task, no queue. Pings are answered
inline by the same call; writes from any task are serialised by one lock.

wsproto stays the judge of the protocol, but its frame parser costs several microseconds a
message. So whole, unfragmented text and binary frames, the frames of nearly every ws-wrapper
message, are framed and parsed here (RFC 6455 §5.2); every other frame (control frames,
fragments, anything malformed or unexpected) goes to wsproto byte for byte, and since it only
ever receives whole frames in order, its state stays exactly as if it had seen them all.

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
import re
import ssl as ssl_module
import struct
import sys
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

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
from ._handshake import HandshakeFailed, RequestCheck, RequestInfo, choose_subprotocol, decode_headers
from ._transport import TransportClosed

__all__ = ["WsprotoTransport", "accept_stream", "connect"]

RECEIVE_SIZE = 65536
#: The most one read asks for while a large frame is still arriving.
MAX_RECEIVE_SIZE = 1 << 22
#: The end of an HTTP head, as h11 finds it.
_HEAD_END = re.compile(rb"\n\r?\n")
#: Pushed to the event queue when a data frame declares more than the message size limit.
_TOO_BIG = object()
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
        received: bytes = b"",
    ) -> None:
        self.stream = stream
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.broken = False
        #: How the connection ended, once it has.
        self.closed: TransportClosed | None = None
        self._conn = conn
        self._events: deque[Event | str | bytes | object] = deque()
        #: Received bytes not parsed yet; they start at a frame boundary.
        self._buf = bytearray()
        #: Bytes of the current frame still to hand to wsproto (see the module docstring).
        self._to_wsproto: float = 0
        #: wsproto has a fragmented message in progress: every frame goes to it until it ends.
        self._fragmented = False
        #: Bytes the frame being read still lacks, to size the next read.
        self._missing = 0
        self._client = conn.client
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
        if received:
            self._feed(received)

    # -- writing -----------------------------------------------------------------------------

    def _frame(self, message: str | bytes) -> bytes:
        """The bytes of ``message`` as one whole frame; wsproto's own framing once not open
        (it then refuses as it should)."""
        if self._conn.state is not ConnectionState.OPEN:
            event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
            return self._conn.send(event)
        if isinstance(message, str):
            return _client_frame(0x81, message.encode()) if self._client else _server_frame(message)
        return _client_frame(0x82, message) if self._client else _header(0x82, len(message), 0) + message

    async def _write(self, event: Event | str | bytes) -> None:
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
                data = self._frame(event) if isinstance(event, (str, bytes)) else self._conn.send(event)
            except LocalProtocolError:
                # wsproto refuses once the peer's close frame has been read, even while the
                # reader has not reached that event yet.
                raise self.closed or self._end(self._peer_closed(), final=False) from None
            if self._backlog:
                data, self._backlog = self._backlog + data, b""
            await self._send_all(data)
        finally:
            lock.release()

    async def _send_all(self, data: bytes) -> None:
        """Write ``data`` (holding the send lock); a write cut part-way breaks the stream."""
        try:
            await self.stream.send_all(data)
        except _STREAM_ERRORS:
            raise self._end(self._peer_closed()) from None
        except BaseException:
            self.broken = True
            raise

    async def send(self, message: str | bytes) -> None:
        if self.closed is not None:
            raise self.closed
        await self._write(message)

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
        if self._conn.state is not ConnectionState.OPEN:
            return False
        data = self._frame(message)
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
            await self._send_all(data)

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
        events = self._events
        checkpointed = False
        if events:
            # Like every Trio receive, a checkpoint even when a message is already buffered:
            # tasks woken by the previous message run first. Nothing is consumed before it,
            # so a cancellation here loses nothing.
            await trio.lowlevel.checkpoint()
            checkpointed = True
        self._reading = True
        try:
            while True:
                while events:
                    event: Any = events.popleft()
                    kind = type(event)
                    if kind is str or kind is bytes:
                        return event  # type: ignore[no-any-return]
                    if kind is TextMessage or kind is BytesMessage:
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
                            joined = "".join(parts) if kind is TextMessage else b"".join(parts)  # type: ignore[arg-type]
                            return joined
                    elif event is _TOO_BIG:
                        await self._too_big()
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
                size = min(max(RECEIVE_SIZE, self._missing), MAX_RECEIVE_SIZE)
                sock = self._socket
                try:
                    if sock is None:
                        received = await self.stream.receive_some(size)
                        checkpointed = True
                    else:
                        # The socket itself, without trio's layers: a shorter chain of frames
                        # while an idle connection waits, and one failed read less per message.
                        try:
                            received = os.read(sock.fileno(), size)
                        except BlockingIOError:
                            await trio.lowlevel.wait_readable(sock)
                            checkpointed = True
                            continue
                except _STREAM_ERRORS:
                    raise self._end(TransportClosed(1006, "")) from None
                if not received:
                    await self._drop()
                    raise self._end(TransportClosed(1006, ""))
                try:
                    self._feed(received)
                except (LocalProtocolError, RemoteProtocolError):
                    await self._drop()
                    raise self._end(TransportClosed(1006, "")) from None
                if not checkpointed:
                    # Read without waiting: yield once (what was read is kept, so a
                    # cancellation here loses nothing).
                    await trio.lowlevel.checkpoint()
                    checkpointed = True
        finally:
            self._reading = False

    def _feed(self, data: bytes | bytearray) -> None:
        """Parse bytes from the socket into ``_events``: whole simple data frames here, every
        other frame by wsproto (see the module docstring)."""
        buf = self._buf
        buf += data
        events = self._events
        conn = self._conn
        end = len(buf)
        pos = 0
        self._missing = 0
        while pos < end:
            if self._to_wsproto:
                n = int(min(self._to_wsproto, end - pos))
                conn.receive_data(bytes(buf[pos : pos + n]))
                events.extend(conn.events())
                self._to_wsproto -= n
                pos += n
                continue
            if end - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            # The length in the fewest bytes, and a 64-bit one with its top bit clear (§5.2);
            # wsproto fails the connection (1002) for any other encoding.
            canonical = True
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
                canonical = length >= 126
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
                canonical = 65536 <= length < 1 << 63
            masked = b1 & 0x80
            if masked:
                head += 4
            opcode = b0 & 0x0F
            # No RSV bits (no extension is ever negotiated); clients mask, servers do not (§5.1);
            # a continuation frame exactly when a fragmented message is in progress.
            data_frame = (
                canonical
                and not b0 & 0x70
                and (not masked) is self._client
                and opcode < 3
                and (opcode == 0) is self._fragmented
            )
            # The limit counts characters for text (PROTOCOL.md), and a character takes at
            # most 4 bytes of UTF-8: only a binary frame can be refused on its length alone.
            if data_frame and length > (self.max_message_size if opcode == 2 else 4 * self.max_message_size):
                events.append(_TOO_BIG)
                pos = end
                break
            simple = data_frame and b0 & 0x80 and opcode != 0
            if not simple:
                if length >> 63:
                    self._to_wsproto = math.inf  # malformed: wsproto fails the connection
                else:
                    self._to_wsproto = head + length
                    if opcode in {1, 2}:
                        self._fragmented = not b0 & 0x80
                    elif opcode == 0 and b0 & 0x80:
                        self._fragmented = False
                continue
            total = head + length
            if end - pos < total:
                self._missing = total - (end - pos)
                break
            payload: bytes | bytearray = buf[pos + head : pos + total]
            if masked:
                payload = _apply_mask(payload, buf[pos + head - 4 : pos + head])
            if opcode == 1:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    self._to_wsproto = total  # wsproto fails it with 1007, as it should
                    continue
                if length > self.max_message_size and len(text) > self.max_message_size:
                    events.append(_TOO_BIG)
                    pos = end
                    break
                events.append(text)
            else:
                events.append(bytes(payload))
            pos += total
        del buf[:pos]

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
                self._feed(data)
            except (LocalProtocolError, RemoteProtocolError):
                return
            if any(isinstance(event, CloseConnection) for event in self._events):
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


def _header(first: int, length: int, mask_bit: int) -> bytes:
    if length < 126:
        return bytes((first, length | mask_bit))
    if length < 65536:
        return struct.pack("!BBH", first, 126 | mask_bit, length)
    return struct.pack("!BBQ", first, 127 | mask_bit, length)


def _xor_mask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """``data`` XOR the repeated 4-byte ``mask`` (RFC 6455 §5.3), with big-integer arithmetic."""
    n = len(data)
    if not n:
        return b""
    key = (bytes(mask) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


try:  # websockets' C function, when that optional dependency is installed
    from websockets.speedups import apply_mask as _c_apply_mask
except ImportError:  # pragma: no cover - depends on the environment
    _apply_mask = _xor_mask
else:
    _apply_mask = _c_apply_mask


def _client_frame(first: int, payload: bytes) -> bytes:
    """A whole frame from a client: masked with a fresh random key (RFC 6455 §5.3)."""
    mask = os.urandom(4)
    return _header(first, len(payload), 0x80) + mask + _apply_mask(payload, mask)


#: Frames up to this size are cached by :func:`_server_frame`.
_CACHED_FRAME_SIZE = 256 * 1024
#: The last text frame a server framed, by message: a broadcast is framed once for all clients.
_last_server_frame: tuple[str | None, bytes] = (None, b"")


def _server_frame(message: str) -> bytes:
    """A whole unmasked text frame from a server."""
    global _last_server_frame  # noqa: PLW0603 - a one-entry cache shared by every connection
    last, data = _last_server_frame
    if last is message:
        return data
    payload = message.encode()
    data = _header(0x81, len(payload), 0) + payload
    if len(data) <= _CACHED_FRAME_SIZE:  # a large frame is not kept alive after its broadcast
        _last_server_frame = (message, data)
    return data


def _plain_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The TCP socket under ``stream`` when bytes written to it reach the peer as they are
    (not through TLS), for :meth:`WsprotoTransport.send_nowait`."""
    if sys.platform == "win32":  # pragma: no cover - socket handles are not file descriptors
        return None
    while True:
        if isinstance(stream, trio.SocketStream):
            return stream.socket
        inner = getattr(stream, "plain_inner", None)
        if inner is None:
            return None
        stream = inner


async def _read_handshake(stream: trio.abc.Stream, ws: WSConnection) -> tuple[list[Event], bytes]:
    """Read until the handshake produces events; return them and the bytes after the HTTP head.

    wsproto is given the head only (and, for a refusal, the body after it): the frames that
    follow are the transport's to parse, from a frame boundary.
    """
    held = b""
    while True:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise HandshakeFailed("the peer closed the connection during the handshake")
        data = held + bytes(data)
        found = _HEAD_END.search(data)
        if found is None:
            # The last two bytes may begin the blank line that the next read completes.
            feed, held = data[:-2], data[-2:]
        else:
            feed, held = data[: found.end()], data[found.end() :]
        try:
            if feed:  # h11 takes empty data for the end of the stream
                ws.receive_data(feed)
            events = list(ws.events())
            if events and isinstance(events[0], RejectConnection) and held:
                # A refusal: the body after the head is the HTTP response's, not frames.
                ws.receive_data(held)
                events.extend(ws.events())
                held = b""
        except RemoteProtocolError as exc:
            if not ws.client and isinstance(exc.event_hint, RejectConnection):
                # A client that is not speaking WebSocket gets an HTTP error, not silence.
                with contextlib.suppress(*_STREAM_ERRORS, LocalProtocolError, h11.ProtocolError):
                    await stream.send_all(ws.send(exc.event_hint))
            raise HandshakeFailed(f"malformed handshake: {exc}") from None
        except (LocalProtocolError, h11.ProtocolError) as exc:
            raise HandshakeFailed(f"malformed handshake: {exc}") from None
        if events:
            return events, held
        if found is not None:
            raise HandshakeFailed("malformed handshake: no request or response in the HTTP head")


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
            events, received = await _read_handshake(stream, ws)
            first = events[0]
            if isinstance(first, RejectConnection):
                body = b"".join(bytes(e.data) for e in events if isinstance(e, RejectData))
                headers = tuple(decode_headers(first.headers, lower=True))
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
        received=received,
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
    events, received = await _read_handshake(stream, ws)
    request = events[0]
    if not isinstance(request, Request):
        raise HandshakeFailed(f"unexpected handshake event {request!r}")
    info = RequestInfo(
        request.target,
        decode_headers(request.extra_headers),
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
    chosen = choose_subprotocol(request.subprotocols, subprotocols)
    await stream.send_all(ws.send(AcceptConnection(subprotocol=chosen)))
    assert ws.connection is not None
    transport = WsprotoTransport(
        stream,
        ws.connection,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        received=received,
    )
    return info, transport
