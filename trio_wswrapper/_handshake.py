"""Handshake control for servers: what a connecting client asked for, and how to refuse it.

``Server(authorize=...)`` sees a :class:`Handshake` before the WebSocket is accepted and may
refuse it by raising :class:`Reject` (an HTTP status goes back, no WebSocket is opened).
``Server(allowed_origins=...)`` refuses browsers whose page comes from elsewhere, the defence
against cross-site WebSocket hijacking.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from http import HTTPStatus

import attrs

__all__ = [
    "Handshake",
    "HandshakeFailed",
    "Reject",
    "RequestCheck",
    "RequestInfo",
    "choose_subprotocol",
    "decode_headers",
    "origin_allowed",
]


@attrs.frozen
class Handshake:
    """The opening HTTP request of a WebSocket connection, as the server received it.

    ``headers`` keeps every header in order, names lower-cased; :meth:`header` reads one.
    ``remote`` is the peer's address as ``(host, port)`` when known.
    """

    path: str
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    remote: tuple[str, int] | None = None
    #: The subprotocol the server accepted, if any.
    subprotocol: str | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (case-insensitive); repeated headers are joined by ", "."""
        name = name.lower()
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else default

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header: browsers always send it, other clients usually do not."""
        return self.header("origin")

    @property
    def query(self) -> Mapping[str, list[str]]:
        """The parsed query string of :attr:`path`."""
        from urllib.parse import parse_qs, urlsplit

        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)


class Reject(Exception):
    """Raise in an ``authorize`` hook to refuse a connection with an HTTP ``status``.

    ``body`` is sent as ``text/plain`` (the status phrase when empty); ``headers`` are added to
    the response (for example ``WWW-Authenticate``).
    """

    def __init__(
        self, status: int = 403, body: str = "", *, headers: Collection[tuple[str, str]] = ()
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"a rejection needs a 4xx or 5xx status, not {status}")
        self.status = status
        self.body = body or _phrase(status)
        self.headers = tuple(headers)
        super().__init__(status, self.body)


def decode_headers(
    raw: Iterable[tuple[bytes, bytes]] | None, *, lower: bool = False
) -> list[tuple[str, str]]:
    """HTTP header pairs as text (latin-1, as HTTP/1.1 defines them); names lower-cased on
    request."""
    if lower:
        return [(bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1")) for k, v in raw or ()]
    return [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in raw or ()]


def choose_subprotocol(offered: Sequence[str], supported: Collection[str]) -> str | None:
    """The first subprotocol the client offered that the server supports, or None (every
    transport accepts the handshake without one then)."""
    return next((p for p in offered if p in supported), None)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Rejected"


def normalize_origin(origin: str) -> str:
    """Origins compare case-insensitively and without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """Whether a handshake with ``origin`` passes the allow-list ``allowed`` (normalized).

    A request without ``Origin`` does not come from a browser page, so there is no page to
    hijack it from: it passes. ``"*"`` allows every origin.
    """
    if origin is None or "*" in allowed:
        return True
    return normalize_origin(origin) in allowed


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


#: ``check(request)`` returns ``None`` to accept, or a :class:`Reject` to refuse over HTTP.
RequestCheck = Callable[[RequestInfo], Awaitable["Reject | None"]]
