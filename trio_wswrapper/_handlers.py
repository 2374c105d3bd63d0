"""Handler registry: on/once tables with replacement semantics, and lifecycle listeners.

Handlers are prepared once, at registration: whether a callable is a coroutine function or an
async generator, and how its arguments are converted to its annotations, is decided here, never
per message.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar, overload

import attrs

from ._protocol import RESERVED_NAMES, check_event_name
from ._typed import Binder, make_binder

__all__ = ["Handler", "HandlerTable", "LIFECYCLE_ALIASES", "Registry", "iterable_handler"]

logger = logging.getLogger("trio_wswrapper")

F = TypeVar("F", bound=Callable[..., Any])

#: Reserved root names and the lifecycle event each one denotes (§12.1).
LIFECYCLE_ALIASES: Final = {
    "open": "open",
    "connect": "open",
    "close": "close",
    "disconnect": "close",
    "error": "error",
    "message": "message",
}
assert set(LIFECYCLE_ALIASES) == RESERVED_NAMES

HandlerKind = Literal["sync", "async", "asyncgen", "stream"]

_ITERABLE_MARK = "__wsw_iterable__"


def iterable_handler(fn: F) -> F:
    """Mark ``fn`` as a streaming handler that *returns* a sync or async iterable.

    Like JavaScript ws-wrapper's ``iterableHandler``: the request is answered with an anonymous
    channel that streams the iterable's items (PROTOCOL.md §10.2). Async generator functions
    stream without this marker. ``fn`` may be sync or async; if what it returns is not
    iterable, the request is rejected.
    """

    @functools.wraps(fn)
    def marked(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    setattr(marked, _ITERABLE_MARK, True)
    return marked  # type: ignore[return-value]


@attrs.frozen(eq=False)
class Handler:
    """A registered callable and how to invoke it.

    ``bind`` converts a message's arguments to the annotated parameter types (see
    ``_typed.py``); it is None for handlers without parameter annotations, whose arguments
    are passed as they are.
    """

    fn: Callable[..., Any]
    kind: HandlerKind
    bind: Binder | None = None

    @classmethod
    def prepare(cls, fn: Callable[..., Any], name: str = "") -> Handler:
        """Inspect ``fn`` once and record how it must be called for event ``name``."""
        if not callable(fn):
            raise TypeError(f"handler must be callable, not {type(fn).__name__}")
        bind = make_binder(fn, name or getattr(fn, "__name__", "handler"))
        if getattr(fn, _ITERABLE_MARK, False):
            return cls(fn, "stream", bind)
        target = inspect.unwrap(fn)
        if inspect.isasyncgenfunction(target):
            return cls(fn, "asyncgen", bind)
        if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - objects with an async __call__
        ):
            return cls(fn, "async", bind)
        return cls(fn, "sync", bind)


@attrs.define(eq=False)
class HandlerTable:
    """The ``on`` and ``once`` handlers of one channel on one object (§7.1)."""

    on: dict[str, Handler] = attrs.field(factory=dict)
    once: dict[str, Handler] = attrs.field(factory=dict)

    def add(self, name: str, fn: Callable[..., Any], *, once: bool) -> None:
        """Register ``fn`` for ``name``; a second registration replaces the first."""
        handler = Handler.prepare(fn, name)
        if once:
            self.once[name] = handler
        else:
            self.on[name] = handler

    def remove(self, name: str, fn: Callable[..., Any] | None = None) -> None:
        """Remove the handlers for ``name`` (only ``fn``'s, when given)."""
        for table in (self.once, self.on):
            handler = table.get(name)
            if handler is not None and (fn is None or handler.fn is fn):
                del table[name]


class Registry:
    """Mixin for objects with ``on``/``once``/``off``: the decorator and call forms.

    Subclasses provide ``_table`` (a :class:`HandlerTable`), ``_root`` (whether reserved names
    are lifecycle events here) and ``_lifecycle`` when ``_root`` is true.
    """

    _table: HandlerTable
    _root: bool = False
    _lifecycle: dict[str, list[tuple[Callable[..., Any], bool]]]

    @overload
    def on(self, name: str) -> Callable[[F], F]: ...

    @overload
    def on(self, name: str, fn: F) -> F: ...

    def on(self, name: str, fn: F | None = None) -> F | Callable[[F], F]:
        """Register a handler for ``name``: ``obj.on(name, fn)`` or ``@obj.on(name)``.

        On a root channel, reserved names register lifecycle listeners (``open``/``connect``,
        ``close``/``disconnect``, ``error``, ``message``) instead of event handlers.
        """
        return self._register(name, fn, once=False)

    @overload
    def once(self, name: str) -> Callable[[F], F]: ...

    @overload
    def once(self, name: str, fn: F) -> F: ...

    def once(self, name: str, fn: F | None = None) -> F | Callable[[F], F]:
        """Like :meth:`on`, but the handler runs for the first matching message only."""
        return self._register(name, fn, once=True)

    def off(self, name: str, fn: Callable[..., Any] | None = None) -> None:
        """Remove the handler (or lifecycle listener) for ``name``; ``fn`` narrows it."""
        if self._root and name in LIFECYCLE_ALIASES:
            listeners = self._lifecycle[LIFECYCLE_ALIASES[name]]
            listeners[:] = [(f, o) for f, o in listeners if fn is not None and f is not fn]
            return
        self._check_open()
        self._table.remove(name, fn)

    def _register(self, name: str, fn: F | None, *, once: bool) -> F | Callable[[F], F]:
        check_event_name(name, root=False)
        self._check_open()

        def register(fn: F) -> F:
            if self._root and name in LIFECYCLE_ALIASES:
                if not callable(fn):
                    raise TypeError(f"handler must be callable, not {type(fn).__name__}")
                listeners = self._lifecycle[LIFECYCLE_ALIASES[name]]
                if all(f is not fn for f, _ in listeners):
                    listeners.append((fn, once))
            else:
                self._table.add(name, fn, once=once)
            return fn

        if fn is None:
            return register
        return register(fn)

    def _check_open(self) -> None:
        """Raise when the object can no longer take handlers (closed channels override)."""


def new_lifecycle() -> dict[str, list[tuple[Callable[..., Any], bool]]]:
    """Empty listener lists for the four lifecycle events."""
    return {"open": [], "close": [], "error": [], "message": []}
