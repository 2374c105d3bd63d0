"""Server: handlers shared by every connection, accepting, serving and broadcasting."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from . import _protocol as proto
from ._broadcast import BroadcastBackend, LocalBroadcast
from ._client import Client
from ._config import Options, make_options
from ._errors import ConnectionClosed, collapse
from ._handlers import HandlerTable, Registry, new_lifecycle
from ._handshake import (
    Handshake,
    HandshakeFailed,
    Reject,
    RequestInfo,
    choose_subprotocol,
    normalize_origin,
    origin_allowed,
)
from ._http import StaticFiles, StaticSpec, route_stream
from ._middleware import HandlerContext, UsesMiddleware
from ._transport import Transport, TrioWebsocketTransport
from ._transports import TransportName, accept_stream, check_transport

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Group", "Server", "ServerChannel", "ServerStatistics"]

logger = logging.getLogger("trio_wswrapper")

#: A broadcast's failures: each client that did not get the frame, and why.
BroadcastFailures = list[tuple[Client, Exception]]


class ServerChannel(Registry, UsesMiddleware):
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
        frame = proto.encode_event(name, args, channel=self.name, codec=self._server._codec)
        return await self._server._bus.publish(frame)

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


class Group:
    """A named group of clients, across every server that shares a broadcast backend.

    ``server.group(name)`` gives it. Add this server's clients to it; :meth:`emit` reaches the
    members connected to every server the ``broadcast=`` backend links (all processes on a
    Redis bus), and no one else: a room, or every connection of one user. A client leaves
    every group when it disconnects. Groups hold no state of their own besides their
    members here, so they cost nothing once empty.
    """

    def __init__(self, server: Server, name: str) -> None:
        self._server = server
        self.name = name

    def add(self, client: Client) -> None:
        """Make ``client``, connected to this server, a member (again: no effect)."""
        server = self._server
        if client not in server._clients:
            raise ValueError(f"{client!r} is not connected to this server")
        server._groups.setdefault(self.name, {})[client] = None
        server._memberships.setdefault(client, set()).add(self.name)

    def discard(self, client: Client) -> None:
        """Remove ``client`` from the group, if it is a member."""
        self._server._leave(client, self.name)

    @property
    def clients(self) -> list[Client]:
        """The members connected to this server, in the order they joined."""
        return list(self._server._groups.get(self.name, ()))

    def __contains__(self, client: object) -> bool:
        return client in self._server._groups.get(self.name, ())

    def __len__(self) -> int:
        return len(self._server._groups.get(self.name, ()))

    async def emit(self, name: str, *args: Any, channel: str | None = None) -> BroadcastFailures:
        """Send event ``name`` to every member, on the named ``channel`` or the root channel.

        As :meth:`Server.emit`: encoded once, never waiting for a slow member; returns this
        server's members that missed it.
        """
        if channel is None:
            proto.check_event_name(name, root=True)
        else:
            proto.check_channel_name(channel)
            proto.check_event_name(name, root=False)
        frame = proto.encode_event(name, args, channel=channel, codec=self._server._codec)
        return await self._server._bus.publish(frame, group=self.name)

    def __repr__(self) -> str:
        return f"<trio_wswrapper.Group {self.name!r} ({len(self)} here)>"


@attrs.frozen
class ServerStatistics:
    """What :meth:`Server.statistics` reports, summed over the connected clients."""

    clients: int
    pending_requests: int
    active_requests: int
    running_handlers: int
    open_channels: int
    queued_frames: int


class Server(Registry, UsesMiddleware):
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
        authorize: Callable[[Handshake], Any] | None = None,
        allowed_origins: Collection[str] | None = None,
        subprotocols: Sequence[str] = (),
        handler_context: HandlerContext | None = None,
        codec: proto.Codec | None = None,
        static: StaticSpec | None = None,
        broadcast: BroadcastBackend | None = None,
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
            handler_context=handler_context,
            codec=codec,
        )
        self._codec = proto.custom_codec(self._options.codec)
        self._connect_timeout = connect_timeout
        self._authorize = authorize
        self._origins = (
            None if allowed_origins is None else frozenset(normalize_origin(o) for o in allowed_origins)
        )
        self._subprotocols = tuple(subprotocols)
        self._static = None if static is None else StaticFiles(static)
        self._table = HandlerTable()
        self._lifecycle = new_lifecycle()
        self._named: dict[str, ServerChannel] = {}
        self._clients: dict[Client, None] = {}
        #: Group name -> members here (in joining order); client -> the groups it is in.
        self._groups: dict[str, dict[Client, None]] = {}
        self._memberships: dict[Client, set[str]] = {}
        self._serving: set[trio.CancelScope] = set()
        self._closing = False
        self._bus: BroadcastBackend = LocalBroadcast() if broadcast is None else broadcast
        self._bus.attach(self)

    @property
    def broadcast(self) -> BroadcastBackend:
        """The backend :meth:`emit` publishes through (``broadcast=``; in-process by default)."""
        return self._bus

    @property
    def options(self) -> Options:
        """The options every connection of this server uses."""
        return self._options

    @property
    def static(self) -> dict[str, Path] | None:
        """The static directories :meth:`serve` answers plain HTTP from, by URL prefix."""
        return None if self._static is None else self._static.as_mapping()

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

    def group(self, name: str) -> Group:
        """The group ``name``: members added here, reached across servers (see :class:`Group`)."""
        if not isinstance(name, str) or not name:
            raise ValueError("a group name is a non-empty string")
        return Group(self, name)

    def _leave(self, client: Client, name: str) -> None:
        members = self._groups.get(name)
        if members is not None:
            members.pop(client, None)
            if not members:
                del self._groups[name]
        joined = self._memberships.get(client)
        if joined is not None:
            joined.discard(name)
            if not joined:
                del self._memberships[client]

    async def emit(self, name: str, *args: Any) -> BroadcastFailures:
        """Broadcast event ``name`` to every connected client on the root channel.

        The frame is encoded once. A client whose send queue is full, or that is closing, does
        not hold up the others: it misses the event and is returned among the failures as
        ``(client, exception)`` (``trio.WouldBlock`` or :class:`ConnectionClosed`). The
        ``broadcast=`` backend decides which servers' clients get it: this server's alone by
        default, every process sharing a Redis bus with ``trio_wswrapper.redis``.
        """
        proto.check_event_name(name, root=True)
        frame = proto.encode_event(name, args, codec=self._codec)
        return await self._bus.publish(frame)

    def _broadcast(self, frame: str, group: str | None = None) -> BroadcastFailures:
        """Put ``frame`` on the send queue of every client here, or every member of ``group``."""
        failures: BroadcastFailures = []
        clients = self._clients if group is None else self._groups.get(group)
        if not clients:
            return failures
        for client in list(clients):
            gen = client._gen
            try:
                if gen is None or gen.close_sent is not None:
                    raise ConnectionClosed(None, "connection is closing")
                gen.queue.put_nowait(frame)
            except (trio.WouldBlock, ConnectionClosed) as exc:
                failures.append((client, exc))
        return failures

    async def accept(
        self,
        ws: trio_websocket.WebSocketConnection | Transport,
        *,
        handshake: Handshake | None = None,
        auth: Any = None,
    ) -> None:
        """Serve one accepted WebSocket (or any :class:`Transport`) until it closes.

        Creates the :class:`Client` for it, runs the ``open`` listeners, reads until either
        side closes, then runs the ``close`` listeners. The caller owns ``ws``; it is closed
        when this returns. Errors of this connection never reach other connections.
        ``handshake`` and ``auth`` become the client's :attr:`Client.handshake` and
        :attr:`Client.auth` (``serve`` passes the opening request and what ``authorize``
        returned; callers that accept WebSockets themselves do their own checks).
        """
        if self._closing:
            raise ConnectionClosed(1001, "server is closing")
        if isinstance(ws, trio_websocket.WebSocketConnection):
            transport: Transport = TrioWebsocketTransport(ws, self._options.close_timeout)
        else:
            transport = ws
        client = Client(options=self._options, server=self)
        client.handshake = handshake
        client.auth = auth
        self._clients[client] = None
        try:
            await client._run(transport)
        except BaseExceptionGroup as group:
            raise collapse(group) from None
        finally:
            self._clients.pop(client, None)
            for name in list(self._memberships.get(client, ())):
                self._leave(client, name)

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
            raise collapse(group) from None

    async def _serve_listeners(
        self,
        host: str | None,
        listeners: list[Any],
        task_status: trio.TaskStatus[int],
        transport: TransportName,
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

    async def _handle_stream(self, stream: trio.abc.Stream, transport: TransportName) -> None:
        try:
            if transport == "wsproto":
                # Driven from the reader task: no background task, so no nursery to keep.
                await self._serve_stream(stream, transport, None)
            else:
                async with trio.open_nursery() as nursery:
                    await self._serve_stream(stream, transport, nursery)
                    nursery.cancel_scope.cancel()
        except ConnectionClosed:
            logger.debug("refused a connection: the server is closing")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("connection dropped before the WebSocket opened: %r", exc)
        except Exception as exc:
            error = collapse(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if isinstance(error, LocalProtocolError):
                # trio-websocket #184: its reader answers a ping that follows an oversize frame
                # after the 1009 close, and wsproto refuses. The connection is already closed;
                # a peer can provoke this at will, so it gets no traceback.
                logger.info("connection dropped after a protocol error: %s", error)
            else:
                logger.exception("connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_stream(
        self, stream: trio.abc.Stream, name: TransportName, nursery: trio.Nursery | None
    ) -> None:
        """Run the opening handshake on ``stream``, then serve the connection if it opened."""
        opened = None  # stays None when the handshake times out
        with trio.move_on_after(self._connect_timeout):
            opened = await self._open(stream, name, nursery)
        if opened is not None:
            await self.accept(opened[0], handshake=opened[1], auth=opened[2])

    async def _open(
        self, stream: trio.abc.Stream, name: TransportName, nursery: trio.Nursery | None
    ) -> tuple[Transport, Handshake, Any] | None:
        """The opening handshake, with the static files, Origin and ``authorize`` checks.

        Returns the open transport, the handshake and what ``authorize`` returned; None when
        the request was answered over HTTP or refused. A separate coroutine, so that nothing
        it needed stays referenced while the connection lives.
        """
        ws_stream: trio.abc.Stream | None = stream
        if self._static is not None:
            ws_stream = await route_stream(stream, self._static)
        if ws_stream is None:
            return None  # a plain HTTP request, answered
        admitted: list[tuple[Handshake, Any]] = []

        async def check(info: RequestInfo) -> Reject | None:
            seen = Handshake(
                path=info.path,
                headers=tuple((k.lower(), v) for k, v in info.headers),
                subprotocols=tuple(info.subprotocols),
                remote=_peer(stream),
            )
            verdict = await self._admit(seen)
            if isinstance(verdict, Reject):
                return verdict
            chosen = choose_subprotocol(seen.subprotocols, self._subprotocols)
            admitted.append((attrs.evolve(seen, subprotocol=chosen), verdict))
            return None

        try:
            _, opened = await accept_stream(
                name,
                nursery,
                ws_stream,
                max_message_size=self._options.limits.max_message_size,
                close_timeout=self._options.close_timeout,
                subprotocols=self._subprotocols,
                check=check,
            )
        except HandshakeFailed as exc:
            logger.debug("opening handshake failed: %s", exc)
            return None
        if not admitted:
            return None
        return opened, admitted[0][0], admitted[0][1]

    async def _admit(self, handshake: Handshake) -> Any:
        """Run the Origin check and the ``authorize`` hook: a :class:`Reject`, or the auth value."""
        if self._origins is not None and not origin_allowed(handshake.origin, self._origins):
            logger.warning("refused a handshake from origin %r", handshake.origin)
            return Reject(403, "Origin not allowed")
        if self._authorize is None:
            return None
        try:
            verdict = self._authorize(handshake)
            if hasattr(verdict, "__await__"):
                verdict = await verdict
        except Reject as reject:
            logger.info("authorize refused %s: %d", handshake.path, reject.status)
            return reject
        except Exception:
            logger.exception("authorize hook failed; refusing the connection")
            return Reject(500, "Internal Server Error")
        return verdict

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


def _peer(stream: trio.abc.Stream) -> tuple[str, int] | None:
    """The remote (host, port) of a socket stream, TLS or not."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    if sock is None:
        return None
    try:
        host, port, *_ = sock.getpeername()
    except (OSError, ValueError):
        return None
    return str(host), int(port)


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_cancellation(inner) for inner in exc.exceptions)
    return isinstance(exc, trio.Cancelled)
