"""Dialling: ``open_client`` connects a :class:`Client`, and reconnects it when asked to.

One supervisor task owns the connection attempts of an ``open_client`` block. Each attempt
opens the WebSocket in a nursery of its own (trio-websocket's reader lives there), runs one
connection generation through ``Client._run`` and closes the socket when that generation ends.
With a :class:`Reconnect` policy the supervisor then waits out a jittered exponential backoff and
dials again; the client object, its handlers, named channels and ``data`` carry over, nothing of
the old generation does (PROTOCOL.md §12.3).
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio_websocket

from . import _protocol as proto
from ._client import Client
from ._config import make_options
from ._endpoint import parse_url
from ._errors import ConnectionClosed, ConnectionRejected, collapse
from ._handshake import HandshakeFailed
from ._middleware import HandlerContext
from ._server import _is_cancellation
from ._transports import TransportName, check_transport
from ._transports import connect as connect_transport

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Reconnect", "open_client"]

logger = logging.getLogger("trio_wswrapper")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _attempts(_: object, __: object, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"max_attempts must be at least 1 or None, not {value!r}")


def _fraction(_: object, __: object, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"jitter must be between 0 and 1, not {value!r}")


def _queue_size(_: object, __: object, value: int) -> None:
    if value < 0:
        raise ValueError(f"offline_queue_size must not be negative, not {value!r}")


@attrs.frozen(kw_only=True)
class Reconnect:
    """How :func:`open_client` reconnects after the connection drops.

    The n-th consecutive wait lasts ``min(max_delay, initial_delay * multiplier**n)`` seconds,
    shortened by a random fraction of up to ``jitter`` so that many clients dropped together do
    not return together. After ``max_attempts`` consecutive failed attempts (None: never) the
    client gives up. A handshake refused with an HTTP 4xx status (except 408 and 429) is not
    retried: asking again would get the same answer. Up to ``offline_queue_size`` events
    emitted while disconnected are held and sent, in order, once connected again.
    """

    initial_delay: float = attrs.field(default=0.5, validator=_positive)
    max_delay: float = attrs.field(default=30.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    jitter: float = attrs.field(default=0.5, validator=_fraction)
    max_attempts: int | None = attrs.field(default=None, validator=_attempts)
    offline_queue_size: int = attrs.field(default=256, validator=_queue_size)

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before the next attempt, after ``failures`` consecutive failures."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(failures, 64))
        return base * (1 - self.jitter * rand())


def check_url(url: str) -> None:
    """Refuse what is not a ws:// or wss:// URL with a host, before any connection attempt."""
    parse_url(url)


def _fatal(error: ConnectionClosed) -> bool:
    if not isinstance(error, ConnectionRejected):
        return False
    return 400 <= error.status < 500 and error.status not in (408, 429)


