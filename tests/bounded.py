"""Wrap a test module's async tests in a virtual-time deadline, so a deadlock fails, not hangs."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import trio

DEADLINE = 1000  # seconds of (usually virtual) time


def _bounded(test: Any) -> Any:
    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> None:
        with trio.fail_after(DEADLINE):
            await test(*args, **kwargs)

    return bounded


def bound_tests(namespace: dict[str, Any]) -> None:
    """Call as ``bound_tests(globals())`` at the end of a test module."""
    for name, test in list(namespace.items()):
        if name.startswith("test_") and inspect.iscoroutinefunction(test):
            namespace[name] = _bounded(test)
