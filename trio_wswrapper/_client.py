"""Client: one ws-wrapper connection, its reader and writer tasks, requests and handlers.

The same class serves both roles: ``open_client`` dials and owns it; ``Server.accept`` makes one
per accepted WebSocket. A client object outlives its connections: handlers, named channels,
``data`` and the request-id counter stay with it, while everything tied to one WebSocket
(pending and active requests, anonymous channels, queued frames) lives in a ``_Generation``
that is torn down when that WebSocket ends (PROTOCOL.md §12.3).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from . import _cancel, _logging
from . import _protocol as proto
from ._config import Options
from ._errors import (
    ChannelClosed,
    ConnectionClosed,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    WSWrapperError,
)
from ._handlers import Handler, HandlerTable, Registry, new_lifecycle
from ._middleware import MessageInfo, Middleware, UsesMiddleware, entered, run_middleware
from ._protocol import Abort, Answer, Cancel, ErrorPayload, Incoming
from ._sendqueue import SendQueue
from ._transport import Transport, TransportClosed
from ._typed import ArgumentError

if TYPE_CHECKING:
    from ._channels import AnonymousChannel, Channel
    from ._handshake import Handshake
    from ._server import Server

__all__ = ["Client", "cancel_reason", "current_client"]

logger = _logging.logger  # rate-limited at INFO and above (see _logging.py)

_current_client: contextvars.ContextVar[Client] = contextvars.ContextVar("trio_wswrapper.client")
_current_request: contextvars.ContextVar[_Active | None] = contextvars.ContextVar(
    "trio_wswrapper.request", default=None
)


def current_client() -> Client:
    """The :class:`Client` whose message the running handler serves.

    Valid inside handlers and lifecycle listeners (and tasks they start); raises
    :class:`RuntimeError` elsewhere.
    """
    try:
        return _current_client.get()
    except LookupError:
        raise RuntimeError("current_client() is only available inside a handler") from None


def cancel_reason() -> ErrorPayload | None:
    """Inside a request handler: the peer's reason if it cancelled this request, else None.

    The reason is decoded as PROTOCOL.md §6.4 says (``"x":null`` gives a payload whose value is
    None). Read it after catching :class:`trio.Cancelled`, or in a ``finally`` block. Raises
    :class:`RuntimeError` outside request handlers (and the tasks they start).
    """
    active = _current_request.get()
    if active is None:
        raise RuntimeError("cancel_reason() is only available inside a request handler")
    return active.reason


class _Pending:
    """An outbound request waiting for its answer."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def resolve(self, value: Any) -> None:
        self.value = value
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class _Active:
    """An inbound request whose handler runs; ``reason`` is set when the peer cancels it."""

    __slots__ = ("channel", "gen", "id", "reason", "scope")

    def __init__(self, id: int, gen: _Generation) -> None:
        self.id = id
        #: The connection the request came on; its answer and channel belong there only.
        self.gen = gen
        self.scope = trio.CancelScope()
        self.reason: ErrorPayload | None = None
        self.channel: AnonymousChannel | None = None


@attrs.define(eq=False)
class _Generation:
    """Everything that belongs to one WebSocket connection of a client."""

    transport: Transport
    queue: SendQueue
    compat: proto.PeerCompat
    nursery: trio.Nursery = attrs.field(init=False)
    pending: dict[int, _Pending] = attrs.field(factory=dict)
    active: dict[int, _Active] = attrs.field(factory=dict)
    channels: dict[int, AnonymousChannel] = attrs.field(factory=dict)
    running: int = 0
    #: How the transport ended, as the reader or writer saw it.
    ended: TransportClosed | None = None
    #: Close code and reason we chose to send, and whether the application asked for it.
    close_sent: tuple[int, str] | None = None
    user_closed: bool = False
    #: Close without waiting for the peer's reply (the local side is being cancelled).
    prompt: bool = False
    #: The close code and reason the generation ended with, once it is stopping.
    outcome: ConnectionClosed | None = None
    #: The task running the teardown (and so the close and error listeners).
    teardown_task: trio.lowlevel.Task | None = None
    #: The shielded scope of the write in progress, if any (see ``Client._writer``).
    write_scope: trio.CancelScope | None = None
    error: BaseException | None = None
    finished: trio.Event = attrs.field(factory=trio.Event)

    async def send(self, frame: str) -> None:
        await self.queue.put(frame)


