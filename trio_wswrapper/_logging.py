"""Rate limiting of the library's log records, so that a peer cannot flood the logs.

A remote peer can make the library log at will: one record per frame (an event whose handler
fails, events dropped over the concurrency limit) or per connection attempt (a refused Origin,
a protocol error). Python's logging stores nothing itself, so memory is not at stake, but log
volume (disk, CPU, log shipping) is. The filter installed on the ``trio_wswrapper`` logger
lets at most ``burst`` records of each message template at INFO or above through per
``period`` seconds, counted per connection for records about one (a failing event handler,
dropped events) and for the whole process otherwise (refused handshakes). The rest are
dropped and counted, and the next record let through for that template says how many were
suppressed. DEBUG records are not limited: DEBUG logs every ignored frame and is meant for
development, not for servers exposed to hostile peers.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

__all__ = ["RateLimitFilter", "logger"]

logger = logging.getLogger("trio_wswrapper")


class RateLimitFilter(logging.Filter):
    """Let at most ``burst`` records per message template through every ``period`` seconds.

    Templates are the format strings the library passes to the logger, a fixed set; windows
    are kept per connection (released with it) and for the process, so the tables stay
    bounded. Thread-safe, since logging may be called from any thread.
    """

    def __init__(
        self, burst: int = 20, period: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        # template -> [window start, records let through, records suppressed]
        self._process: dict[str, list[float]] = {}
        self._connections: weakref.WeakKeyDictionary[object, dict[str, list[float]]] = (
            weakref.WeakKeyDictionary()
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or not isinstance(record.msg, str):
            return True
        connection = _connection_of(record)
        now = self._clock()
        suppressed = 0
        with self._lock:
            windows = self._process if connection is None else self._connections.setdefault(connection, {})
            window = windows.get(record.msg)
            if window is None or now - window[0] >= self.period:
                if window is not None:
                    suppressed = int(window[2])
                windows[record.msg] = [now, 1, 0]
            elif window[1] < self.burst:
                window[1] += 1
            else:
                window[2] += 1
                return False
        if suppressed:
            record.msg = f"{record.msg} [{suppressed} similar records suppressed]"
        return True


def _connection_of(record: logging.LogRecord) -> object | None:
    """The client a record is about: the one being served, or the record's first argument."""
    from ._client import Client, _current_client

    client = _current_client.get(None)
    if client is None and isinstance(record.args, tuple) and record.args:
        first = record.args[0]
        if isinstance(first, Client):
            client = first
    return client


def install() -> None:
    """Add the filter to the library's logger once."""
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter())


install()
