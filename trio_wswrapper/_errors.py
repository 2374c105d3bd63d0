"""Exceptions raised by trio_wswrapper; all derive from :class:`WSWrapperError`."""

from __future__ import annotations

import sys
from typing import Any

from ._protocol import REQUEST_TIMED_OUT, ErrorPayload, error_from_value

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "ChannelClosed",
    "ConnectionClosed",
    "ConnectionRejected",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "WSWrapperError",
]


class WSWrapperError(Exception):
    """Base class of every error this library raises."""


class RemoteError(WSWrapperError):
    """A rejection: the peer's handler failed, or a handler of ours rejects with a value.

    Raised by ``request()`` when the peer rejects; ``value`` is the raw ``e`` payload and
    ``message`` its text (PROTOCOL.md §6.4). Raise it in a handler to reject with an arbitrary
    JSON value (``RemoteError("nope")`` sends ``{"e":"nope"}``); a ``RemoteError`` received from
    a peer and re-raised by a handler is forwarded with its original payload and flag.
    """

    def __init__(self, value: Any = None, *, is_error: bool = False) -> None:
        self.payload: ErrorPayload = error_from_value(value, is_error)
        super().__init__(self.payload.message)

    @classmethod
    def _from_payload(cls, payload: ErrorPayload) -> RemoteError:
        error = cls.__new__(cls)
        error.payload = payload
        Exception.__init__(error, payload.message)
        return error

    @property
    def value(self) -> Any:
        """The raw rejection value as JSON decoded it (``None`` for ``null``)."""
        return self.payload.value

    @property
    def is_error(self) -> bool:
        """True when the value is an encoded error object (``"_"`` was set)."""
        return self.payload.is_error

    @property
    def message(self) -> str:
        """The rejection's text: the error object's ``message``, or the value rendered."""
        return self.payload.message

    def __repr__(self) -> str:
        return f"RemoteError({self.payload.value!r}, is_error={self.payload.is_error})"


class RequestTimeout(WSWrapperError, TimeoutError):
    """A request's timeout expired; the peer was sent a cancellation (PROTOCOL.md §8.1)."""

    def __init__(self, message: str = REQUEST_TIMED_OUT) -> None:
        super().__init__(message)


class ConnectionClosed(WSWrapperError):
    """The connection is closed, or closed while a request or send was waiting.

    ``code`` and ``reason`` are the WebSocket close code and reason, when known.
    """

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = "connection closed" if code is None else f"connection closed ({code})"
        super().__init__(f"{text}: {reason}" if reason else text)


class ConnectionRejected(ConnectionClosed):
    """The server refused the WebSocket handshake with an HTTP ``status`` (``headers``, ``body``)."""

    def __init__(self, status: int, headers: tuple[tuple[str, str], ...] = (), body: bytes = b"") -> None:
        text = body.decode("utf-8", "replace").strip()[:200]
        super().__init__(None, f"handshake rejected with HTTP {status}" + (f": {text}" if text else ""))
        self.status = status
        self.headers = headers
        self.body = body


class ProtocolError(WSWrapperError):
    """The peer does not support what was asked of it, or a protocol rule forbids it."""


class ChannelClosed(WSWrapperError):
    """A channel is closed; ``reason`` is the abort or close reason when there was one."""

    def __init__(self, message: str, reason: ErrorPayload | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def collapse(group: BaseExceptionGroup[Any]) -> BaseException:
    """The single real error inside nested exception groups, or the group itself."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group
