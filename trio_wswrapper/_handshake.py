"""What every transport's server-side handshake shares: the request seen, and refusal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

__all__ = ["HandshakeFailed", "RequestCheck", "RequestInfo"]


class HandshakeFailed(Exception):
    """The opening handshake did not complete (refused, malformed, timed out, or the peer left)."""


class RequestInfo:
    """What a client asked for in its opening handshake (path with query, headers, subprotocols)."""

    __slots__ = ("headers", "path", "subprotocols")

    def __init__(self, path: str, headers: Sequence[tuple[str, str]], subprotocols: Sequence[str]) -> None:
        self.path = path
        self.headers = tuple(headers)
        self.subprotocols = tuple(subprotocols)

    def __repr__(self) -> str:
        return f"RequestInfo(path={self.path!r}, subprotocols={self.subprotocols!r})"


#: ``check(request)`` returns ``None`` to accept, or ``(status, body)`` to refuse over HTTP.
RequestCheck = Callable[[RequestInfo], Awaitable[tuple[int, str] | None]]
