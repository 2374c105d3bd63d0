"""Where a ``ws://`` or ``wss://`` URL leads, and the stream a client opens to it.

Every client transport dials through here, so URL checks, the Host header and the TLS setup
are the same whichever WebSocket implementation runs on top.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

__all__ = ["Endpoint", "open_stream", "parse_url"]


@attrs.frozen
class Endpoint:
    """A WebSocket URL taken apart: TLS or not, host, port and request target."""

    secure: bool
    host: str
    port: int
    target: str

    @property
    def host_header(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        named = f"[{self.host}]" if ":" in self.host else self.host
        return named if self.port == (443 if self.secure else 80) else f"{named}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """``url`` taken apart; ``ValueError`` for what is not a ws:// or wss:// URL with a host."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise ValueError(f"invalid WebSocket URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"invalid WebSocket URL {url!r}: the scheme must be ws:// or wss://")
    if not parts.hostname:
        raise ValueError(f"invalid WebSocket URL {url!r}: no host")
    secure = parts.scheme == "wss"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Endpoint(secure, parts.hostname, port or (443 if secure else 80), target)


async def open_stream(endpoint: Endpoint, ssl_context: Any = None) -> trio.abc.Stream:
    """A TCP stream to ``endpoint``, with TLS set up for ``wss://`` (``ssl_context`` or the
    default context). An ``ssl_context`` with a ``ws://`` URL is refused with ``ValueError``.
    """
    if ssl_context is not None and not endpoint.secure:
        raise ValueError("ssl_context needs a wss:// URL")
    stream: trio.abc.Stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    if endpoint.secure:
        tls = trio.SSLStream(
            stream,
            ssl_context if ssl_context is not None else ssl.create_default_context(),
            server_hostname=endpoint.host,
            https_compatible=True,
        )
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        stream = tls
    return stream
