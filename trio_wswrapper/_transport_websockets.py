"""A transport on the ``websockets`` library's Trio implementation (websockets >= 17).

Like trio-websocket, websockets runs a reader task per connection and queues whole messages
for ``recv``; its sans-IO core and C masking make each frame cheaper. Compression is off, as
with the other transports, so that every peer sees the same frames.
"""

from __future__ import annotations

import math
import ssl as ssl_module
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Side, State
from websockets.server import ServerProtocol
from websockets.trio.client import ClientConnection
from websockets.trio.connection import Connection
from websockets.trio.server import Server as WsServer
from websockets.trio.server import ServerConnection
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from ._endpoint import open_stream, parse_url
from ._errors import ConnectionRejected, collapse
from ._handshake import HandshakeFailed, RequestCheck, RequestInfo, choose_subprotocol, decode_headers
from ._transport import TransportClosed

__all__ = ["WebsocketsTransport", "accept_stream", "connect"]


def _closed(exc: ConnectionClosed) -> TransportClosed:
    # Report the close that started the closing handshake: the peer's, or ours (e.g. 1009).
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        return TransportClosed(int(exc.rcvd.code), exc.rcvd.reason)
    if exc.sent is not None:
        return TransportClosed(int(exc.sent.code), exc.sent.reason)
    return TransportClosed(1006, "")


def _max_size(max_message_size: float) -> int | None:
    return None if math.isinf(max_message_size) else int(max_message_size)


