"""Server: handlers shared by every connection, accepting, serving and broadcasting."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
import trio_websocket

from . import _protocol as proto
from ._client import Client
from ._config import Options, make_options
from ._errors import ConnectionClosed
from ._handlers import HandlerTable, Registry, new_lifecycle
from ._handshake import HandshakeFailed
from ._transport import Transport, TrioWebsocketTransport
from ._transports import TransportName, accept_stream, check_transport
from ._transports import connect as connect_transport

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Server", "ServerChannel", "ServerStatistics", "open_client"]

logger = logging.getLogger("trio_wswrapper")

#: A broadcast's failures: each client that did not get the frame, and why.
BroadcastFailures = list[tuple[Client, Exception]]


class ServerChannel(Registry):
    """A named channel for every connection of a server (``server.of(name)``)."""

    def __init__(self, server: Server, name: str) -> None:
        self._server = server
        self._table = HandlerTable()
        self.name = name
        self._closed = False

    async def emit(self, name: str, *args: Any) -> BroadcastFailures:
        """Broadcast event ``name`` on this channel to every client (see :meth:`Server.emit`)."""
        self._check_open()
        proto.check_event_name(name, root=False)
        frame = proto.encode_event(name, args, channel=self.name)
        await trio.lowlevel.checkpoint()
        return self._server._broadcast(frame)

    def close(self) -> None:
        """Close the channel for all connections: handlers dropped, later traffic unknown."""
        if not self._closed:
            self._closed = True
            self._table = HandlerTable()
            if self._server._named.get(self.name) is self:
                del self._server._named[self.name]

    def _check_open(self) -> None:
        if self._closed:
            from ._errors import ChannelClosed

            raise ChannelClosed(f"channel {self.name!r} is closed")

    def __repr__(self) -> str:
        return f"<trio_wswrapper.ServerChannel {self.name!r}>"


@attrs.frozen
class ServerStatistics:
    """What :meth:`Server.statistics` reports, summed over the connected clients."""

    clients: int
    pending_requests: int
    active_requests: int
    running_handlers: int
    open_channels: int
    queued_frames: int


class Server(Registry):
    """A ws-wrapper server: one handler registry shared by all of its connections.

    Handlers registered with :meth:`on`/:meth:`once` (and on :meth:`of` channels) serve every
    client; :func:`current_client` tells a handler which client sent the message. ``once``
    handlers fire once for the whole server. Options are keyword-only and apply to every
    connection (PROTOCOL.md §13, §14).
    """

    _root = True

    def __init__(
        self,
        *,
        max_message_size: int = 1024 * 1024,
        max_concurrent_handlers: int = 256,
        channel_buffer_size: int = 256,
        send_queue_size: int = 256,
        request_timeout: float | None = None,
        heartbeat_interval: float | None = 60.0,
        close_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        peer_compat: proto.PeerCompat = "v4",
        error_flag: bool = False,
        error_to_json: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self._options = make_options(
            max_message_size=max_message_size,
            max_concurrent_handlers=max_concurrent_handlers,
            channel_buffer_size=channel_buffer_size,
            send_queue_size=send_queue_size,
            request_timeout=request_timeout,
            heartbeat_interval=heartbeat_interval,
            close_timeout=close_timeout,
            peer_compat=peer_compat,
            error_flag=error_flag,
            error_to_json=error_to_json,
        )
        self._connect_timeout = connect_timeout
        self._table = HandlerTable()
        self._lifecycle = new_lifecycle()
        self._named: dict[str, ServerChannel] = {}
        self._clients: dict[Client, None] = {}
        self._serving: set[trio.CancelScope] = set()
        self._closing = False

    @property
    def options(self) -> Options:
        """The options every connection of this server uses."""
        return self._options

    @property
    def clients(self) -> list[Client]:
        """The clients connected now, in the order they connected."""
        return list(self._clients)

    def of(self, name: str) -> ServerChannel:
        """The named channel ``name`` for every current and future connection (§11)."""
        proto.check_channel_name(name)
        channel = self._named.get(name)
        if channel is None:
            channel = self._named[name] = ServerChannel(self, name)
        return channel

    async def emit(self, name: str, *args: Any) -> BroadcastFailures:
        """Broadcast event ``name`` to every connected client on the root channel.

        The frame is encoded once. A client whose send queue is full, or that is closing, does
        not hold up the others: it misses the event and is returned among the failures as
        ``(client, exception)`` (``trio.WouldBlock`` or :class:`ConnectionClosed`).
        """
        proto.check_event_name(name, root=True)
        frame = proto.encode_event(name, args)
        await trio.lowlevel.checkpoint()
        return self._broadcast(frame)

    def _broadcast(self, frame: str) -> BroadcastFailures:
        failures: BroadcastFailures = []
        for client in list(self._clients):
            gen = client._gen
            try:
                if gen is None or gen.close_sent is not None:
                    raise ConnectionClosed(None, "connection is closing")
                gen.queue.put_nowait(frame)
            except (trio.WouldBlock, ConnectionClosed) as exc:
                failures.append((client, exc))
        return failures

    async def accept(self, ws: trio_websocket.WebSocketConnection | Transport) -> None:
        """Serve one accepted WebSocket (or any :class:`Transport`) until it closes.

        Creates the :class:`Client` for it, runs the ``open`` listeners, reads until either
        side closes, then runs the ``close`` listeners. The caller owns ``ws``; it is closed
        when this returns. Errors of this connection never reach other connections.
        """
        if self._closing:
            raise ConnectionClosed(1001, "server is closing")
        if isinstance(ws, trio_websocket.WebSocketConnection):
            transport: Transport = TrioWebsocketTransport(ws, self._options.close_timeout)
        else:
            transport = ws
        client = Client(options=self._options, server=self)
        self._clients[client] = None
        try:
            await client._run(transport)
        except BaseExceptionGroup as group:
            raise _collapse(group) from None
        finally:
            self._clients.pop(client, None)

    async def serve(
        self,
        host: str | None,
        port: int,
        *,
        ssl_context: Any = None,
        transport: TransportName | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host``:``port`` and serve ws-wrapper connections until cancelled.

        Returns only when :meth:`aclose` stops the server; a closed server cannot serve again.
        Use ``port = await nursery.start(server.serve, host, 0)`` to learn the bound port.
        Every connection runs in its own nursery; a failing connection is logged and closed,
        and never stops the server. ``transport`` names the WebSocket implementation
        (``"wsproto"``, ``"trio-websocket"`` or ``"websockets"``; the default when ``None``,
        see the README).
        """
        transport = check_transport(transport)
        if self._closing:
            raise RuntimeError("this server is closed")
        if ssl_context is None:
            listeners: list[Any] = await trio.open_tcp_listeners(port, host=host)
        else:
            listeners = await trio.open_ssl_over_tcp_listeners(
                port, ssl_context, host=host, https_compatible=True
            )
        try:
            await self._serve_listeners(host, listeners, task_status, transport)
        except BaseExceptionGroup as group:
            raise _collapse(group) from None

    async def _serve_listeners(
        self,
        host: str | None,
        listeners: list[Any],
        task_status: trio.TaskStatus[int],
        transport: TransportName | None = None,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._serving.add(nursery.cancel_scope)
            try:
                await nursery.start(
                    partial(
                        trio.serve_listeners, partial(self._handle_stream, transport=transport), listeners
                    )
                )
                first = listeners[0]
                sock = first.socket if hasattr(first, "socket") else first.transport_listener.socket
                bound = sock.getsockname()[1]
                logger.info("serving ws-wrapper on %s:%d", host, bound)
                task_status.started(bound)
                await trio.sleep_forever()
            finally:
                self._serving.discard(nursery.cancel_scope)

    async def _handle_stream(self, stream: trio.abc.Stream, transport: TransportName | None = None) -> None:
        try:
            async with trio.open_nursery() as nursery:
                opened = None
                with trio.move_on_after(self._connect_timeout):
                    try:
                        opened = await accept_stream(
                            transport,
                            nursery,
                            stream,
                            max_message_size=self._options.limits.max_message_size,
                            close_timeout=self._options.close_timeout,
                        )
                    except HandshakeFailed as exc:
                        logger.debug("opening handshake failed: %s", exc)
                if opened is None:
                    nursery.cancel_scope.cancel()
                    return
                await self.accept(opened[1])
                nursery.cancel_scope.cancel()
        except ConnectionClosed:
            logger.debug("refused a connection: the server is closing")
        except Exception:
            logger.exception("connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        """Close every client with 1001 ``server is closing`` and stop serving."""
        self._closing = True
        async with trio.open_nursery() as nursery:
            for client in list(self._clients):
                nursery.start_soon(partial(client._close, 1001, "server is closing", user=False))
        for scope in list(self._serving):
            scope.cancel()

    def statistics(self) -> ServerStatistics:
        """Totals over the connected clients."""
        stats = [client.statistics() for client in self._clients]
        return ServerStatistics(
            clients=len(stats),
            pending_requests=sum(s.pending_requests for s in stats),
            active_requests=sum(s.active_requests for s in stats),
            running_handlers=sum(s.running_handlers for s in stats),
            open_channels=sum(s.open_channels for s in stats),
            queued_frames=sum(s.queued_frames for s in stats),
        )


def _collapse(group: BaseExceptionGroup[Any]) -> BaseException:
    """The single real error inside nested exception groups, or the group itself."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_cancellation(inner) for inner in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


@asynccontextmanager
async def open_client(
    url: str,
    *,
    client: Client | None = None,
    connect_timeout: float = 10.0,
    ssl_context: Any = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
    max_message_size: int = 1024 * 1024,
    max_concurrent_handlers: int = 256,
    channel_buffer_size: int = 256,
    send_queue_size: int = 256,
    request_timeout: float | None = None,
    heartbeat_interval: float | None = None,
    close_timeout: float = 5.0,
    peer_compat: proto.PeerCompat = "v4",
    error_flag: bool = False,
    error_to_json: Callable[[BaseException], Any] | None = None,
    transport: TransportName | None = None,
) -> AsyncIterator[Client]:
    """Connect to the ws-wrapper endpoint at ``url`` and yield the connected :class:`Client`.

    The context owns the connection's nursery (reader, writer and handler tasks). Leaving it
    closes the connection (1000) and waits for the teardown. Pass ``client`` to reuse a client
    object whose handlers are already registered (so that none of the first messages is
    missed); otherwise the keyword options configure a new one. Connection failures raise
    :class:`ConnectionClosed`. ``transport`` names the WebSocket implementation
    (``"wsproto"``, ``"trio-websocket"`` or ``"websockets"``; the default when ``None``, see
    the README).
    """
    transport = check_transport(transport)
    if client is None:
        client = Client(
            options=make_options(
                max_message_size=max_message_size,
                max_concurrent_handlers=max_concurrent_handlers,
                channel_buffer_size=channel_buffer_size,
                send_queue_size=send_queue_size,
                request_timeout=request_timeout,
                heartbeat_interval=heartbeat_interval,
                close_timeout=close_timeout,
                peer_compat=peer_compat,
                error_flag=error_flag,
                error_to_json=error_to_json,
            )
        )
    limits = client._options.limits
    connected = False
    try:
        async with connect_transport(
            transport,
            url,
            ssl_context=ssl_context,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
            max_message_size=limits.max_message_size,
            connect_timeout=connect_timeout,
            close_timeout=client._options.close_timeout,
        ) as conn:
            connected = True
            async with trio.open_nursery() as nursery:
                await nursery.start(client._run, conn)
                cancelled = False
                try:
                    yield client
                except BaseException as exc:
                    # A cancelled body has also cancelled trio-websocket's reader, so nothing
                    # would read the peer's close reply: close without waiting for it.
                    cancelled = _is_cancellation(exc)
                    raise
                finally:
                    with trio.CancelScope(shield=True):
                        await client._close(1000, "", user=True, prompt=cancelled)
    except BaseExceptionGroup as group:
        raise _collapse(group) from None
    except (OSError, trio_websocket.HandshakeError, HandshakeFailed) as exc:
        if connected:
            raise
        raise ConnectionClosed(None, f"cannot connect to {url}: {exc}") from exc
