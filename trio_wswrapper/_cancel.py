"""Explicit cancellation of outbound requests with a reason (PROTOCOL.md §6.3, §8.1, §9.3)."""

from __future__ import annotations

import contextvars
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from ._protocol import ErrorPayload

if TYPE_CHECKING:
    from ._channels import AnonymousChannel

__all__ = ["CancelSource"]

_current_source: contextvars.ContextVar[CancelSource | None] = contextvars.ContextVar(
    "trio_wswrapper.cancel_source", default=None
)


class CancelSource:
    """A cancel scope whose cancellation tells the peer why (the counterpart of a JS abort signal).

    ``with wsw.CancelSource() as source:`` behaves like a :class:`trio.CancelScope` around the
    block; ``source.cancel(reason)`` cancels it. Every request of this block still pending then
    sends ``{"i":N,"x":reason}`` instead of the default ``Request aborted``. A request of the
    block that was answered with an anonymous channel has that channel aborted with
    ``{"h":N,"x":reason}`` instead, even after the block was left. ``reason`` follows §6.3: an
    exception is sent as an error object, any other JSON value as is, None as the default.
    Timeouts still send the default reason. The first ``cancel`` wins; later ones do nothing.
    """

    def __init__(self) -> None:
        self._scope = trio.CancelScope()
        self._parent: CancelSource | None = None
        self._token: contextvars.Token[CancelSource | None] | None = None
        self._payload: ErrorPayload | None = None
        self._channels: weakref.WeakSet[AnonymousChannel] = weakref.WeakSet()
        #: The reason given to :meth:`cancel`, as given (None until then).
        self.reason: Any = None

    def __enter__(self) -> CancelSource:
        if self._token is not None:
            raise RuntimeError("a CancelSource can be entered only once")
        self._scope.__enter__()
        self._parent = _current_source.get()
        self._token = _current_source.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._token is not None
        _current_source.reset(self._token)
        return self._scope.__exit__(exc_type, exc, tb)

    @property
    def cancel_called(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._scope.cancel_called

    @property
    def cancelled_caught(self) -> bool:
        """True when the block ended because of this source's cancellation."""
        return self._scope.cancelled_caught

    def cancel(self, reason: object = None) -> None:
        """Cancel the block's requests, and abort channels they produced, with ``reason``."""
        if self._scope.cancel_called:
            return
        from ._channels import reason_payload

        self.reason = reason
        self._payload = reason_payload(reason)
        for channel in list(self._channels):
            channel._abort_nowait(self._payload)
        self._channels.clear()
        self._scope.cancel()


def _sources() -> list[CancelSource]:
    """The sources around the calling code, innermost first."""
    found = []
    source = _current_source.get()
    while source is not None:
        found.append(source)
        source = source._parent
    return found


def cancel_payload() -> ErrorPayload | None:
    """The ``x`` payload for a request cancelled here: the outermost cancelled source's reason."""
    for source in reversed(_sources()):
        if source.cancel_called:
            return source._payload
    return None


def attach(result: object) -> None:
    """Bind a channel a request resolved to to the sources around that request (§9.3)."""
    from ._channels import AnonymousChannel

    if not isinstance(result, AnonymousChannel):
        return
    for source in reversed(_sources()):
        if source.cancel_called:
            result._abort_nowait(source._payload)
            return
    for source in _sources():
        source._channels.add(result)