class WebsocketsTransport:
    """Adapter for an open :class:`websockets.trio.connection.Connection`."""

    def __init__(self, conn: Connection, close_timeout: float, stream: trio.abc.Stream) -> None:
        self.conn = conn
        #: The real stream under ``conn`` (websockets is handed one whose close is ours).
        self.stream = stream
        self.close_timeout = close_timeout
        #: A send was cancelled part-way: the connection can only be dropped.
        self.broken = False
        self._closed = False

    async def send(self, message: str | bytes) -> None:
        if self.broken:
            raise TransportClosed(1006, "")
        try:
            await self.conn.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        except BaseException:
            self.broken = True
            raise

    async def receive(self) -> str | bytes:
        try:
            return await self.conn.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def ping(self) -> None:
        try:
            pong = await self.conn.ping()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        await pong.wait()
        if self.conn.protocol.state is State.CLOSED:
            raise _closed(self.conn.protocol.close_exc)

    async def aclose(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        conn = self.conn
        protocol = conn.protocol
        if not self.broken:
            with trio.move_on_after(self.close_timeout):
                if wait:
                    await conn.aclose(code, reason)
                elif protocol.close_sent is None and protocol.close_rcvd is None:
                    # Send the close frame only: whatever would read the reply is stopping (a
                    # cancelled reader has already marked websockets' own state closed).
                    payload = Close(code, reason).serialize()
                    frame = Frame(Opcode.CLOSE, payload).serialize(mask=protocol.side is Side.CLIENT)
                    protocol.close_sent = Close(code, reason)
                    try:
                        async with conn.send_lock:
                            await self.stream.send_all(frame)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
        await trio.aclose_forcefully(self.stream)


def _connection_options(close_timeout: float) -> dict[str, Any]:
    # The core sends its own heartbeats; the queue of received messages stays bounded.
    return {"ping_interval": None, "ping_timeout": None, "close_timeout": close_timeout, "max_queue": 16}


class _OwnedStream(trio.abc.HalfCloseableStream):
    """The connection's stream as websockets sees it: closing it is left to its owner.

    websockets closes the stream when its reader task is cancelled, which would lose the
    close frame our teardown sends next; the transport and its owner always close the real
    stream themselves. Ending the TCP connection after a closing handshake still happens:
    websockets does that with ``send_eof``.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            await self.stream.send_eof()
        else:
            await self.stream.aclose()

    async def aclose(self) -> None:
        # Shielded: websockets calls this from its reader's cleanup, which must run to the end.
        await trio.lowlevel.cancel_shielded_checkpoint()


class _SameReason:
    """Report an oversized message with the reason the other transports use."""

    max_message_size: int | None

    def fail(self, code: int, reason: str = "") -> None:
        if code == 1009:
            reason = f"Exceeded maximum message size: {self.max_message_size} bytes"
        super().fail(code, reason)  # type: ignore[misc]


class _ClientProtocol(_SameReason, ClientProtocol):
    pass


class _ServerProtocol(_SameReason, ServerProtocol):
    def select_subprotocol(self, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        # As the other transports: the client's first offer the server supports, or none at
        # all (websockets itself refuses the handshake when nothing matches).
        chosen = choose_subprotocol(subprotocols, self.available_subprotocols or ())
        return None if chosen is None else Subprotocol(chosen)


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
) -> AsyncIterator[WebsocketsTransport]:
    """Open a client connection to ``url`` and yield its transport.

    Raises :class:`HandshakeFailed` (or ``OSError``) when the connection cannot be set up.
    """
    endpoint = parse_url(url)
    uri = parse_uri(url)  # what websockets' client protocol is built from; parse_url checked it
    stream: trio.abc.Stream | None = None
    opened = False
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    stream = await open_stream(endpoint, ssl_context)
                    protocol = _ClientProtocol(
                        uri,
                        subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
                        max_size=_max_size(max_message_size),
                    )
                    conn = ClientConnection(
                        nursery, _OwnedStream(stream), protocol, **_connection_options(close_timeout)
                    )
                    headers = decode_headers(extra_headers)
                    await conn.handshake(headers, None)
            except trio.TooSlowError:
                raise HandshakeFailed("timed out during the opening handshake") from None
            except InvalidStatus as exc:
                response = exc.response
                raise ConnectionRejected(
                    response.status_code,
                    tuple((k.lower(), v) for k, v in response.headers.raw_items()),
                    bytes(response.body or b""),
                ) from None
            except InvalidHandshake as exc:
                raise HandshakeFailed(str(exc)) from exc
            opened = True
            transport = WebsocketsTransport(conn, close_timeout, stream)
            try:
                yield transport
            finally:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # A failure to connect is the caller's to handle, not wrapped by our nursery.
        leaf = collapse(group)
        if opened or leaf is group:
            raise
        raise leaf from leaf.__cause__  # keeps the OS's reason (trio's cause), not the group
    finally:
        if not opened and stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


async def _ignore_stream(stream: trio.abc.Stream) -> None:
    await trio.lowlevel.checkpoint()  # never called: accept_stream is handed its streams


async def accept_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    *,
    max_message_size: float = math.inf,
    close_timeout: float = 5.0,
    subprotocols: Sequence[str] = (),
    check: RequestCheck | None = None,
) -> tuple[RequestInfo, WebsocketsTransport]:
    """Run the server side of the opening handshake on ``stream``; return the request and the
    open transport, whose reader task runs in ``nursery``.

    ``check`` may refuse the request with an HTTP status and body; then, and on any failed
    handshake, :class:`HandshakeFailed` is raised. The caller owns ``stream``.
    """
    protocol = _ServerProtocol(
        subprotocols=[Subprotocol(p) for p in subprotocols] or None,
        max_size=_max_size(max_message_size),
    )
    conn = ServerConnection(
        nursery,
        _OwnedStream(stream),
        protocol,
        WsServer([], _ignore_stream),
        **_connection_options(close_timeout),
    )
    seen: list[RequestInfo] = []

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        offered = [
            p.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in value.split(",")
            if p.strip()
        ]
        info = RequestInfo(request.path, list(request.headers.raw_items()), offered)
        seen.append(info)
        refusal = await check(info) if check is not None else None
        if refusal is None:
            return None
        response = connection.respond(refusal.status, refusal.body)
        for name, value in refusal.headers:
            response.headers[name] = value
        return response

    await conn.handshake(process_request, None, server_header=None)
    if protocol.state is not State.OPEN or not seen:
        await trio.aclose_forcefully(stream)
        raise HandshakeFailed(f"handshake failed: {protocol.handshake_exc or 'refused'}")
    return seen[0], WebsocketsTransport(conn, close_timeout, stream)
