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
import ssl
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState

from . import _protocol as proto
from ._client import Client
from ._config import make_options
from ._errors import ConnectionClosed, ConnectionRejected
from ._middleware import HandlerContext
from ._server import _collapse, _is_cancellation
from ._transport import TrioWebsocketTransport

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
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a malformed port
    except ValueError as exc:
        raise ValueError(f"invalid WebSocket URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"invalid WebSocket URL {url!r}: the scheme must be ws:// or wss://")
    if not parts.hostname:
        raise ValueError(f"invalid WebSocket URL {url!r}: no host")


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
    _wait_scope: trio.CancelScope | None = None

    def stop(self) -> None:
        """No further attempts; interrupts a backoff or a connection attempt in progress."""
        self.stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        client, policy = self.client, self.policy
        if policy is not None:
            client._offline = deque()
            client._offline_limit = policy.offline_queue_size
            client._stop_reconnecting = self.stop
        started = False
        failures = 0
        try:
            while not self.stopping:
                error = await self._connection(task_status if not started else None)
                if error is None and not self.opened:
                    raise ConnectionClosed(None, "closed while connecting")
                if error is None:
                    started = True
                    failures = 0
                elif (
                    policy is None
                    or _fatal(error)
                    or (policy.max_attempts is not None and failures + 1 >= policy.max_attempts)
                ):
                    if not started:
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
                with trio.CancelScope() as self._wait_scope:
                    await trio.sleep(delay)
                self._wait_scope = None
        finally:
            client._stop_reconnecting = None
            if client._final is None and not client.connected:
                client._finish(ConnectionClosed(None, "closed"))

    def _connect_error(self, exc: BaseException) -> ConnectionClosed:
        if isinstance(exc, trio_websocket.ConnectionRejected):
            return ConnectionRejected(exc.status_code, _headers(exc.headers), exc.body or b"")
        text = "timed out" if isinstance(exc, trio.TooSlowError) else str(exc) or type(exc).__name__
        reason = _os_reason(exc)
        if reason is not None and reason.lower() not in text.lower():
            text = f"{text} ({reason})"
        return ConnectionClosed(None, f"cannot connect to {self.url}: {text}")

    def _failed(self, error: ConnectionClosed | None) -> ConnectionClosed | None:
        if error is not None:
            logger.info("%s: %s", self.url, error.reason)
        return error

    async def _connection(self, task_status: trio.TaskStatus[None] | None) -> ConnectionClosed | None:
        """Dial once and serve the connection until it ends; the error if it never opened."""
        client = self.client
        options = client._options
        error: ConnectionClosed | None = None
        opened = False
        stream: trio.abc.Stream | None = None
        try:
            async with trio.open_nursery() as nursery:
                ws = None
                with trio.CancelScope() as self._wait_scope:
                    try:
                        with trio.fail_after(self.connect_timeout):
                            stream, host, resource = await _open_stream(self.url, self.ssl_context)
                            ws = await _client_handshake(
                                nursery,
                                stream,
                                host,
                                resource,
                                subprotocols=self.subprotocols,
                                extra_headers=self.extra_headers,
                                max_message_size=options.limits.max_message_size,
                            )
                    except ConnectionRejected as exc:
                        error = exc
                    except (OSError, trio_websocket.HandshakeError, trio.TooSlowError) as exc:
                        error = self._connect_error(exc)
                self._wait_scope = None
                if ws is None:
                    if stream is not None:
                        await trio.aclose_forcefully(stream)
                    nursery.cancel_scope.cancel()
                    return self._failed(error)
                opened = True
                try:
                    async with trio.open_nursery() as generation:
                        await generation.start(client._run, TrioWebsocketTransport(ws, options.close_timeout))
                        if task_status is not None:
                            self.opened = True
                            task_status.started()
                        if self.stopping:
                            # Closed while this connection was being set up: the close call
                            # found no connection to close, so close this one now.
                            await client._close(1000, "", user=True)
                finally:
                    # trio-websocket 0.12.2 leaves a client's TCP stream open when the server
                    # closed first; close it so the socket is not leaked.
                    with trio.CancelScope(shield=True):
                        await ws._close_stream()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio-websocket's reader task raises the handshake's failure (a rejection, say).
            if stream is not None and not opened:
                await trio.aclose_forcefully(stream)
            failures, rest = group.split((OSError, trio_websocket.HandshakeError))
            if opened or rest is not None or failures is None:
                raise
            return self._failed(self._connect_error(_collapse(failures)))
        return None


async def _open_stream(url: str, ssl_context: Any) -> tuple[trio.abc.Stream, str, str]:
    """Open the TCP (or TLS) stream for ``url``; also return its Host header and resource."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    if ssl_context is not None and not secure:
        raise ValueError("ssl_context needs a wss:// URL")
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream
    if secure:
        context = ssl_context if ssl_context is not None else ssl.create_default_context()
        stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context, https_compatible=True)
    else:
        stream = await trio.open_tcp_stream(host, port)
    named = f"[{host}]" if ":" in host else host
    return stream, named if port == (443 if secure else 80) else f"{named}:{port}", resource


async def _client_handshake(
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

    rejected: list[ConnectionRejected] = []

    async def reader() -> None:
        try:
            await ws._reader_task()
        except trio_websocket.ConnectionRejected as exc:
            rejected.append(ConnectionRejected(exc.status_code, _headers(exc.headers), exc.body or b""))
        finally:
            ws._open_handshake.set()

    nursery.start_soon(reader)
    await ws._open_handshake.wait()
    if rejected:
        raise rejected[0]
    if ws._wsproto.state is not ConnectionState.OPEN:
        raise OSError("the server closed the connection during the handshake")
    return ws


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


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    if not raw:
        return ()
    return tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw)


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
    dialer = _Dialer(client, url, policy, connect_timeout, ssl_context, extra_headers, subprotocols)
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
                    client._offline = None
                    await client._close(1000, "", user=True, prompt=cancelled)
    except BaseExceptionGroup as group:
        raise _collapse(group) from None
