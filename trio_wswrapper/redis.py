"""Broadcasts across server processes over Redis pub/sub (the ``trio_wswrapper[redis]`` extra).

Every process runs its servers with the same :class:`RedisBroadcast` settings (URL and
prefix). ``server.emit`` and ``server.of(name).emit`` deliver to this process's clients at
once and hand the encoded frame to a bounded outbox; one publisher task sends what the outbox
holds, all frames emitted meanwhile in one PUBLISH, on the Redis channel
``<prefix>:broadcast``, and every other process delivers the frames to its own clients, in
order. Redis pub/sub is at-most-once: a process that is
disconnected from Redis misses what is published meanwhile.

The Redis client is coredis, which runs on anyio and therefore natively under ``trio.run``.
"""

from __future__ import annotations

import json
import random
import secrets
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import coredis
import trio

from . import _protocol as proto
from ._broadcast import BroadcastStatistics, LocalBroadcast
from ._errors import collapse
from ._logging import logger

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

if TYPE_CHECKING:
    from coredis.response.types import PubSubMessage

    from ._client import Client

__all__ = ["RedisBroadcast"]

#: The version of the bus message format; other versions are dropped as malformed.
BUS_VERSION = 1
#: How many (origin, number) pairs of received messages are remembered to drop duplicates.
RECENT = 4096


