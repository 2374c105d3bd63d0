"""OrjsonCodec against the real JavaScript peers: its frames are plain JSON they accept."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw

from .conftest import js_client

pytestmark = pytest.mark.interop
pytest.importorskip("orjson")

VALUES = ["text ✓ \u2028 é 😀", 2**53 - 1, -1.5, [1, {"a": None}], {"k": [True, "ü"]}]


@pytest.fixture
async def served() -> AsyncIterator[str]:
    server = wsw.Server(peer_compat="v3", heartbeat_interval=None, codec=wsw.OrjsonCodec())
    server.on("echo", lambda x: x)
    server.on("nan", lambda: [math.nan, math.inf])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield f"ws://127.0.0.1:{port}/"
        nursery.cancel_scope.cancel()


async def test_js_client_reads_our_frames(served: str) -> None:
    async with js_client(served) as js:
        for value in VALUES:
            reply = await js.command("request", channel=None, event="echo", args=[value], timeout=5000)
            assert reply["ok"] and reply["value"] == value
        reply = await js.command("request", channel=None, event="nan", args=[], timeout=5000)
        assert reply["ok"] and reply["value"] == [None, None]


async def test_our_client_against_js_server(js_server: str) -> None:
    client = wsw.Client(options=wsw.Options(peer_compat="v3", request_timeout=5.0, codec=wsw.OrjsonCodec()))
    async with wsw.open_client(js_server, client=client):
        for value in VALUES:
            assert await client.request("echo", value) == value
        items: list[Any] = [{"id": i, "name": f"ü{i}"} for i in range(50)]
        assert await client.request("echo", items) == items
