"""Choosing a transport by name: one client factory and one server handshake per adapter.

``open_client(..., transport=...)`` and ``Server.serve(..., transport=...)`` call these; the
layers above only ever see a :class:`Transport`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, get_args

import h11
import trio
import trio_websocket
import wsproto.utilities
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from ._endpoint import open_stream, parse_url
from ._errors import ConnectionRejected, collapse
from ._handshake import HandshakeFailed, RequestCheck, RequestInfo, choose_subprotocol, decode_headers
from ._transport import Transport, TrioWebsocketTransport

__all__ = ["DEFAULT_TRANSPORT", "TRANSPORTS", "TransportName", "accept_stream", "connect"]

#: The WebSocket implementations a connection can run on.
TransportName = Literal["wsproto", "trio-websocket", "websockets"]
TRANSPORTS: tuple[TransportName, ...] = get_args(TransportName)
#: The fastest one that passes the whole suite (see docs/performance.md).
DEFAULT_TRANSPORT: TransportName = "wsproto"


def check_transport(name: str | None) -> TransportName:
    """The transport ``name`` names (``None``: the default), else ``ValueError``."""
    if name is None:
        return DEFAULT_TRANSPORT
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}; choose one of {', '.join(TRANSPORTS)}")
    return name


@asynccontextmanager
async def connect(
    name: TransportName | None,
    url: str,
    *,
    ssl_context: Any = None,
    subprotocols: Sequence[str] | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] | None = None,
    max_message_size: float = math.inf,
    connect_timeout: float = 10.0,
    close_timeout: float = 5.0,
) -> AsyncIterator[Transport]:
    """Connect to ``url`` over transport ``name`` and yield the open :class:`Transport`.

    Before yielding, failures raise :class:`HandshakeFailed`, ``OSError`` or
    ``trio_websocket.HandshakeError``. The connection's stream is closed on exit.
    """
    name = check_transport(name)
    if name != "trio-websocket":
        if name == "wsproto":
            from . import _transport_wsproto as adapter
        else:
            from . import _transport_websockets as adapter  # type: ignore[no-redef]

        async with adapter.connect(
            url,
            ssl_context=ssl_context,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            close_timeout=close_timeout,
        ) as transport:
            yield transport
    else:
        # trio-websocket's own open_websocket_url leaks its socket when the server refuses the
        # handshake, so the stream is opened (and always closed) here.
        endpoint = parse_url(url)
        opened = False
        try:
            async with trio.open_nursery() as nursery:
                stream: trio.abc.Stream | None = None
                try:
                    with trio.fail_after(connect_timeout):
                        stream = await open_stream(endpoint, ssl_context)
                        ws = await client_handshake(
                            nursery,
                            stream,
                            endpoint.host_header,
                            endpoint.target,
                            subprotocols=list(subprotocols) if subprotocols else None,
                            extra_headers=list(extra_headers) if extra_headers else None,
                            max_message_size=int(min(max_message_size, 2**63)),
                        )
                except BaseException as exc:
                    if stream is not None:
                        with trio.CancelScope(shield=True):
                            await trio.aclose_forcefully(stream)
                    nursery.cancel_scope.cancel()
                    if isinstance(exc, trio.TooSlowError):
                        raise HandshakeFailed("timed out during the opening handshake") from None
                    if isinstance(exc, (h11.ProtocolError, wsproto.utilities.ProtocolError)):
                        raise HandshakeFailed(f"malformed handshake: {exc}") from exc
                    raise
                opened = True
                try:
                    yield TrioWebsocketTransport(ws, close_timeout)
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(stream)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # A failure to connect is the caller's to handle, not wrapped by our nursery.
            leaf = collapse(group)
            if opened or leaf is group:
                raise
            if isinstance(leaf, (h11.ProtocolError, wsproto.utilities.ProtocolError)):
                raise HandshakeFailed(f"malformed handshake: {leaf}") from leaf
            raise leaf from leaf.__cause__  # keeps the OS's reason (trio's cause), not the group


async def accept_stream(
    name: TransportName | None,
    nursery: trio.Nursery | None,
    stream: trio.abc.Stream,
    *,
    max_message_size: float = math.inf,
    close_timeout: float = 5.0,
    subprotocols: Sequence[str] = (),
    check: RequestCheck | None = None,
) -> tuple[RequestInfo, Transport]:
    """Run the server side of the opening handshake on ``stream`` over transport ``name``.

    Returns what the client asked for and the open transport; background tasks the adapter
    needs run in ``nursery`` (only ``wsproto`` needs none, and accepts None). ``check`` may
    refuse the request over HTTP (``(status, body)``), raising :class:`HandshakeFailed`. The
    caller owns ``stream``.
    """
    name = check_transport(name)
    if name == "wsproto":
        from . import _transport_wsproto

        return await _transport_wsproto.accept_stream(
            stream,
            max_message_size=max_message_size,
            close_timeout=close_timeout,
            subprotocols=subprotocols,
            check=check,
        )
    if nursery is None:
        raise ValueError(f"the {name} transport runs background tasks: it needs a nursery")
    if name == "websockets":
        from . import _transport_websockets

        return await _transport_websockets.accept_stream(
            nursery,
            stream,
            max_message_size=max_message_size,
            close_timeout=close_timeout,
            subprotocols=subprotocols,
            check=check,
        )
    request = await trio_websocket.wrap_server_stream(
        nursery, stream, max_message_size=int(min(max_message_size, 2**63))
    )
    info = RequestInfo(
        request.path,
        decode_headers(request.headers),
        request.proposed_subprotocols,
    )
    refusal = await check(info) if check is not None else None
    if refusal is not None:
        await request.reject(
            refusal.status,
            extra_headers=[
                (b"Content-Type", b"text/plain; charset=utf-8"),
                *((k.encode(), v.encode()) for k, v in refusal.headers),
            ],
            body=refusal.body.encode(),
        )
        raise HandshakeFailed(f"refused with HTTP {refusal.status}")
    chosen = choose_subprotocol(request.proposed_subprotocols, subprotocols)
    ws = await request.accept(subprotocol=chosen)
    return info, TrioWebsocketTransport(ws, close_timeout)


async def client_handshake(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: list[str] | None,
    extra_headers: list[tuple[bytes, bytes]] | None,
    max_message_size: int,
) -> trio_websocket.WebSocketConnection:
    """Run the client's opening handshake on ``stream``, as ``wrap_client_stream`` does.

    trio-websocket 0.12.2 waits for ever when the server closes the TCP connection before
    answering the handshake; here the end of its reader task also ends the wait.
    """
    ws = trio_websocket.WebSocketConnection(
        stream,  # any trio Stream works
        WSConnection(ConnectionType.CLIENT),
        host=host,
        path=resource,
        client_subprotocols=subprotocols,
        client_extra_headers=extra_headers,
        max_message_size=max_message_size,
    )

    failed: list[Exception] = []

    async def reader() -> None:
        try:
            await ws._reader_task()
        except trio_websocket.ConnectionRejected as exc:
            failed.append(
                ConnectionRejected(
                    exc.status_code, tuple(decode_headers(exc.headers, lower=True)), exc.body or b""
                )
            )
        except (h11.ProtocolError, wsproto.utilities.ProtocolError) as exc:
            if ws._wsproto.state is not ConnectionState.CONNECTING:
                raise
            failed.append(HandshakeFailed(f"malformed handshake: {exc}"))
        finally:
            ws._open_handshake.set()

    nursery.start_soon(reader)
    await ws._open_handshake.wait()
    if failed:
        raise failed[0]
    if ws._wsproto.state is not ConnectionState.OPEN:
        raise OSError("the server closed the connection during the handshake")
    return ws
