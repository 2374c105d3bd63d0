"""The rate limit on the library's log records (trio_wswrapper/_logging.py)."""

from __future__ import annotations

import gc
import logging

import trio_wswrapper
from trio_wswrapper._logging import RateLimitFilter


def make(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("trio_wswrapper", level, __file__, 1, msg, (), None)


def test_burst_then_suppression_then_report() -> None:
    now = [0.0]
    limit = RateLimitFilter(burst=3, period=10.0, clock=lambda: now[0])
    assert [limit.filter(make("flood %r")) for _ in range(5)] == [True, True, True, False, False]
    assert limit.filter(make("other %r"))  # each template has its own window
    now[0] = 10.0
    record = make("flood %r")
    assert limit.filter(record)
    assert record.msg == "flood %r [2 similar records suppressed]"
    record = make("flood %r")
    assert limit.filter(record) and record.msg == "flood %r"


def test_debug_records_are_not_limited() -> None:
    limit = RateLimitFilter(burst=1, clock=lambda: 0.0)
    assert all(limit.filter(make("ignored frame", logging.DEBUG)) for _ in range(100))


def test_installed_once_on_the_library_logger() -> None:
    filters = logging.getLogger("trio_wswrapper").filters
    assert sum(isinstance(f, RateLimitFilter) for f in filters) == 1


def test_records_about_a_connection_are_counted_per_connection() -> None:
    limit = RateLimitFilter(burst=2, clock=lambda: 0.0)
    a, b = trio_wswrapper.Client(), trio_wswrapper.Client()

    def about(client: trio_wswrapper.Client) -> logging.LogRecord:
        return logging.LogRecord(
            "trio_wswrapper", logging.WARNING, __file__, 1, "%r: dropped", (client,), None
        )

    assert [limit.filter(about(a)) for _ in range(3)] == [True, True, False]
    assert [limit.filter(about(b)) for _ in range(3)] == [True, True, False]
    assert [limit.filter(make("%r: dropped")) for _ in range(3)] == [True, True, False]
    del a
    gc.collect()
    assert len(limit._connections) == 1  # windows go with their connection