class RedisBroadcast(LocalBroadcast):
    """A broadcast backend that shares ``emit`` with other processes through Redis pub/sub.

    Use it as an async context manager around the servers that use it; it owns a nursery with
    one subscriber task, which lives exactly as long as the ``async with`` block::

        bus = RedisBroadcast("redis://127.0.0.1:6379/0", prefix="chat")
        server = wsw.Server(broadcast=bus)
        async with bus:
            await server.serve("0.0.0.0", 8080)

    A bus message is JSON: ``{"v": 1, "o": origin, "n": number, "f": [entry, ...]}``, each
    entry a frame for every client, or ``[group, frame]`` for the members of a
    :class:`~trio_wswrapper.Group`.
    ``origin`` is this backend's random :attr:`origin`: a process skips the messages it
    published itself, whose frames it has already delivered. ``number`` counts this backend's
    messages: with the origin it identifies a message, so that one published twice (coredis
    retries a PUBLISH whose connection broke, and the first attempt may have gone through) is
    delivered once; the last 4096 are remembered. ``f`` lists the ws-wrapper frames, as
    encoded by ``emit``, in the order they were emitted: as many as the outbox held when the
    publisher took them (at most ``batch_size``, and within ``max_message_size``), so a burst of
    emits costs a few PUBLISHes, not one each, and no process encodes an event again. A
    received message that is not valid JSON of that shape, is larger than
    ``max_message_size`` bytes, or holds a frame that is not a ws-wrapper event, is dropped
    whole with a rate-limited warning and counted in :meth:`statistics`. Frames are checked
    as JSON, so every server on the bus must encode JSON (the built-in codec or
    :class:`~trio_wswrapper.OrjsonCodec`); frames of another codec would all be dropped.

    ``emit`` returns once the PUBLISH carrying its frame is done: a task emitting in a loop
    publishes a frame per round trip to Redis, while emits from many tasks at once share
    PUBLISHes. When the outbox is full (``outbox_size`` frames), ``emit`` waits for room at
    most ``publish_timeout`` seconds, then reports the frame as not published.
    While Redis is unreachable, ``emit`` still delivers locally, and the failure is reported: a
    rate-limited warning, ``publish_failures`` (frames) in :meth:`statistics`, :attr:`healthy`
    false and :attr:`last_error` set. ``emit``'s return value lists local client failures
    only. The subscriber reconnects with jittered exponential backoff (``min_backoff`` doubling
    up to ``max_backoff`` seconds) and resubscribes; a failed PUBLISH drops the frames in the
    outbox (reported) and makes it reconnect too, and nothing is published until it has. On
    leaving the ``async with`` block, frames still in the outbox are published first, within
    ``publish_timeout``.

    Frames from other processes go straight to each client's bounded send queue without
    waiting: a client that cannot keep up misses them (counted as ``missed``), as with a local
    broadcast. coredis buffers received pub/sub messages internally without a bound; this
    backend drains that buffer without ever waiting, so it stays short unless the process
    lacks the CPU to keep up with the bus.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "trio_wswrapper",
        publish_timeout: float = 2.0,
        min_backoff: float = 0.1,
        max_backoff: float = 10.0,
        max_message_size: int = 4 * 1024 * 1024,
        outbox_size: int = 1024,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        if not prefix:
            raise ValueError("prefix must not be empty")
        if publish_timeout <= 0 or min_backoff <= 0 or max_backoff < min_backoff:
            raise ValueError("publish_timeout and min_backoff must be > 0, max_backoff >= min_backoff")
        if outbox_size < 1 or batch_size < 1:
            raise ValueError("outbox_size and batch_size must be at least 1")
        self._outbox_size = outbox_size
        self._batch_size = batch_size
        #: Frames waiting for the publisher task, already JSON-encoded as strings.
        self._outbox: deque[str] = deque()
        self._outbox_ready = trio.lowlevel.ParkingLot()
        #: Frames put in the outbox, and of those, the ones published or reported as failed.
        self._queued = 0
        self._settled = 0
        #: Emitters waiting for their frame to settle, or for room in the outbox.
        self._progress = trio.lowlevel.ParkingLot()
        #: The publisher task is waiting for a PUBLISH.
        self._sending = False
        self._url = url
        self._channel = f"{prefix}:broadcast"
        self._origin = secrets.token_hex(8)
        self._publish_timeout = publish_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._max_message_size = max_message_size
        self._redis: coredis.Redis[bytes] | None = None
        self._running = False
        self._subscribed = False
        self._subscription: trio.CancelScope | None = None
        self._last_error: Exception | None = None
        self._context: AbstractAsyncContextManager[RedisBroadcast] | None = None
        self._publish_failures = 0
        self._received = 0
        self._malformed = 0
        self._reconnects = 0
        self._number = 0
        self._recent: deque[tuple[str, int]] = deque()
        self._recent_set: set[tuple[str, int]] = set()

    @property
    def channel(self) -> str:
        """The Redis channel the frames travel on: ``<prefix>:broadcast``."""
        return self._channel

    @property
    def origin(self) -> str:
        """This backend's random id, carried by every message it publishes."""
        return self._origin

    @property
    def healthy(self) -> bool:
        """True while running and subscribed to Redis, so that ``emit`` reaches every process."""
        return self._running and self._subscribed

    @property
    def last_error(self) -> Exception | None:
        """The latest failure to publish or to stay subscribed; None until one happens."""
        return self._last_error

    def statistics(self) -> BroadcastStatistics:
        """A snapshot of the counters (see :class:`~trio_wswrapper.BroadcastStatistics`)."""
        return BroadcastStatistics(
            published=self._published,
            publish_failures=self._publish_failures,
            received=self._received,
            malformed=self._malformed,
            missed=self._missed,
            connected=self._subscribed,
            reconnects=self._reconnects,
        )

    async def __aenter__(self) -> RedisBroadcast:
        """Connect and subscribe; returns once subscribed or after the first attempt failed
        (then it keeps retrying in the background and ``emit`` delivers locally meanwhile)."""
        if self._context is not None:
            raise RuntimeError("a RedisBroadcast can be entered only once")
        self._context = self._open()
        return await self._context.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Stop the subscriber and disconnect; later ``emit`` calls deliver locally only."""
        assert self._context is not None
        return await self._context.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[RedisBroadcast]:
        redis = coredis.Redis.from_url(self._url, connect_timeout=self._publish_timeout)
        try:
            async with redis, trio.open_nursery() as nursery:
                self._redis = redis
                await nursery.start(self._subscribe_forever)
                nursery.start_soon(self._publish_forever)
                self._running = True
                try:
                    yield self
                    with trio.move_on_after(self._publish_timeout):
                        while (self._outbox or self._sending) and self._subscribed:
                            await self._progress.park()
                finally:
                    self._running = False
                    self._drop_outbox(ConnectionError("the Redis broadcast was closed"))
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise collapse(group) from None
        finally:
            self._redis = None

    async def publish(self, frame: str, group: str | None = None) -> list[tuple[Client, Exception]]:
        """Deliver ``frame`` to this process's clients, then publish it on the bus.

        Returns once the PUBLISH that carries the frame is done (frames emitted meanwhile by
        other tasks share it), or failed and was reported; not waiting at all while the bus
        is known to be down. A failure to publish is reported (see the class), never raised.
        Cancellation while waiting leaves the frame delivered locally and maybe published.
        """
        self._published += 1
        failures = self.deliver(frame, group)
        if not self._running:
            self._publish_failed(RuntimeError("the Redis broadcast is not running (use `async with`)"))
        elif not self._subscribed:
            self._publish_failed(self._last_error or ConnectionError("not connected to Redis"))
        else:
            if len(self._outbox) >= self._outbox_size:
                with trio.move_on_after(self._publish_timeout):
                    while len(self._outbox) >= self._outbox_size and self._subscribed:
                        await self._progress.park()
                if len(self._outbox) >= self._outbox_size or not self._subscribed:
                    self._publish_failed(
                        TimeoutError("the Redis bus is not keeping up (the outbox stayed full)")
                    )
                    return failures
            self._outbox.append(json.dumps(frame if group is None else [group, frame]))
            self._queued += 1
            mine = self._queued
            self._outbox_ready.unpark()
            while self._settled < mine:
                await self._progress.park()
            return failures
        await trio.lowlevel.checkpoint()
        return failures

    async def _publish_forever(self) -> None:
        """Publish what the outbox holds, in order, several frames to a message."""
        assert self._redis is not None
        outbox = self._outbox
        prefix = f'{{"v":{BUS_VERSION},"o":"{self._origin}","n":'
        while True:
            while not outbox:
                await self._outbox_ready.park()
            batch: list[str] = []
            size = len(prefix) + 32
            while outbox and len(batch) < self._batch_size:
                grown = size + len(outbox[0]) + 1
                if batch and grown > self._max_message_size:
                    break
                size = grown
                batch.append(outbox.popleft())
            self._progress.unpark_all()  # room in the outbox
            if size > self._max_message_size:
                self._settle(len(batch))
                self._publish_failed(ValueError("a broadcast frame is larger than max_message_size"))
                continue
            self._number += 1
            message = f'{prefix}{self._number},"f":[{",".join(batch)}]}}'
            self._sending = True
            try:
                with trio.fail_after(self._publish_timeout):
                    await self._redis.publish(self._channel, message)
            except Exception as exc:
                self._publish_failed(exc, len(batch))
                self._drop_outbox(exc)
                self._subscribed = False
                if self._subscription is not None:
                    self._subscription.cancel()  # reconnect before publishing again
            finally:
                self._sending = False
                self._settle(len(batch))

    def _drop_outbox(self, exc: Exception) -> None:
        """Report the frames still in the outbox as not published, and forget them."""
        dropped = len(self._outbox)
        if dropped:
            self._publish_failed(exc, dropped)
            self._outbox.clear()
        self._settle(dropped)

    def _settle(self, frames: int) -> None:
        """The next ``frames`` frames of the outbox are published or reported: wake their
        emitters, and those waiting for room."""
        self._settled += frames
        self._progress.unpark_all()

    def _publish_failed(self, exc: Exception, frames: int = 1) -> None:
        self._publish_failures += frames
        self._last_error = exc
        logger.warning("broadcast delivered locally but not published to Redis: %r", exc)

    async def _subscribe_forever(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Stay subscribed to the bus channel, reconnecting with jittered exponential backoff."""
        assert self._redis is not None
        delay = self._min_backoff
        started = False
        while True:
            try:
                async with self._redis.pubsub(
                    channel_handlers={self._channel: self._on_message},
                    ignore_subscribe_messages=True,
                    retry_policy=None,  # the loop below retries, and reports each failure
                ) as pubsub:
                    with trio.CancelScope() as self._subscription:
                        if started:
                            self._reconnects += 1
                            logger.info("resubscribed to Redis channel %s", self._channel)
                        self._subscribed = True
                        delay = self._min_backoff
                        if not started:
                            started = True
                            task_status.started()
                        async for _ in pubsub:
                            pass  # the channel handler delivers; nothing else arrives here
                        raise ConnectionError("the Redis subscription ended")
            except Exception as exc:
                self._last_error = exc
                logger.warning("Redis broadcast subscription failed, retrying: %r", exc)
            finally:
                self._subscribed = False
                self._subscription = None
            if not started:
                started = True
                task_status.started()
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max_backoff)

    def _on_message(self, message: PubSubMessage) -> None:
        """Deliver one bus message to the local clients, or drop it if malformed."""
        data: Any = message["data"]
        if not isinstance(data, (bytes, str)) or len(data) > self._max_message_size:
            self._drop("not a string within max_message_size")
            return
        try:
            envelope = json.loads(data)
        except (ValueError, RecursionError):
            self._drop("not JSON")
            return
        if type(envelope) is not dict or envelope.get("v") != BUS_VERSION:
            self._drop("not a version-1 envelope")
            return
        origin, number, frames = envelope.get("o"), envelope.get("n"), envelope.get("f")
        if type(origin) is not str or type(number) is not int or type(frames) is not list or not frames:
            self._drop("origin, number or frames of the wrong type")
            return
        entries: list[tuple[str, str | None]] = []
        for entry in frames:
            if type(entry) is str:
                entries.append((entry, None))
            elif type(entry) is list and len(entry) == 2 and type(entry[0]) is str and type(entry[1]) is str:
                entries.append((entry[1], entry[0]))
            else:
                self._drop("a frame entry is neither a frame nor [group, frame]")
                return
        if origin == self._origin:
            return  # published here, and delivered when it was
        key = (origin, number)
        if key in self._recent_set:
            logger.debug("dropped a duplicate broadcast %r from the Redis bus", key)
            return
        for frame, _ in entries:
            event = proto.decode(frame)
            if (
                type(event) is not proto.Incoming
                or event.id is not None
                or event.anon is not None
                or not (event.channel is None or type(event.channel) is str)
                or event.is_reserved
            ):
                self._drop("a frame is not a ws-wrapper event")
                return
        self._recent.append(key)
        self._recent_set.add(key)
        if len(self._recent) > RECENT:
            self._recent_set.discard(self._recent.popleft())
        missed = 0
        for frame, group in entries:
            self._received += 1
            missed += len(self.deliver(frame, group))
        if missed:
            logger.info("%d deliveries of broadcasts from another process were missed", missed)

    def _drop(self, reason: str) -> None:
        self._malformed += 1
        logger.warning("dropped a malformed message from the Redis bus: %s", reason)


if TYPE_CHECKING:  # pragma: no cover
    from ._broadcast import BroadcastBackend

    _check: BroadcastBackend = RedisBroadcast()
