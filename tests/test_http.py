"""Static files on the WebSocket port: Server(static=...) answering plain HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper._http import MAX_HEAD, StaticFiles

from .bounded import bound_tests

TIMEOUT = 10


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "js" / "app.mjs").write_text("export default 1")
    (root / "js" / "index.html").write_text("js index")
    (root / "style.css").write_text("body{}")
    (root / "data.bin").write_bytes(bytes(range(256)) * 1000)
    (root / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    (root / "link").symlink_to(tmp_path / "outside.txt")
    (root / "inner-link").symlink_to(root / "style.css")
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "lib.js").write_text("lib")
    return root


async def fetch(port: int, request: bytes) -> tuple[bytes, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(TIMEOUT):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


async def serve(nursery: trio.Nursery, site: Path, **kwargs: object) -> tuple[wsw.Server, int]:
    static = {"/": site, "/vendor/": site.parent / "vendor"}
    server = wsw.Server(heartbeat_interval=None, static=static, **kwargs)  # type: ignore[arg-type]
    server.on("echo", lambda x: x)
    return server, await nursery.start(server.serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("path", "status", "content_type", "body"),
    [
        ("/", 200, b"text/html; charset=utf-8", b"<h1>home</h1>"),
        ("/index.html?x=1", 200, b"text/html; charset=utf-8", b"<h1>home</h1>"),
        ("/js/app.mjs", 200, b"text/javascript; charset=utf-8", b"export default 1"),
        ("/js/", 200, b"text/html; charset=utf-8", b"js index"),
        ("/js", 200, b"text/html; charset=utf-8", b"js index"),
        ("/style.css", 200, b"text/css; charset=utf-8", b"body{}"),
        ("/inner-link", 200, None, b"body{}"),  # a link that stays inside is fine
        ("/vendor/lib.js", 200, b"text/javascript; charset=utf-8", b"lib"),
        ("/%73tyle.css", 200, b"text/css; charset=utf-8", b"body{}"),
        ("/missing.js", 404, None, None),
        ("/../outside.txt", 404, None, None),
        ("/js/../../outside.txt", 404, None, None),
        ("/%2e%2e/outside.txt", 404, None, None),
        ("/js%2f..%2f..%2foutside.txt", 404, None, None),
        ("/link", 404, None, None),  # a symbolic link leading outside
        ("/.secret", 404, None, None),
        ("/vendor/../site/index.html", 404, None, None),
        ("/nul%00.js", 404, None, None),
        ("/js\\..\\..\\outside.txt", 404, None, None),
    ],
)
async def test_files_and_refusals(
    nursery: trio.Nursery, site: Path, path: str, status: int, content_type: bytes | None, body: bytes | None
) -> None:
    _, port = await serve(nursery, site)
    head, got = await fetch(port, get(path))
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    if content_type is not None:
        assert b"content-type: " + content_type in head.lower()
    if body is not None:
        assert got == body
    assert b"outside" not in got


async def test_large_file_head_and_methods(nursery: trio.Nursery, site: Path) -> None:
    _, port = await serve(nursery, site)
    head, body = await fetch(port, get("/data.bin"))
    assert body == (site / "data.bin").read_bytes()
    assert b"content-length: 256000" in head.lower()
    assert b"application/octet-stream" in head
    head, body = await fetch(port, get("/data.bin", "HEAD"))
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b""
    assert b"content-length: 256000" in head.lower()
    head, _ = await fetch(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert head.startswith(b"HTTP/1.1 405 ") and b"allow: GET, HEAD" in head.lower().replace(
        b"get", b"GET"
    ).replace(b"head", b"HEAD")


async def test_malformed_and_oversized_requests(nursery: trio.Nursery, site: Path) -> None:
    server, port = await serve(nursery, site)
    head, _ = await fetch(port, b"NONSENSE\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    head, _ = await fetch(port, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    # none of it disturbed the WebSocket endpoint
    async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
        assert await client.request("echo", "still here") == "still here"
    assert server.static is not None and set(server.static) == {"/", "/vendor/"}


async def test_a_silent_client_is_dropped_after_the_connect_timeout(
    nursery: trio.Nursery, site: Path
) -> None:
    _, port = await serve(nursery, site, connect_timeout=0.2)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\n")  # and nothing more
        with trio.fail_after(TIMEOUT):
            assert await stream.receive_some() == b""


async def test_websocket_upgrades_still_reach_the_endpoint(nursery: trio.Nursery, site: Path) -> None:
    seen: list[wsw.Handshake] = []
    _, port = await serve(nursery, site, authorize=seen.append)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/ws?room=a", extra_headers=[(b"X-Y", b"z")]) as client:
        assert await client.request("echo", [1, 2]) == [1, 2]
    (handshake,) = seen
    assert handshake.path == "/ws?room=a" and handshake.header("x-y") == "z"
    assert handshake.remote is not None and handshake.remote[0] == "127.0.0.1"


def test_static_prefixes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        StaticFiles({"vendor/": tmp_path})
    files = StaticFiles(os.fspath(tmp_path))
    assert files.as_mapping() == {"/": tmp_path}
    assert files.resolve("/") is None  # no index.html
    assert files.resolve("relative") is None


bound_tests(globals())
