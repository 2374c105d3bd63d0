"""Helpers of the reliability suite: scale, figures, memory, and a healthy client.

Every test here has a short version (the default, run by CI) and a long one, chosen with
``WSW_STRESS=1`` (``nox -s stress``). Tests record their figures with :func:`record` and
:func:`add`; ``conftest.py`` prints them at the end of the run.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper._client import _Generation

#: True for the long runs (``WSW_STRESS=1``).
LONG = os.environ.get("WSW_STRESS", "") not in ("", "0")

FIGURES: dict[str, dict[str, Any]] = {}


def scale(short: int, long: int) -> int:
    """``long`` in the long runs, else ``short``."""
    return long if LONG else short


def record(test: str, **figures: Any) -> None:
    """Add figures for ``test`` to the end-of-run report (later values replace earlier ones)."""
    FIGURES.setdefault(test, {}).update(figures)


def add(test: str, name: str, amount: int) -> None:
    """Add ``amount`` to the counter ``name`` of ``test``."""
    entry = FIGURES.setdefault(test, {})
    entry[name] = entry.get(name, 0) + amount


def rss_kib() -> int:
    """This process's resident set size in KiB (Linux), or -1 where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        pass
    return -1


def raise_open_file_limit(needed: int) -> None:
    """Raise the soft limit on open files to ``needed`` (within the hard limit), or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# -- a server under test, a healthy client beside the hostile ones, leak checks ------------------


def make_server(**options: Any) -> wsw.Server:
    """A server with the handlers the reliability tests use (heartbeats off unless given)."""
    options.setdefault("heartbeat_interval", None)
    server = wsw.Server(**options)
    server.on("echo", lambda x: x)
    server.on("add", lambda a, b: a + b)
    server.of("room").on("echo", lambda x: x)

    @server.on("sleep")
    async def sleep() -> None:
        await trio.sleep_forever()

    @server.on("slow")
    async def slow(n: int) -> int:
        for _ in range(n):
            await trio.sleep(0)
        return n

    @server.on("fail")
    def fail(message: Any) -> None:
        raise ValueError(message)

    @server.on("stream")
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(min(n, 5)):
            yield i

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            async for name, args in ch:
                if name == "bye":
                    break
                await ch.emit("echo", *args)

    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("question", timeout=1)

    return server


@attrs.define
class Healthy:
    """A well-behaved client that keeps making requests and checks every reply."""

    requests: int = 0
    replies: int = 0

    async def run(self, port: int, stop: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
            task_status.started()
            n = 0
            while not stop.is_set():
                n += 1
                payload = {"n": n, "s": "é" * (n % 7)}
                self.requests += 3
                assert await client.request("echo", payload) == payload
                assert await client.of("room").request("echo", [n]) == [n]
                assert await client.request("add", n, 1) == n + 1
                self.replies += 3

    @property
    def lost(self) -> int:
        """Requests that got no correct reply (a wrong one fails the test at once)."""
        return self.requests - self.replies


class ErrorLog(logging.Handler):
    """Collects the library's ERROR records, except event-handler failures the tests provoke."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("handler for event"):
            self.records.append(record)


@contextmanager
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("trio_wswrapper")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def task_count() -> int:
    """Tasks alive in this trio run (leaked handler, reader or writer tasks show up here)."""
    stack = [trio.lowlevel.current_root_task()]
    count = 0
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def live_objects(*types: type) -> dict[str, int]:
    """How many objects of each type the garbage collector can still reach."""
    gc.collect()
    counts = dict.fromkeys((t.__name__ for t in types), 0)
    for obj in gc.get_objects():
        for t in types:
            if isinstance(obj, t):
                counts[t.__name__] += 1
    return counts


def leak_types() -> tuple[type, ...]:
    return (wsw.Client, _Generation, wsw.AnonymousChannel)


async def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def idle(server: wsw.Server, clients: int = 0) -> bool:
    """True when ``server`` has ``clients`` clients and no request, handler or channel left."""
    stats = server.statistics()
    return (
        stats.clients == clients
        and stats.pending_requests == 0
        and stats.active_requests == 0
        and stats.running_handlers == 0
        and stats.open_channels == 0
    )