class Client(Registry, UsesMiddleware):
    """One side of a ws-wrapper connection: emit events, make requests, answer them.

    Dialling clients come from :func:`open_client`; server-side clients are created by
    :meth:`Server.accept` and handed to handlers through :func:`current_client`. Root-channel
    handlers registered here take precedence over the server's (PROTOCOL.md §7.1).
    """

    _root = True

    def __init__(self, *, options: Options | None = None, server: Server | None = None) -> None:
        self._options = options or Options()
        self._server = server
        self._codec = proto.custom_codec(self._options.codec)
        self._table = HandlerTable()
        self._lifecycle = new_lifecycle()
        self._named: dict[str, Channel] = {}
        self._next_id = 1
        self._gen: _Generation | None = None
        self._peer_compat: proto.PeerCompat = self._options.peer_compat
        self._default_close = (1001, "server is closing") if server else (1000, "")
        # Reconnection (see _dial.py): emits made while a reconnecting client is down wait in
        # ``_offline`` (bounded; None when the client does not reconnect), and ``_final`` is
        # set once no further connection will come.
        self._offline: deque[str] | None = None
        self._offline_limit = 0
        self._final: ConnectionClosed | None = None
        self._state_changed = trio.Event()
        self._connections = 0
        self._stop_reconnecting: Callable[[], None] | None = None
        #: Application data attached to this client (for example the authenticated user).
        self.data: dict[str, Any] = {}
        #: On a server-side client: what the server's ``authorize`` hook returned (else None).
        self.auth: Any = None
        #: On a server-side client accepted by ``Server.serve``: the opening HTTP request.
        self.handshake: Handshake | None = None

    # -- public API --------------------------------------------------------------------------

    @property
    def server(self) -> Server | None:
        """The server that accepted this client, or None for a dialling client."""
        return self._server

    @property
    def connected(self) -> bool:
        """True while a connection is open and not closing."""
        gen = self._gen
        return gen is not None and gen.queue.closed is None and gen.close_sent is None

    @property
    def peer_compat(self) -> proto.PeerCompat:
        """Compatibility mode for the peer (§14.2); set it in an ``open`` listener at the latest."""
        return self._peer_compat

    @peer_compat.setter
    def peer_compat(self, value: proto.PeerCompat) -> None:
        Options(peer_compat=value)  # validates
        self._peer_compat = value
        if self._gen is not None:
            self._gen.compat = value

    def of(self, name: str) -> Channel:
        """The named channel ``name`` on this connection, created on first use (§11)."""
        from ._channels import Channel

        proto.check_channel_name(name)
        channel = self._named.get(name)
        if channel is None:
            channel = self._named[name] = Channel(self, name)
        return channel

    async def emit(self, name: str, *args: Any) -> None:
        """Send event ``name`` with ``args`` on the root channel.

        Returns once the frame is queued for writing; waits while the send queue is full.
        Raises :class:`ConnectionClosed` without a connection, ``ValueError`` for reserved or
        empty names and ``TypeError``/``ValueError`` for arguments JSON cannot encode.
        """
        proto.check_event_name(name, root=True)
        await self._emit(proto.encode_event(name, args, codec=self._codec))

    async def request(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """Send request ``name`` on the root channel and return the peer's answer.

        A rejection raises :class:`RemoteError`; ``timeout`` (else the connection's default)
        raises :class:`RequestTimeout`. Cancelling the calling task, or the timeout, sends the
        peer a cancellation for this request (PROTOCOL.md §8.1).
        """
        proto.check_event_name(name, root=True)
        return await self._request(name, args, timeout=timeout)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason`` and wait until it is torn down.

        Frames already queued are written first (within the close timeout). The ``close``
        listeners see ``user_closed=True``. Closing a closed client does nothing.
        """
        if self._stop_reconnecting is not None:
            self._stop_reconnecting()  # also ends offline queueing
        await self._close(code, reason, user=True)
        if self._final is None and (self._gen is None or self._gen.finished.is_set()):
            self._finish(ConnectionClosed(code, reason or "closed by the application"))

    async def wait_connected(self) -> None:
        """Wait until a connection is open (at once if one is).

        Raises :class:`ConnectionClosed` once no connection will come: the client was closed,
        its connection ended without reconnection, or reconnection gave up.
        """
        while True:
            if self.connected:
                await trio.lowlevel.checkpoint()
                return
            if self._final is not None:
                await trio.lowlevel.checkpoint()
                raise self._final
            await self._state_changed.wait()

    def _notify(self) -> None:
        self._state_changed.set()
        self._state_changed = trio.Event()

    def _finish(self, final: ConnectionClosed) -> None:
        """No connection will follow: wake ``wait_connected`` callers with ``final``."""
        self._final = final
        self._offline = None
        self._notify()

    def statistics(self) -> ClientStatistics:
        """A snapshot of this client's connection state."""
        gen = self._gen
        offline = len(self._offline) if self._offline is not None else 0
        if gen is None or gen.finished.is_set():
            return ClientStatistics(False, 0, 0, 0, 0, 0, offline, self._connections)
        return ClientStatistics(
            connected=self.connected,
            pending_requests=len(gen.pending),
            active_requests=len(gen.active),
            running_handlers=gen.running,
            open_channels=len(gen.channels),
            queued_frames=len(gen.queue),
            offline_frames=offline,
            connections=self._connections,
        )

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<trio_wswrapper.Client {state} at {id(self):#x}>"

    # -- sending -----------------------------------------------------------------------------

    def _require_gen(self) -> _Generation:
        gen = self._gen
        if gen is None:
            raise ConnectionClosed(None, "not connected")
        if gen.queue.closed is not None:
            raise gen.queue.closed
        if gen.close_sent is not None:
            raise ConnectionClosed(gen.close_sent[0], "connection is closing")
        return gen

    async def _emit(self, frame: str) -> None:
        try:
            gen = self._require_gen()
        except ConnectionClosed:
            offline = self._offline
            if offline is None:
                raise
            # A reconnecting client between connections: hold the frame for the next one.
            if len(offline) >= self._offline_limit:
                if not self._offline_limit:
                    raise ConnectionClosed(None, "not connected (reconnecting)") from None
                raise ConnectionClosed(
                    None, f"not connected, and the offline send queue is full ({self._offline_limit} frames)"
                ) from None
            offline.append(frame)
            await trio.lowlevel.checkpoint()
            return
        await gen.send(frame)

    async def _request(
        self,
        name: str,
        args: tuple[Any, ...],
        *,
        channel: str | None = None,
        anon: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        gen = self._require_gen()
        # Request ids (§4): allocated only once the frame can be queued without waiting, so a
        # request cancelled before that allocates nothing; the pending entry is registered
        # before the frame is queued, and ids that name a live anonymous channel are skipped.
        # With room in the queue there is no wait: the wait for the answer is the checkpoint.
        if gen.queue.has_room():
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await gen.queue.wait_writable()
        rid = self._next_id
        while rid in gen.channels:
            rid += 1
        try:
            if rid > proto.MAX_ID:
                raise ProtocolError("request ids exhausted on this client")
            frame = proto.encode_event(name, args, channel=channel, anon=anon, id=rid, codec=self._codec)
        except BaseException:
            gen.queue.pass_turn()
            raise
        self._next_id = rid + 1
        pending = _Pending()
        gen.pending[rid] = pending
        gen.queue.put_nowait(frame, force=True)
        if timeout is None:
            timeout = self._options.request_timeout
        try:
            if timeout is None:
                await pending.done.wait()
            else:
                with trio.move_on_after(timeout):
                    await pending.done.wait()
                if not pending.done.is_set():
                    raise RequestTimeout
        except BaseException as exc:
            reason = None if isinstance(exc, RequestTimeout) else _cancel.cancel_payload()
            self._cancel_outbound(gen, rid, reason)
            if pending.done.is_set() and pending.error is None:
                # Answered with a channel, but cancelled before the caller could take it: the
                # channel inherits the request's cancellation (§9.3), so nothing is orphaned.
                abort = getattr(pending.value, "_abort_nowait", None)
                if abort is not None:
                    abort(reason)
            raise
        if pending.error is not None:
            raise pending.error
        _cancel.attach(pending.value)
        return pending.value

    def _cancel_outbound(self, gen: _Generation, rid: int, reason: ErrorPayload | None) -> None:
        """Forget pending request ``rid`` and tell the peer, unless it was already answered."""
        if gen.pending.pop(rid, None) is None or gen.queue.closed is not None:
            return
        if gen.compat != "v3":
            gen.queue.put_nowait(
                proto.encode_cancel(rid, reason, error_flag=self._options.error_flag, codec=self._codec),
                force=True,
            )

    # -- connection lifetime -----------------------------------------------------------------

    async def _run(
        self,
        transport: Transport,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve one connection over ``transport`` until it ends, then tear it down.

        ``task_status.started()`` is called once the ``open`` listeners have run, so the
        caller may use the client. Returns when the connection is closed by either side.
        """
        if self._gen is not None and not self._gen.finished.is_set():
            raise RuntimeError("this client already has an open connection")
        options = self._options
        direct = transport if hasattr(transport, "send_nowait") else None
        queue = SendQueue(options.limits.send_queue_size, direct)  # type: ignore[arg-type]
        gen = _Generation(transport, queue, self._peer_compat)
        self._gen = gen
        self._final = None
        self._connections += 1
        offline = self._offline
        while offline:
            # Emits held while disconnected go first, in order, ahead of anything new.
            gen.queue.put_nowait(offline.popleft(), force=True)
        started = False
        try:
            async with trio.open_nursery() as nursery:
                gen.nursery = nursery
                if direct is None or queue.waiting:
                    nursery.start_soon(self._writer, gen)
                else:
                    queue.start_writer = partial(self._start_writer, gen)
                if options.heartbeat_interval is not None:
                    nursery.start_soon(self._heartbeat, gen, options.heartbeat_interval)
                opened = await self._fire_open(gen)
                started = True
                self._notify()
                task_status.started()
                if opened:
                    await self._reader(gen)
                self._stop(gen)
        finally:
            if gen.outcome is None:
                # Cancelled from outside: the same cancellation has stopped whatever would read
                # the peer's close reply (trio-websocket's reader), so do not wait for it.
                gen.prompt = True
            with trio.CancelScope(shield=True):
                await self._teardown(gen)
            if self._offline is None and gen.outcome is not None:
                self._finish(gen.outcome)
            else:
                self._notify()
            if not started:
                # Stopped while the open listeners ran: the caller gets a closed client.
                task_status.started()

    async def _fire_open(self, gen: _Generation) -> bool:
        token = _current_client.set(self)
        try:
            for fn in self._lifecycle_listeners("open"):
                result = fn(self)
                if hasattr(result, "__await__"):
                    await result
        except Exception as exc:
            logger.exception("open listener failed; closing the connection")
            gen.error = exc
            gen.close_sent = (1011, "internal error")
            return False
        finally:
            _current_client.reset(token)
        gen.compat = self._peer_compat
        return True

    def _lifecycle_listeners(self, event: str) -> list[Callable[..., Any]]:
        """Listeners for ``event``: the server's, then this client's; ``once`` ones removed."""
        owners = [self._server._lifecycle, self._lifecycle] if self._server else [self._lifecycle]
        found: list[Callable[..., Any]] = []
        for lifecycle in owners:
            listeners = lifecycle[event]
            found.extend(fn for fn, _ in listeners)
            if any(once for _, once in listeners):
                listeners[:] = [(fn, once) for fn, once in listeners if not once]
        return found

    async def _close(self, code: int, reason: str, *, user: bool, prompt: bool = False) -> None:
        """Close the current generation; ``prompt`` skips flushing and the closing handshake."""
        gen = self._gen
        if gen is None or gen.teardown_task is trio.lowlevel.current_task():
            # Not connected, or called by a close/error listener of this very teardown.
            await trio.lowlevel.checkpoint()
            return
        if gen.close_sent is None and gen.ended is None and gen.outcome is None:
            gen.close_sent = (code, reason)
            gen.user_closed = user
            gen.prompt = prompt
            if not prompt:
                with trio.move_on_after(self._options.close_timeout):
                    await gen.queue.drain()
            self._stop(gen)
        await gen.finished.wait()

    def _stop(self, gen: _Generation) -> None:
        """Start ending ``gen`` in the order of §12.3: decide the close code and reason, discard
        unsent frames, fail pending requests, cancel the handlers, then close the channels.

        Idempotent; called by whichever of the reader, writer, heartbeat, ``aclose`` or the
        final teardown notices the end first.
        """
        if gen.outcome is not None:
            return
        if gen.close_sent is not None:
            code, reason = gen.close_sent
        elif gen.ended is not None:
            code, reason = gen.ended.code, gen.ended.reason
            if code in (1009, 1006):
                gen.error = gen.error or ConnectionClosed(code, reason)
        else:
            gen.close_sent = self._default_close
            code, reason = self._default_close
        closed = gen.outcome = ConnectionClosed(code, reason)
        gen.queue.close(closed)
        for pending in gen.pending.values():
            pending.fail(closed)
        gen.pending.clear()
        gen.active.clear()
        if gen.write_scope is not None:
            gen.write_scope.deadline = trio.current_time() + self._options.close_timeout
        gen.nursery.cancel_scope.cancel()
        for channel in list(gen.channels.values()):
            channel._connection_lost(closed)
        gen.channels.clear()

    def _start_writer(self, gen: _Generation) -> None:
        """Start the writer task the first time a frame waits for it (see ``SendQueue``)."""
        # RuntimeError: the connection's nursery has closed; it is ending, unsent frames go.
        with contextlib.suppress(RuntimeError):
            gen.nursery.start_soon(self._writer, gen)

    async def _writer(self, gen: _Generation) -> None:
        queue, transport = gen.queue, gen.transport
        try:
            while True:
                frame = await queue.get()
                # A frame cut in half would corrupt the stream, so stopping the generation lets
                # the current write finish, within the close timeout (_stop sets the deadline);
                # a transport whose write is cut anyway can only drop the connection. Frames
                # already waiting are written under the same shield.
                with trio.CancelScope(shield=True) as gen.write_scope:
                    while True:
                        if frame is None:
                            await transport.flush()  # type: ignore[attr-defined]
                        else:
                            await transport.send(frame)
                        if gen.outcome is not None:
                            return
                        try:
                            frame = queue.get_nowait()
                        except trio.WouldBlock:
                            break
                gen.write_scope = None
        except ConnectionClosed:
            return  # the generation is stopping; unsent frames are discarded (§12.3)
        except TransportClosed as closed:
            if gen.ended is None:
                gen.ended = closed
            self._stop(gen)

    async def _heartbeat(self, gen: _Generation, interval: float) -> None:
        # A ping unanswered until the next one is due means the peer is gone (§13).
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval):
                try:
                    await gen.transport.ping()
                except TransportClosed:
                    return
                continue
            logger.info("%r: no pong within %ss; closing", self, interval)
            gen.error = ConnectionClosed(1011, "keepalive ping timeout")
            if gen.close_sent is None:
                gen.close_sent = (1011, "keepalive ping timeout")
            self._stop(gen)
            return

    async def _teardown(self, gen: _Generation) -> None:
        """Finish ending a generation: close the transport, then run the ``close`` listeners."""
        gen.teardown_task = trio.lowlevel.current_task()
        self._stop(gen)
        assert gen.outcome is not None
        code, reason = gen.outcome.code or 1006, gen.outcome.reason
        if gen.close_sent is not None and gen.ended is None:
            await gen.transport.aclose(code, reason, wait=not gen.prompt)
        token = _current_client.set(self)
        try:
            if gen.error is not None:
                await self._fire("error", gen.error)
            await self._fire("close", code, reason, gen.user_closed)
        finally:
            _current_client.reset(token)
            gen.finished.set()

    async def _fire(self, event: str, *args: Any) -> None:
        for fn in self._lifecycle_listeners(event):
            try:
                result = fn(self, *args)
                if hasattr(result, "__await__"):
                    with trio.move_on_after(self._options.close_timeout):
                        await result
            except Exception:
                logger.exception("%s listener failed", event)

    # -- receiving ---------------------------------------------------------------------------

    async def _reader(self, gen: _Generation) -> None:
        receive = gen.transport.receive
        decode = proto.decode
        codec = self._codec
        while True:
            try:
                frame = await receive()
            except TransportClosed as closed:
                if gen.ended is None:
                    gen.ended = closed
                return
            if self._lifecycle["message"] or (self._server and self._server._lifecycle["message"]):
                await self._fire_message(frame)
            msg = decode(frame) if codec is None else decode(frame, codec)
            kind = type(msg)
            try:
                if kind is Incoming:
                    await self._on_incoming(gen, msg)  # type: ignore[arg-type]
                elif kind is Answer:
                    await self._on_answer(gen, msg)  # type: ignore[arg-type]
                elif kind is Cancel:
                    self._on_cancel(gen, msg)  # type: ignore[arg-type]
                elif kind is Abort:
                    self._on_abort(gen, msg)  # type: ignore[arg-type]
                elif logger.isEnabledFor(logging.DEBUG):
                    logger.debug("%r: ignored frame (%s)", self, msg.reason)  # type: ignore[union-attr]
            except ConnectionClosed:
                return  # stopped while replying; the teardown takes over

    async def _fire_message(self, frame: str | bytes) -> None:
        # Awaited by the reader, in frame order: an async listener slows reading (the peer sees
        # TCP backpressure) instead of piling up one task per frame.
        token = _current_client.set(self)
        try:
            for fn in self._lifecycle_listeners("message"):
                try:
                    result = fn(self, frame)
                    if hasattr(result, "__await__"):
                        await result
                except Exception:
                    logger.exception("message listener failed")
        finally:
            _current_client.reset(token)

    async def _reject(self, gen: _Generation, rid: int, text: str) -> None:
        await gen.send(
            proto.encode_rejection(
                rid, proto.message_payload(text), error_flag=self._options.error_flag, codec=self._codec
            )
        )

    def _lookup(self, msg: Incoming) -> tuple[HandlerTable | None, Handler | None, str | None]:
        """Find the handler for a root or named-channel message (§7.1), without consuming it.

        Returns (table, handler, error text); the error text is set when a request must be
        rejected because the named channel does not exist. ``table`` is set only for a
        ``once`` handler, which the caller removes from it when the handler is started.
        """
        server = self._server
        c = msg.channel
        if c is None:
            own: HandlerTable | None = self._table
            shared = server._table if server is not None else None
        else:
            own_channel = self._named.get(c) if type(c) is str else None
            shared_channel = server._named.get(c) if server is not None and type(c) is str else None
            if own_channel is None and shared_channel is None:
                return None, None, proto.unknown_channel_text(c)
            own = own_channel._table if own_channel is not None else None
            shared = shared_channel._table if shared_channel is not None else None
        name = msg.name
        if type(name) is str:
            # connection once > connection on > server once > server on (§7.1)
            for table in (own, shared):
                if table is not None:
                    handler = table.once.get(name)
                    if handler is not None:
                        return table, handler, None
                    handler = table.on.get(name)
                    if handler is not None:
                        return None, handler, None
        return None, None, None

    async def _on_incoming(self, gen: _Generation, msg: Incoming) -> None:
        if msg.is_reserved:
            logger.debug("%r: ignored reserved name %r on the root channel", self, msg.name)
            return
        rid = msg.id
        if rid is not None and len(gen.queue) >= self._options.limits.send_queue_size:
            # Answers skip the queue's limit (their handlers must never block on it), so a peer
            # that sends requests and never reads would pile them up: stop reading until the
            # writer catches up; the peer sees TCP backpressure (§13).
            await gen.queue.wait_writable()
            gen.queue.pass_turn()
        if rid is not None and rid in gen.active:
            logger.debug("%r: ignored request reusing active id %d", self, rid)
            return
        anon = msg.anon
        once_table: HandlerTable | None = None
        handler: Handler | None = None
        if anon is not None:
            channel = gen.channels.get(anon)
            if channel is None:
                text = proto.unknown_anon_text(anon)
                if gen.compat == "v4":
                    await gen.send(
                        proto.encode_abort(
                            anon,
                            proto.message_payload(text),
                            error_flag=self._options.error_flag,
                            codec=self._codec,
                        )
                    )
                if rid is not None:
                    await self._reject(gen, rid, text)
                return
            if type(msg.name) is str:
                table = channel._table
                handler = table.once.get(msg.name)
                if handler is not None:
                    once_table = table
                else:
                    handler = table.on.get(msg.name)
            if handler is None:
                if rid is None:
                    channel._deliver(msg.name, msg.args)
                else:
                    await self._reject(gen, rid, proto.no_listener_text(msg.name, anon=anon))
                return
        else:
            once_table, handler, missing = self._lookup(msg)
            if handler is None:
                if rid is not None:
                    await self._reject(gen, rid, missing or proto.no_listener_text(msg.name, msg.channel))
                return
        if gen.running >= self._options.limits.max_concurrent_handlers:
            if rid is not None:
                await self._reject(gen, rid, proto.TOO_MANY_REQUESTS)
            else:
                logger.warning("%r: dropped event %r: too many concurrent handlers", self, msg.name)
            return
        if once_table is not None:
            del once_table.once[msg.name]
        active = None
        if rid is not None:
            active = gen.active[rid] = _Active(rid, gen)
        plain = handler.kind == "sync" and self._options.handler_context is None
        if plain and not self._middleware_chain(msg):
            # In a copy of the reader's context, as a handler task would run: what the
            # handler sets there (its own ContextVars) must not reach later handlers.
            contextvars.copy_context().run(self._invoke_inline, gen, handler, msg, active)
            return
        gen.running += 1
        gen.nursery.start_soon(self._invoke, gen, handler, msg, active)

    def _invoke_inline(
        self, gen: _Generation, handler: Handler, msg: Incoming, active: _Active | None
    ) -> None:
        """Call a plain function handler from the reader task: no task to start, no switch.

        Runs in a copy of the reader's context (the caller's ``Context.run``), as a handler
        task would. Such a handler cannot wait, so nothing could cancel it part-way anyway. If
        it returns an awaitable after all, a handler task awaits it as for an ``async def``
        handler. Whatever fails, the handler's or the answer's encoding, is answered or logged
        as in a handler task: it never reaches the reader.
        """
        _current_client.set(self)
        _current_request.set(active)
        frame: str | None = None
        try:
            args = msg.args if handler.bind is None else handler.bind(msg.args)
            result = handler.fn(*args)
            awaitable = hasattr(result, "__await__")
            if not awaitable and active is not None:
                frame = self._answer_frame(active, result)
        except Exception as exc:
            if active is None:
                if isinstance(exc, ArgumentError):
                    logger.warning("%r: dropped event %r: %s", self, msg.name, exc)
                else:
                    logger.exception("handler for event %r failed", msg.name)
                return
            logger.debug("handler for request %r failed: %r", msg.name, exc)
            frame = self._failure_frame(active, exc)
        else:
            if awaitable:
                # Awaited by a handler task, exactly as an ``async def`` handler's result.
                gen.running += 1
                returned = Handler(lambda *_: result, "async")
                gen.nursery.start_soon(self._invoke, gen, returned, msg, active)
                return
            if active is None:
                return
        self._commit(gen, active, frame)

    @staticmethod
    def _commit(gen: _Generation, active: _Active, frame: str | None) -> None:
        """Send a request's answer, unless it was cancelled or answered (§8.2); one step."""
        if frame is not None and gen.active.get(active.id) is active:
            del gen.active[active.id]
            gen.queue.put_nowait(frame, force=True)

    async def _invoke(
        self, gen: _Generation, handler: Handler, msg: Incoming, active: _Active | None
    ) -> None:
        _current_client.set(self)
        try:
            if active is None:
                await self._invoke_event(handler, msg)
                return
            _current_request.set(active)
            self._commit(gen, active, await self._invoke_request(gen, handler, msg, active))
        except WSWrapperError as exc:
            logger.debug("%r: handler for %r ended with %r", self, msg.name, exc)
        except Exception:
            logger.exception("%r: internal error serving %r", self, msg.name)
        finally:
            gen.running -= 1

    async def _invoke_event(self, handler: Handler, msg: Incoming) -> None:
        if handler.kind in ("asyncgen", "stream"):
            logger.debug("%r: streaming handler %r invoked as an event; not iterated", self, msg.name)
            return
        try:
            context = self._options.handler_context
            if context is None:
                await self._call_event(handler, msg, None)
            else:
                info = self._message_info(msg)
                async with entered(context(info)):
                    await self._call_event(handler, msg, info)
        except Exception:
            logger.exception("handler for event %r failed", msg.name)

    async def _call_event(self, handler: Handler, msg: Incoming, info: MessageInfo | None) -> None:
        """Run the middleware, convert the arguments and call an event handler."""
        chain = self._middleware_chain(msg)
        if chain:
            try:
                await run_middleware(chain, info or self._message_info(msg))
            except Exception as exc:
                logger.info("%r: event %r rejected by middleware: %r", self, msg.name, exc)
                return
        args = msg.args
        if handler.bind is not None:
            try:
                args = handler.bind(args)  # type: ignore[assignment]
            except ArgumentError as exc:
                logger.warning("%r: dropped event %r: %s", self, msg.name, exc)
                return
        result = handler.fn(*args)
        if handler.kind == "async" or hasattr(result, "__await__"):
            await result

    async def _invoke_request(
        self, gen: _Generation, handler: Handler, msg: Incoming, active: _Active
    ) -> str | None:
        """Run a request handler under its cancel scope; return the answer frame, if any."""
        with active.scope:
            try:
                context = self._options.handler_context
                if context is None:
                    return await self._call_request(gen, handler, msg, active, None)
                info = self._message_info(msg)
                async with entered(context(info)):
                    return await self._call_request(gen, handler, msg, active, info)
            except Exception as exc:
                logger.debug("handler for request %r failed: %r", msg.name, exc)
                return self._failure_frame(active, exc)
        return None

    def _failure_frame(self, active: _Active, exc: Exception) -> str | None:
        """The rejection answering a request whose handler raised ``exc``, if any is due."""
        channel = active.channel
        if channel is not None and channel._announced:
            # The answer was a channel already (a stream): the failure aborts it.
            channel._abort_nowait(self._failure_payload(exc))
            return None
        return proto.encode_rejection(
            active.id, self._failure_payload(exc), error_flag=self._options.error_flag, codec=self._codec
        )

    async def _call_request(
        self, gen: _Generation, handler: Handler, msg: Incoming, active: _Active, info: MessageInfo | None
    ) -> str | None:
        """Run the middleware, convert the arguments and call a request handler.

        Exceptions of the middleware, the conversion and the handler propagate: the caller
        turns them into the rejection.
        """
        chain = self._middleware_chain(msg)
        if chain:
            await run_middleware(chain, info or self._message_info(msg))
        args = msg.args if handler.bind is None else handler.bind(msg.args)
        if handler.kind in ("asyncgen", "stream"):
            from ._channels import serve_stream

            return await serve_stream(self, gen, handler, msg, active, args=args)
        result = handler.fn(*args)
        if handler.kind == "async" or hasattr(result, "__await__"):
            result = await result
        return self._answer_frame(active, result)

    def _answer_frame(self, active: _Active, result: Any) -> str | None:
        """The frame answering a request whose handler returned ``result``: a resolution, or
        None when ``result`` is the request's channel (announced instead, §9.2)."""
        rid = active.id
        flag = self._options.error_flag
        if active.channel is not None and result is active.channel:
            try:
                active.channel._announce(active)
            except ProtocolError as exc:
                return proto.encode_rejection(
                    rid, proto.message_payload(str(exc)), error_flag=flag, codec=self._codec
                )
            except ChannelClosed:
                pass
            return None
        try:
            return proto.encode_resolution(rid, result, codec=self._codec)
        except (TypeError, ValueError, RecursionError) as exc:
            return proto.encode_rejection(
                rid, proto.message_payload(str(exc)), error_flag=flag, codec=self._codec
            )

    def _middleware_chain(self, msg: Incoming) -> tuple[Middleware, ...]:
        """The middleware for ``msg``: the server's, its named channel's, ours, our channel's."""
        server = self._server
        chain = self._middleware
        c = msg.channel
        if c is not None and type(c) is str:
            own = self._named.get(c)
            if own is not None and own._middleware:
                chain = chain + own._middleware
            if server is not None:
                shared = server._named.get(c)
                if shared is not None and shared._middleware:
                    chain = shared._middleware + chain
        if server is not None and server._middleware:
            chain = server._middleware + chain
        return chain

    def _message_info(self, msg: Incoming) -> MessageInfo:
        channel = msg.channel if type(msg.channel) is str else None
        return MessageInfo(self, msg.name, msg.args, msg.id, channel, msg.anon)

    def _failure_payload(self, exc: Exception) -> ErrorPayload:
        """The rejection for a handler's exception (§6.2): a peer's error is forwarded as is."""
        if isinstance(exc, RemoteError):
            return exc.payload
        if isinstance(exc, trio.TooSlowError) and not str(exc):
            # A deadline from handler_context (or the handler's own fail_after) expired.
            exc = TimeoutError(proto.HANDLER_TIMED_OUT)
        return proto.error_from_exception(exc, self._options.error_to_json)

    async def _on_answer(self, gen: _Generation, msg: Answer) -> None:
        pending = gen.pending.pop(msg.id, None)
        if pending is None:
            if msg.kind == "channel":
                await self._stale_creation(gen, msg.id)
            return
        if msg.kind == "reject":
            assert msg.error is not None
            pending.fail(RemoteError._from_payload(msg.error))
        elif msg.kind == "channel":
            from ._channels import AnonymousChannel

            if msg.id in gen.channels:
                pending.fail(ProtocolError(proto.anon_exists_text(msg.id)))
                return
            channel = AnonymousChannel(self, gen, msg.id)
            gen.channels[msg.id] = channel
            pending.resolve(channel)
        else:
            pending.resolve(msg.value)

    async def _stale_creation(self, gen: _Generation, rid: int) -> None:
        # A channel announced for a request we no longer wait for (§9.7): tell the peer to free it.
        if rid < self._next_id and rid not in gen.channels and gen.compat == "v4":
            await gen.send(
                proto.encode_abort(rid, None, error_flag=self._options.error_flag, codec=self._codec)
            )

    def _on_cancel(self, gen: _Generation, msg: Cancel) -> None:
        if msg.id is None:
            return
        active = gen.active.pop(msg.id, None)
        if active is None:
            logger.debug("%r: ignored cancellation of inactive request %d", self, msg.id)
            return
        active.reason = msg.reason
        active.scope.cancel()

    def _on_abort(self, gen: _Generation, msg: Abort) -> None:
        channel = gen.channels.get(msg.anon)
        if channel is None:
            logger.debug("%r: ignored abort of unknown channel %d", self, msg.anon)
            return
        channel._peer_aborted(msg.reason)


@attrs.frozen
class ClientStatistics:
    """What :meth:`Client.statistics` reports."""

    connected: bool
    pending_requests: int
    active_requests: int
    running_handlers: int
    open_channels: int
    queued_frames: int
    #: Emits held while a reconnecting client is between connections.
    offline_frames: int = 0
    #: Connections this client object has opened so far.
    connections: int = 0
