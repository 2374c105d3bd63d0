"""Named channels and anonymous (request-scoped) channels, with the streaming protocol.

Anonymous channel lifecycle (PROTOCOL.md §9): the handler side *announces* a channel as the
answer to request N (``{"i":N,"h":1}``); from then on both sides may emit, request and abort on
channel N. Closing is local and silent; aborting sends ``{"h":N,"x":…}``. Inbound events that no
handler takes are kept, in order, in a bounded buffer that ``async for`` and :meth:`iterate` read.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from . import _protocol as proto
from ._client import _Active, _current_client, _current_request, _Generation
from ._errors import ChannelClosed, ConnectionClosed, ProtocolError
from ._handlers import Handler, HandlerTable, Registry
from ._middleware import UsesMiddleware
from ._protocol import ErrorPayload, ErrorToJSON

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["AnonymousChannel", "Channel", "channel", "open_channel"]

logger = logging.getLogger("trio_wswrapper")


class Channel(Registry, UsesMiddleware):
    """A named channel of one connection (``client.of(name)``), PROTOCOL.md §11.

    Handlers registered here take precedence over the server's handlers for the same channel.
    ``close()`` is local: handlers are dropped and later use raises.
    """

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self._table = HandlerTable()
        self.name = name
        self._closed = False

    async def emit(self, name: str, *args: Any) -> None:
        """Send event ``name`` on this channel (see :meth:`Client.emit`)."""
        self._check_open()
        proto.check_event_name(name, root=False)
        await self._client._emit(proto.encode_event(name, args, channel=self.name, codec=self._client._codec))

    async def request(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """Send request ``name`` on this channel (see :meth:`Client.request`)."""
        self._check_open()
        proto.check_event_name(name, root=False)
        return await self._client._request(name, args, channel=self.name, timeout=timeout)

    def close(self) -> None:
        """Close the channel locally; nothing is sent, requests in flight are unaffected."""
        if not self._closed:
            self._closed = True
            self._table = HandlerTable()
            if self._client._named.get(self.name) is self:
                del self._client._named[self.name]

    def _check_open(self) -> None:
        if self._closed:
            raise ChannelClosed(f"channel {self.name!r} is closed")

    def __repr__(self) -> str:
        return f"<trio_wswrapper.Channel {self.name!r}>"


def reason_payload(reason: object, error_to_json: ErrorToJSON | None = None) -> ErrorPayload | None:
    """The ``x`` payload for a cancellation or abort reason (§6.3); None means the default."""
    if reason is None:
        return None
    if isinstance(reason, ErrorPayload):
        return reason
    if isinstance(reason, BaseException):
        payload = getattr(reason, "payload", None)
        if isinstance(payload, ErrorPayload):
            return payload if payload.value is not None else None
        return proto.error_from_exception(reason, error_to_json)
    return proto.error_from_value(reason)


class AnonymousChannel(Registry):
    """A request-scoped, bidirectional channel (PROTOCOL.md §9).

    The requestor gets one as the answer to a request whose handler opened it; the handler side
    opens one with :func:`open_channel` or :func:`channel`. Events with an ``on``/``once`` handler
    go to it; the others are buffered (bounded) for ``async for name, args in ch``. Use it as an
    async context manager: leaving normally closes it silently, leaving with an exception
    (cancellation included) aborts it.
    """

    def __init__(self, client: Client, gen: _Generation, id: int, *, announced: bool = True) -> None:
        self._client = client
        self._gen = gen
        self.id = id
        self._table = HandlerTable()
        self._announced = announced
        self._buffer: collections.deque[tuple[Any, tuple[Any, ...]]] = collections.deque()
        self._limit = client._options.limits.channel_buffer_size
        self._waiters = trio.lowlevel.ParkingLot()
        self._closed: ChannelClosed | None = None
        self._bound: list[trio.CancelScope] = []
        self._started: trio.Event | None = None
        self._iterating = False

    # -- public API --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the channel was closed or aborted by either side, or the connection ended."""
        return self._closed is not None

    @property
    def close_reason(self) -> ErrorPayload | None:
        """The abort reason the channel closed with (None while open or after a silent close)."""
        return self._closed.reason if self._closed is not None else None

    async def emit(self, name: str, *args: Any) -> None:
        """Send event ``name`` on this channel; raises :class:`ChannelClosed` once closed."""
        if self._closed is not None:
            raise ChannelClosed(proto.EMIT_CLOSED, self._closed.reason)
        self._check_announced()
        proto.check_event_name(name, root=False)
        await self._gen.send(proto.encode_event(name, args, anon=self.id, codec=self._client._codec))

    async def request(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """Send request ``name`` on this channel; its cancellation leaves the channel open."""
        if self._closed is not None:
            raise ChannelClosed(proto.REQUEST_CLOSED, self._closed.reason)
        self._check_announced()
        proto.check_event_name(name, root=False)
        if self._client._gen is not self._gen:
            raise ChannelClosed(proto.REQUEST_CLOSED)
        return await self._client._request(name, args, anon=self.id, timeout=timeout)

    async def abort(self, reason: object = None) -> None:
        """Abort: send ``{"h":id,"x":reason}`` and close locally (§9.6). No-op once closed.

        ``reason`` may be an exception (sent as an error object), any JSON value (sent as is)
        or None (``Request aborted``).
        """
        self._abort_nowait(reason)
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close locally and silently; the peer learns of it only if it sends again (§9.6)."""
        self._close(ChannelClosed("channel closed"))
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> AnonymousChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self._close(ChannelClosed("channel closed"))
        else:
            self._abort_nowait(None if isinstance(exc, trio.Cancelled) else exc)

    def __aiter__(self) -> AnonymousChannel:
        return self

    async def __anext__(self) -> tuple[Any, tuple[Any, ...]]:
        # A plain iterator, not an async generator: leaving ``async for`` early must not leave
        # an unfinished generator behind (Trio warns when one is garbage collected).
        try:
            return await self.receive()
        except ChannelClosed as closed:
            if closed.reason is None:
                raise StopAsyncIteration from None
            raise

    async def receive(self) -> tuple[Any, tuple[Any, ...]]:
        """The next buffered event as ``(name, args)``; raises :class:`ChannelClosed` at the end.

        Buffered events are delivered before the closure is reported.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._buffer:
            if self._closed is not None:
                raise self._closed
            parked = True
            await self._waiters.park()
        # Taken only once no cancellation can intervene, so an event is never lost (§9.4).
        item = self._buffer.popleft()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def iterate(self) -> StreamIterator:
        """Consume a stream (PROTOCOL.md §10.3): sends ``start`` and yields each value."""
        return StreamIterator(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed is not None else "open"
        return f"<trio_wswrapper.AnonymousChannel {self.id} {state}>"

    # -- internals ---------------------------------------------------------------------------

    def _check_announced(self) -> None:
        if self._gen.compat != "v4":
            # A creation frame from a peer in a compat mode: answerable, but never with "h" (§14.2).
            raise ProtocolError(proto.ANON_UNSUPPORTED)
        if not self._announced:
            raise ProtocolError("the channel is not announced yet; return it from the handler first")

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ChannelClosed("channel is closed", self._closed.reason)

    def _abort_nowait(self, reason: object) -> None:
        if self._closed is not None:
            return
        options = self._client._options
        payload = reason_payload(reason, options.error_to_json)
        gen = self._gen
        if (
            self._announced
            and gen.compat == "v4"
            and gen.queue.closed is None
            and gen.channels.get(self.id) is self
        ):
            flag = options.error_flag
            frame = proto.encode_abort(self.id, payload, error_flag=flag, codec=self._client._codec)
            gen.queue.put_nowait(frame, force=True)
        self._close(ChannelClosed("channel aborted", payload or proto.DEFAULT_ABORT_REASON))

    def _close(self, closed: ChannelClosed) -> None:
        if self._closed is not None:
            return
        self._closed = closed
        if self._gen.channels.get(self.id) is self:
            del self._gen.channels[self.id]
        self._waiters.unpark_all()
        for scope in self._bound:
            scope.cancel()
        self._bound.clear()

    def _deliver(self, name: Any, args: tuple[Any, ...]) -> None:
        if self._closed is not None:
            return
        if name == "start" and self._started is not None:
            self._started.set()
            return
        if len(self._buffer) >= self._limit:
            self._abort_nowait(proto.message_payload(proto.overflow_text(self.id)))
            return
        self._buffer.append((name, args))
        self._waiters.unpark()

    def _peer_aborted(self, reason: ErrorPayload) -> None:
        self._close(ChannelClosed(f"channel aborted by peer: {reason.message}", reason))

    def _connection_lost(self, closed: ConnectionClosed) -> None:
        self._close(ChannelClosed(str(closed), proto.message_payload(str(closed))))

    def _announce(self, active: _Active) -> None:
        """Announce this channel as the answer to ``active`` (§9.2): one step, no checkpoint."""
        gen = self._gen
        rid = active.id
        if self._announced:
            raise ProtocolError("this request's channel is already open")
        if gen.active.get(rid) is not active:
            raise ChannelClosed("the request was cancelled; the channel is not announced")
        if rid in gen.channels or rid in gen.pending:
            raise ProtocolError(proto.anon_exists_text(rid))
        gen.channels[rid] = self
        del gen.active[rid]
        self._announced = True
        gen.queue.put_nowait(proto.encode_creation(rid, codec=self._client._codec), force=True)


class StreamIterator:
    """Async iterator over a stream's values; see :meth:`AnonymousChannel.iterate`."""

    def __init__(self, channel: AnonymousChannel) -> None:
        self._channel = channel
        self._started = False
        self._done = False

    def __aiter__(self) -> StreamIterator:
        return self

    async def __anext__(self) -> Any:
        channel = self._channel
        if self._done:
            raise StopAsyncIteration
        # "Concurrent" means another pull is in progress: an iteration left with ``break``
        # gets no signal, so it must not block the next one (§10.3).
        if channel._iterating:
            raise RuntimeError("this channel is already being iterated")
        if not self._started and channel._closed is not None:
            self._finish()
            raise ChannelClosed(proto.ITERATION_CLOSED, channel._closed.reason)
        channel._iterating = True
        try:
            if not self._started:
                self._started = True
                await channel.emit("start")
            while True:
                try:
                    name, args = await channel.receive()
                except ChannelClosed as closed:
                    self._finish()
                    raise ChannelClosed(proto.ITERATION_CLOSED, closed.reason) from None
                if name != "next":
                    continue
                payload = args[0] if args else None
                if isinstance(payload, dict):
                    if proto._truthy(payload.get("done")):
                        self._finish()
                        raise StopAsyncIteration
                    return payload.get("value")
                return None
        finally:
            channel._iterating = False

    def _finish(self) -> None:
        self._done = True

    async def aclose(self) -> None:
        """Stop iterating; sends nothing and leaves the channel open (§10.3)."""
        self._finish()
        await trio.lowlevel.checkpoint()

    async def athrow(
        self,
        typ: type[BaseException] | BaseException,
        val: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> Any:
        """Abort the channel with the exception and raise it (§10.3), as a generator would."""
        exc = typ if isinstance(typ, BaseException) else (val if val is not None else typ())
        self._finish()
        await self._channel.abort(exc)
        raise exc.with_traceback(tb) if tb is not None else exc


def _request_context() -> tuple[Client, _Active]:
    active = _current_request.get()
    if active is None:
        raise ProtocolError("anonymous channels can only be opened by a request handler")
    return _current_client.get(), active


def channel() -> AnonymousChannel:
    """The anonymous channel answering the current request, not yet announced.

    Register handlers on it, then return it from the handler: the channel is announced instead
    of a resolution and lives until either side closes or aborts it.
    """
    client, active = _request_context()
    return _request_channel(client, active)


def _request_channel(client: Client, active: _Active) -> AnonymousChannel:
    gen = active.gen
    if gen.outcome is not None:
        raise gen.outcome  # that connection has ended (§12.3)
    if gen.compat != "v4":
        raise ProtocolError(proto.ANON_UNSUPPORTED)
    existing = active.channel
    if existing is None:
        existing = AnonymousChannel(client, gen, active.id, announced=False)
        active.channel = existing
    return existing


class _OpenChannel:
    """``async with open_channel() as ch``: announce now, close or abort on exit."""

    def __init__(self) -> None:
        self._channel: AnonymousChannel | None = None

    async def __aenter__(self) -> AnonymousChannel:
        client, active = _request_context()
        ch = _request_channel(client, active)
        ch._announce(active)
        self._channel = ch
        await trio.lowlevel.checkpoint()
        return ch

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._channel is not None
        await self._channel.__aexit__(exc_type, exc, tb)


def open_channel() -> _OpenChannel:
    """Open the current request's anonymous channel and drive it from this handler (§9.2).

    ``async with wsw.open_channel() as ch:`` announces the channel (the request resolves to it
    on the other side); leaving the block normally closes it silently, leaving with an
    exception aborts it with that exception.
    """
    return _OpenChannel()


async def serve_stream(
    client: Client,
    gen: _Generation,
    handler: Handler,
    msg: proto.Incoming,
    active: _Active,
    *,
    args: Sequence[Any],
) -> str | None:
    """Answer a request with a stream: announce a channel, wait for ``start``, send items.

    ``args`` are the handler's arguments, already converted. Returns a rejection frame when
    the stream cannot be opened, else None.
    """
    flag = client._options.error_flag
    codec = client._codec
    if gen.compat != "v4":
        payload = proto.message_payload(proto.ANON_UNSUPPORTED)
        return proto.encode_rejection(active.id, payload, error_flag=flag, codec=codec)
    try:
        result = handler.fn(*args)
        if handler.kind == "stream" and hasattr(result, "__await__"):
            result = await result
        if hasattr(result, "__aiter__"):
            agen = result.__aiter__()
        elif hasattr(result, "__iter__") and not isinstance(result, (str, bytes, dict)):
            agen = _iterate_sync(result)
        else:
            _close_iterable(result)
            payload = proto.message_payload(proto.NOT_ITERABLE)
            return proto.encode_rejection(active.id, payload, error_flag=flag, codec=codec)
    except Exception as exc:
        return proto.encode_rejection(active.id, client._failure_payload(exc), error_flag=flag, codec=codec)
    ch = AnonymousChannel(client, gen, active.id, announced=False)
    try:
        try:
            ch._announce(active)
        except ProtocolError as exc:
            payload = proto.message_payload(str(exc))
            return proto.encode_rejection(active.id, payload, error_flag=flag, codec=codec)
        except ChannelClosed:
            return None
        # Known to the request from now on, so that a failure around the handler (a
        # handler_context deadline) aborts the stream's channel.
        active.channel = ch
        ch._started = trio.Event()
        scope = trio.CancelScope()
        ch._bound.append(scope)
        with scope:
            await ch._started.wait()
            try:
                async for item in agen:
                    try:
                        frame = proto.encode_event(
                            "next", [{"value": item, "done": False}], anon=ch.id, codec=codec
                        )
                    except (TypeError, ValueError, RecursionError) as exc:
                        await ch.abort(proto.message_payload(str(exc)))
                        return None
                    await gen.send(frame)
            except Exception as exc:
                await ch.abort(exc)
                return None
            await ch.emit("next", {"done": True})
            await ch.aclose()
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            # Shielded so the generator's finally blocks run even when the connection is being
            # cancelled, but bounded: a cleanup that blocks must not hold the teardown.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + client._options.close_timeout
                try:
                    await aclose()
                except Exception:
                    logger.exception("closing the stream of %r failed", msg.name)
            if scope.cancelled_caught:
                logger.warning("closing the stream of %r timed out", msg.name)
    return None


async def _iterate_sync(iterable: Any) -> AsyncIterator[Any]:
    """Adapt a sync iterable to the async iteration the producer loop uses."""
    iterator = iter(iterable)
    try:
        for item in iterator:
            yield item
    finally:
        _close_iterable(iterator)


def _close_iterable(value: object) -> None:
    close = getattr(value, "close", None)
    if callable(close) and not hasattr(value, "__aiter__"):
        close()
