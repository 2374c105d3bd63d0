"""Broadcasts across server processes over Redis pub/sub (the ``trio_wswrapper[redis]`` extra).

Every process runs its servers with the same :class:`RedisBroadcast` settings (URL and
prefix). ``server.emit`` and ``server.of(name).emit`` deliver to this process's clients at
once, then publish the encoded frame once on the Redis channel ``<prefix>:broadcast``; every
other process delivers it to its own clients. Redis pub/sub is at-most-once: a process that is
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

    A bus message is JSON: ``{"v": 1, "o": origin, "n": number, "f": frame}``. ``origin`` is
    this backend's random :attr:`origin`: a process skips the messages it published itself,
    which it has already delivered. ``number`` counts this backend's messages: with the origin
    it identifies a message, so that one published twice (coredis retries a PUBLISH whose
    connection broke, and the first attempt may have gone through) is delivered once; the last
    4096 are remembered. ``frame`` is the ws-wrapper frame text as encoded by ``emit``, so no
    process encodes the event again. A received message that is not valid JSON of that
    shape, is larger than ``max_message_size`` bytes, or whose frame is not a ws-wrapper event,
    is dropped with a rate-limited warning and counted in :meth:`statistics`.

    While Redis is unreachable, ``emit`` still delivers locally, and the failure is reported: a
    rate-limited warning, ``publish_failures`` in :meth:`statistics`, :attr:`healthy` false and
    :attr:`last_error` set. ``emit``'s return value lists local client failures only. The
    subscriber reconnects with jittered exponential backoff (``min_backoff`` doubling up to
    ``max_backoff`` seconds) and resubscribes; a failed publish makes it reconnect too, and no
    publish is attempted until it has, so a down bus costs ``emit`` no waiting.

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
    ) -> None:
        super().__init__()
        if not prefix:
            raise ValueError("prefix must not be empty")
        if publish_timeout <= 0 or min_backoff <= 0 or max_backoff < min_backoff:
            raise ValueError("publish_timeout and min_backoff must be > 0, max_backoff >= min_backoff")
        self._url = url
        self._channel = f"{prefix}:broadcast"
        self._origin = secrets.token_hex(8)
        self._publish_timeout = publish_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._max_message_size = max_message_size
        self._redis: coredis.Redis[bytes] | None = None
        self._entered = False
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
        if self._entered:
            raise RuntimeError("a RedisBroadcast can be entered only once")
        self._entered = True
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
        from ._server import _collapse

        redis = coredis.Redis.from_url(self._url, connect_timeout=self._publish_timeout)
        try:
            async with redis, trio.open_nursery() as nursery:
                self._redis = redis
                await nursery.start(self._subscribe_forever)
                self._running = True
                try:
                    yield self
                finally:
                    self._running = False
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _collapse(group) from None
        finally:
            self._redis = None

    async def publish(self, frame: str) -> list[tuple[Client, Exception]]:
        """Deliver ``frame`` to this process's clients, then publish it on the bus.

        Waits at most ``publish_timeout`` seconds for Redis, and not at all while the bus is
        known to be down. A failure to publish is reported (see the class), never raised.
        Cancellation while waiting for Redis leaves the frame delivered locally and maybe
        published.
        """
        self._published += 1
        failures = self.deliver(frame)
        redis = self._redis
        if not self._running or redis is None:
            self._publish_failed(RuntimeError("the Redis broadcast is not running (use `async with`)"))
        elif not self._subscribed:
            self._publish_failed(self._last_error or ConnectionError("not connected to Redis"))
        else:
            self._number += 1
            message = f'{{"v":{BUS_VERSION},"o":"{self._origin}","n":{self._number},"f":{json.dumps(frame)}}}'
            try:
                with trio.fail_after(self._publish_timeout):
                    await redis.publish(self._channel, message)
            except Exception as exc:
                self._publish_failed(exc)
                self._subscribed = False
                if self._subscription is not None:
                    self._subscription.cancel()  # reconnect before publishing again
            else:
                return failures
        await trio.lowlevel.checkpoint()
        return failures

    def _publish_failed(self, exc: Exception) -> None:
        self._publish_failures += 1
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
        origin, number, frame = envelope.get("o"), envelope.get("n"), envelope.get("f")
        if type(origin) is not str or type(number) is not int or type(frame) is not str:
            self._drop("origin, number or frame of the wrong type")
            return
        if origin == self._origin:
            return  # published here, and delivered when it was
        key = (origin, number)
        if key in self._recent_set:
            logger.debug("dropped a duplicate broadcast %r from the Redis bus", key)
            return
        event = proto.decode(frame)
        if (
            type(event) is not proto.Incoming
            or event.id is not None
            or event.anon is not None
            or not (event.channel is None or type(event.channel) is str)
            or event.is_reserved
        ):
            self._drop("the frame is not a ws-wrapper event")
            return
        self._recent.append(key)
        self._recent_set.add(key)
        if len(self._recent) > RECENT:
            self._recent_set.discard(self._recent.popleft())
        self._received += 1
        missed = self.deliver(frame)
        if missed:
            logger.info("%d clients missed a broadcast from another process", len(missed))

    def _drop(self, reason: str) -> None:
        self._malformed += 1
        logger.warning("dropped a malformed message from the Redis bus: %s", reason)


if TYPE_CHECKING:  # pragma: no cover
    from ._broadcast import BroadcastBackend

    _check: BroadcastBackend = RedisBroadcast()