@attrs.define(eq=False)
class _Dialer:
    """The supervisor of one ``open_client`` block: connects, and reconnects per ``policy``."""

    client: Client
    url: str
    policy: Reconnect | None
    connect_timeout: float
    ssl_context: Any
    extra_headers: list[tuple[bytes, bytes]] | None
    subprotocols: list[str] | None
    rand: Callable[[], float] = random.random
    stopping: bool = False
    #: A connection has been opened (so ``open_client`` has yielded).
    opened: bool = False
    transport: TransportName | None = None
    _wait_scope: trio.CancelScope | None = None
    #: Dialling (or waiting out a backoff): ``stop`` may cancel ``_wait_scope``.
    _connecting: bool = False

    def stop(self) -> None:
        """No further attempts, nor offline queueing; interrupts a backoff or a connection
        attempt in progress."""
        self.stopping = True
        self.client._offline = None
        if self._wait_scope is not None and self._connecting:
            self._wait_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        client, policy = self.client, self.policy
        if policy is not None:
            client._offline = deque()
            client._offline_limit = policy.offline_queue_size
            client._stop_reconnecting = self.stop
        failures = 0
        try:
            while not self.stopping:
                error = await self._connection(None if self.opened else task_status)
                if error is None and not self.opened:
                    raise ConnectionClosed(None, "closed while connecting")
                if error is None:
                    failures = 0
                elif (
                    policy is None
                    or _fatal(error)
                    or (policy.max_attempts is not None and failures + 1 >= policy.max_attempts)
                ):
                    if not self.opened:
                        raise error
                    attempts = failures + 1
                    logger.warning(
                        "gave up reconnecting to %s after %d attempts: %s", self.url, attempts, error
                    )
                    client._finish(
                        ConnectionClosed(None, f"gave up reconnecting after {attempts} attempts: {error}")
                    )
                    return
                else:
                    failures += 1
                if policy is None or self.stopping:
                    return
                delay = policy.delay(failures, self.rand)
                logger.info("reconnecting to %s in %.2fs", self.url, delay)
                self._connecting = True
                with trio.CancelScope() as self._wait_scope:
                    await trio.sleep(delay)
                self._wait_scope = None
                self._connecting = False
        finally:
            client._stop_reconnecting = None
            if client._final is None and not client.connected:
                client._finish(ConnectionClosed(None, "closed"))

    def _connect_error(self, exc: BaseException) -> ConnectionClosed:
        text = "timed out" if isinstance(exc, trio.TooSlowError) else str(exc) or type(exc).__name__
        reason = _os_reason(exc)
        if reason is not None and reason.lower() not in text.lower():
            text = f"{text} ({reason})"
        return ConnectionClosed(None, f"cannot connect to {self.url}: {text}")

    async def _connection(self, task_status: trio.TaskStatus[None] | None) -> ConnectionClosed | None:
        """Dial once and serve the connection until it ends; the error if it never opened.

        ``stop()`` cancels ``_wait_scope`` only while ``_connecting``: an attempt in progress
        is abandoned, an open connection is closed through the client instead.
        """
        client = self.client
        options = client._options
        error: ConnectionClosed | None = None
        self._connecting = True
        with trio.CancelScope() as self._wait_scope:
            try:
                async with connect_transport(
                    self.transport,
                    self.url,
                    ssl_context=self.ssl_context,
                    subprotocols=self.subprotocols,
                    extra_headers=self.extra_headers,
                    max_message_size=options.limits.max_message_size,
                    connect_timeout=self.connect_timeout,
                    close_timeout=options.close_timeout,
                ) as transport:
                    self._connecting = False
                    async with trio.open_nursery() as generation:
                        await generation.start(client._run, transport)
                        if task_status is not None:
                            self.opened = True
                            task_status.started()
                        if self.stopping:
                            # Closed while this connection was being set up: the close call
                            # found no connection to close, so close this one now.
                            await client._close(1000, "", user=True)
            except ConnectionRejected as exc:
                if not self._connecting:
                    raise
                error = exc
            except (OSError, trio_websocket.HandshakeError, HandshakeFailed, trio.TooSlowError) as exc:
                if not self._connecting:
                    raise
                error = self._connect_error(exc)
            finally:
                self._connecting = False
        self._wait_scope = None
        if error is not None:
            logger.info("%s: %s", self.url, error.reason)
        return error


def _os_reason(exc: BaseException | None) -> str | None:
    """The OS's words for a failed connection ("Connection refused"), from the errno that
    trio's "all attempts to connect ... failed" error carries in its cause."""
    for _ in range(8):
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno:
            return os.strerror(exc.errno) if exc.errno > 0 else exc.strerror
        exc = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) else exc.__cause__
    return None


@asynccontextmanager
async def open_client(
    url: str,
    *,
    client: Client | None = None,
    reconnect: bool | Reconnect = False,
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
    handler_context: HandlerContext | None = None,
    codec: proto.Codec | None = None,
) -> AsyncIterator[Client]:
    """Connect to the ws-wrapper endpoint at ``url`` and yield the connected :class:`Client`.

    The context owns the connection's nursery (reader, writer and handler tasks). Leaving it
    closes the connection (1000) and waits for the teardown. Pass ``client`` to reuse a client
    object whose handlers are already registered (so that none of the first messages is
    missed); otherwise the keyword options configure a new one. A bad URL raises
    ``ValueError``; failing to connect raises :class:`ConnectionClosed`
    (:class:`ConnectionRejected` when the server answered with an HTTP error).

    With ``reconnect=True`` (or a :class:`Reconnect` policy) a dropped connection is dialled
    again with backoff, also for the first connection, until the policy gives up. Requests
    pending at a drop fail at once with :class:`ConnectionClosed`; ``close`` listeners see
    ``user_closed=False``; events emitted while disconnected are held and sent on reconnection;
    :meth:`Client.wait_connected` waits for the next connection.
    """
    check_url(url)
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
                handler_context=handler_context,
                codec=codec,
            )
        )
    policy = Reconnect() if reconnect is True else (reconnect or None)
    dialer = _Dialer(
        client,
        url,
        policy,
        connect_timeout,
        ssl_context,
        extra_headers,
        subprotocols,
        transport=check_transport(transport),
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(dialer.run)
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
                    dialer.stop()
                    await client._close(1000, "", user=True, prompt=cancelled)
    except BaseExceptionGroup as group:
        raise collapse(group) from None
