"""Broadcast backends: where ``server.emit`` sends a frame besides the server's own clients.

A backend is a hub that servers attach to (``Server(broadcast=backend)``). ``publish``
delivers the encoded frame to the clients of every attached server in this process, through
each server's ``_broadcast`` (the one local-delivery primitive: bounded per-client queues,
drop-and-report), and may also hand it to other processes. :class:`LocalBroadcast` stays in
the process; ``trio_wswrapper.redis.RedisBroadcast`` adds Redis pub/sub.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs
import trio

if TYPE_CHECKING:
    from ._client import Client
    from ._server import Server

__all__ = ["BroadcastBackend", "BroadcastStatistics", "LocalBroadcast"]


@runtime_checkable
class BroadcastBackend(Protocol):
    """What ``Server(broadcast=...)`` accepts.

    ``attach`` is called once by each server constructed with the backend. ``publish`` is
    awaited by ``server.emit``, ``server.of(name).emit`` and ``server.group(name).emit`` with
    the frame encoded once, and ``group`` set for a group's; it returns the local clients that
    missed it (the :meth:`Server.emit` failures). Failures to reach other processes are not
    client failures: a backend reports them its own way.
    """

    def attach(self, server: Server) -> None: ...

    async def publish(self, frame: str, group: str | None = None) -> list[tuple[Client, Exception]]: ...


@attrs.frozen
class BroadcastStatistics:
    """A snapshot of a broadcast backend's counters (all since the backend was created).

    ``published``: frames handed to the backend by ``emit``; ``publish_failures``: of those,
    the ones that did not reach the bus (always 0 in-process); ``received``: frames from other
    processes delivered here; ``malformed``: bus messages dropped as invalid; ``missed``:
    local client deliveries dropped (send queue full or client closing), over both paths;
    ``connected``: whether the bus subscription is up now (always True in-process);
    ``reconnects``: successful subscriptions after the first.
    """

    published: int = 0
    publish_failures: int = 0
    received: int = 0
    malformed: int = 0
    missed: int = 0
    connected: bool = True
    reconnects: int = 0


class LocalBroadcast:
    """The in-process backend: every attached server's clients get every frame.

    Each :class:`Server` gets its own by default, which makes ``emit`` reach that server's
    clients only. Share one between several servers of a process (say, on two ports) to make a
    broadcast from any of them reach the clients of all of them. Servers are held weakly.
    """

    def __init__(self) -> None:
        self._servers: weakref.WeakSet[Server] = weakref.WeakSet()
        self._published = 0
        self._missed = 0

    def attach(self, server: Server) -> None:
        """Deliver this backend's frames to ``server``'s clients from now on."""
        self._servers.add(server)

    @property
    def servers(self) -> list[Server]:
        """The attached servers that are still alive."""
        return list(self._servers)

    async def publish(self, frame: str, group: str | None = None) -> list[tuple[Client, Exception]]:
        """Put ``frame`` on the send queue of every client (or ``group`` member) of every
        attached server."""
        await trio.lowlevel.checkpoint()
        self._published += 1
        return self.deliver(frame, group)

    def deliver(self, frame: str, group: str | None = None) -> list[tuple[Client, Exception]]:
        """Local delivery to every attached server, without waiting; returns who missed it."""
        failures: list[tuple[Client, Exception]] = []
        for server in self._servers:
            failures.extend(server._broadcast(frame, group))
        self._missed += len(failures)
        return failures

    def statistics(self) -> BroadcastStatistics:
        """The counters; the bus fields are constant in-process."""
        return BroadcastStatistics(published=self._published, missed=self._missed)
