"""Plain HTTP beside the WebSocket endpoint: static files on the server's own port.

``Server(static=...)`` makes :meth:`Server.serve` read the head of every request itself. A
WebSocket upgrade continues on a stream that replays the bytes already read, so the WebSocket
layer sees the request untouched; any other request is answered from the static directories
(GET and HEAD only) and the connection is closed. Nothing here runs without ``static``.
"""

from __future__ import annotations

import email.utils
import logging
import mimetypes
import os
import stat
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Union
from urllib.parse import unquote, urlsplit

import h11
import trio

__all__ = ["StaticFiles", "StaticSpec", "route_stream"]

logger = logging.getLogger("trio_wswrapper")

StaticSpec = Union[str, "os.PathLike[str]", Mapping[str, Union[str, "os.PathLike[str]"]]]

#: The request head (request line and headers) may not exceed this many bytes.
MAX_HEAD = 16 * 1024
CHUNK = 64 * 1024

# Browsers insist on these for ES modules and style sheets, whatever the platform's tables say.
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}


def content_type(path: Path) -> str:
    """The Content-Type for ``path``, by its suffix."""
    suffix = path.suffix.lower()
    known = _TYPES.get(suffix)
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


class StaticFiles:
    """URL prefixes mapped to directories, and the lookup of a request path among them.

    A path resolves inside its directory or not at all: ``..`` segments, encoded slashes,
    NUL bytes, dot files and symbolic links leading outside the directory give no file.
    """

    def __init__(self, spec: StaticSpec) -> None:
        mounts = spec if isinstance(spec, Mapping) else {"/": spec}
        normalized: list[tuple[str, Path]] = []
        for prefix, directory in mounts.items():
            if not prefix.startswith("/"):
                raise ValueError(f"a static URL prefix must start with '/', not {prefix!r}")
            normalized.append((prefix.rstrip("/") + "/", Path(directory)))
        # Longest prefix first, so "/vendor/" wins over "/".
        self.mounts: tuple[tuple[str, Path], ...] = tuple(
            sorted(normalized, key=lambda item: len(item[0]), reverse=True)
        )

    def as_mapping(self) -> dict[str, Path]:
        """The mounts as ``{prefix: directory}``."""
        return dict(self.mounts)

    def resolve(self, target: str) -> Path | None:
        """The file a request target names, or None."""
        path = urlsplit(target).path
        if not path.startswith("/"):
            return None
        for prefix, directory in self.mounts:
            if path == prefix.rstrip("/") and prefix != "/":
                path = prefix  # "/vendor" serves "/vendor/"'s index
            if not path.startswith(prefix):
                continue
            raw = path[len(prefix) :]
            if "%2f" in raw.lower() or "%5c" in raw.lower():
                return None
            parts = unquote(raw).split("/")
            if any(p in ("..", ".") or p.startswith(".") or "\\" in p or "\0" in p for p in parts if p):
                return None
            try:
                root = directory.resolve(strict=True)
                candidate = root.joinpath(*[p for p in parts if p]).resolve(strict=True)
            except (OSError, RuntimeError):
                return None
            if candidate != root and root not in candidate.parents:
                return None
            if candidate.is_dir():
                candidate = candidate / "index.html"
                if not candidate.is_file():
                    return None
            return candidate if candidate.is_file() else None
        return None


class _ReplayStream(trio.abc.HalfCloseableStream):
    """``stream``, with ``head`` handed out first by ``receive_some``."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self.inner = stream
        self._head = head

    @property
    def plain_inner(self) -> trio.abc.Stream | None:
        """The wrapped stream once the replayed bytes are all read: from then on, reading or
        writing it directly is the same as using this stream (see ``_transport_wsproto``)."""
        return None if self._head else self.inner

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            await trio.lowlevel.checkpoint()
            size = len(self._head) if max_bytes is None else max_bytes
            data, self._head = self._head[:size], self._head[size:]
            return bytes(data)
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await self.inner.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _is_upgrade(request: h11.Request) -> bool:
    upgrade = connection = False
    for name, value in request.headers:
        tokens = [t.strip().lower() for t in value.split(b",")]
        if name == b"upgrade" and b"websocket" in tokens:
            upgrade = True
        elif name == b"connection" and b"upgrade" in tokens:
            connection = True
    return upgrade and connection


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    """The bytes up to the end of the request head (and whatever came with them)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            return None
        chunk = await stream.receive_some(CHUNK)
        if not chunk:
            return b""
        data += chunk
    return None if data.index(b"\r\n\r\n") > MAX_HEAD else data


async def route_stream(stream: trio.abc.Stream, files: StaticFiles) -> trio.abc.Stream | None:
    """Answer a plain HTTP request from ``files`` (and return None), or return the stream of a
    WebSocket upgrade, replaying what was read. The caller bounds the time this takes.
    """
    head = await _read_head(stream)
    if head == b"":
        return None
    if head is None:
        await _send_plain(stream, 431, "Request Header Fields Too Large")
        return None
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    connection.receive_data(head)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        await _send_plain(stream, 400, "Bad Request")
        return None
    if not isinstance(event, h11.Request):
        await _send_plain(stream, 400, "Bad Request")
        return None
    if _is_upgrade(event):
        return _ReplayStream(stream, head)
    await _answer(stream, connection, event, files)
    return None


async def _answer(
    stream: trio.abc.Stream, connection: h11.Connection, request: h11.Request, files: StaticFiles
) -> None:
    method = request.method
    target = request.target.decode("latin-1")
    if method not in (b"GET", b"HEAD"):
        await _respond(stream, connection, 405, b"Method Not Allowed\n", extra=[("Allow", "GET, HEAD")])
        return
    path = await trio.to_thread.run_sync(files.resolve, target)
    if path is None:
        logger.debug("static: 404 %s", target)
        await _respond(stream, connection, 404, b"Not Found\n", head_only=method == b"HEAD")
        return
    try:
        file = await trio.open_file(path, "rb")
    except OSError:
        await _respond(stream, connection, 404, b"Not Found\n", head_only=method == b"HEAD")
        return
    async with file:
        info = await trio.to_thread.run_sync(os.fstat, file.fileno())
        if not stat.S_ISREG(info.st_mode):
            await _respond(stream, connection, 404, b"Not Found\n", head_only=method == b"HEAD")
            return
        headers = [
            ("Content-Type", content_type(path)),
            ("Content-Length", str(info.st_size)),
            ("Last-Modified", email.utils.formatdate(info.st_mtime, usegmt=True)),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
        await stream.send_all(
            connection.send(h11.Response(status_code=200, headers=headers, reason=b"OK")) or b""
        )
        if method == b"GET":
            while chunk := await file.read(CHUNK):
                await stream.send_all(connection.send(h11.Data(data=chunk)) or b"")
        await stream.send_all(connection.send(h11.EndOfMessage()) or b"")


async def _respond(
    stream: trio.abc.Stream,
    connection: h11.Connection,
    status: int,
    body: bytes,
    *,
    extra: list[tuple[str, str]] | None = None,
    head_only: bool = False,
) -> None:
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *(extra or []),
    ]
    data = (
        connection.send(
            h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode())
        )
        or b""
    )
    if not head_only:
        data += connection.send(h11.Data(data=body)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def _send_plain(stream: trio.abc.Stream, status: int, phrase: str) -> None:
    body = f"{phrase}\n".encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    await stream.send_all(head + body)
