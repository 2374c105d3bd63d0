"""A raw WebSocket client over a real loopback socket, for hostile and fault tests.

wsproto does the opening handshake and parses what the server sends; frames we send are
either made by wsproto (well-formed messages) or built byte for byte by :func:`frame`
(fragments, bad UTF-8, oversize, reserved bits), which trio-websocket would never produce.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections import deque

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import Opcode

__all__ = ["Opcode", "RawWebSocket", "frame"]

MASK = b"\x37\xfa\x21\x3d"


def frame(opcode: Opcode | int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """One masked client frame, exactly as given (no validation at all)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | int(opcode)])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    key = (MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + MASK + masked


class RawWebSocket:
    """A client WebSocket whose every outgoing byte the test controls.

    ``receive`` returns whole messages (``str`` or ``bytes``) or the server's
    :class:`CloseConnection`; pings are answered automatically unless ``answer_pings`` is
    false. After the server's close, ``closed`` holds it.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._events: deque[Event] = deque()
        self._text: list[str] = []
        self._bytes: list[bytes] = []
        self.closed: CloseConnection | None = None
        self.eof = False
        self.answer_pings = True

    @classmethod
    async def connect(cls, port: int, path: str = "/", *, origin: str | None = None) -> RawWebSocket:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        self = cls(stream)
        headers = [(b"Origin", origin.encode())] if origin else []
        await stream.send_all(self.ws.send(Request(host="127.0.0.1", target=path, extra_headers=headers)))
        while True:
            event = await self._next_event()
            if isinstance(event, AcceptConnection):
                return self
            if isinstance(event, RejectConnection):
                await stream.aclose()
                raise ConnectionRefusedError(f"handshake rejected with HTTP {event.status_code}")

    async def _next_event(self) -> Event:
        while not self._events:
            if self.eof:
                raise EOFError("the server closed the TCP connection")
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.eof = True
                if self.ws.state is not ConnectionState.CLOSED:
                    self.ws.receive_data(None)
            elif self.ws.state is not ConnectionState.CLOSED:
                self.ws.receive_data(data)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(data=data)))

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are: hand-built frames, or anything else."""
        await self.stream.send_all(data)

    async def receive(self) -> str | bytes | CloseConnection:
        """The next whole message from the server, or its close frame."""
        while True:
            if self.closed is not None:
                return self.closed
            event = await self._next_event()
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return text
            elif isinstance(event, BytesMessage):
                self._bytes.append(bytes(event.data))
                if event.message_finished:
                    data, self._bytes = b"".join(self._bytes), []
                    return data
            elif isinstance(event, Ping):
                if self.answer_pings:
                    await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed = event
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.stream.send_all(self.ws.send(event.response()))
                return event

    async def wait_closed(self) -> CloseConnection:
        """Discard messages until the server's close frame arrives."""
        while True:
            message = await self.receive()
            if isinstance(message, CloseConnection):
                return message

    async def wait_eof(self) -> None:
        """Wait until the server has closed the TCP connection."""
        while not self.eof:
            try:
                await self._next_event()
            except EOFError:
                return

    def reset(self) -> None:
        """Drop the connection with a TCP reset (SO_LINGER 0): no close frame, no FIN."""
        sock = self.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> RawWebSocket:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await trio.aclose_forcefully(self.stream)
