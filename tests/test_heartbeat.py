"""Heartbeats: WebSocket pings find a vanished peer on either side (PROTOCOL.md §13).

A vanished peer is simulated by a raw TCP peer that completes the opening handshake and then
never reads again, so it never answers a ping. Real time, short intervals, bounded waits.
"""

from __future__ import annotations

import base64
import hashlib
from functools import partial
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw

from .bounded import bound_tests

TIMEOUT = 10
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def read_head(stream: trio.abc.Stream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        assert chunk, "peer closed during the handshake"
        data += chunk
    return data


async def silent_client(port: int) -> trio.SocketStream:
    """Open a WebSocket to ``port`` by hand, then never read or answer anything again."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 101")
    return stream


async def test_server_closes_a_vanished_client_and_fails_its_requests(nursery: trio.Nursery) -> None:
    server = wsw.Server(heartbeat_interval=0.1, close_timeout=0.2)
    closed = trio.Event()
    record: dict[str, Any] = {}

    async def ask(client: wsw.Client) -> None:
        try:
            await client.request("are-you-there")
        except wsw.ConnectionClosed as exc:
            record["request"] = exc

    @server.on("open")
    def opened(client: wsw.Client) -> None:
        nursery.start_soon(ask, client)

    @server.on("error")
    def error(client: wsw.Client, exc: BaseException) -> None:
        record["error"] = exc

    @server.on("close")
    def close(client: wsw.Client, code: int, reason: str, user: bool) -> None:
        record["close"] = (code, reason, user)
        closed.set()

    port = await nursery.start(server.serve, "127.0.0.1", 0)
    stream = await silent_client(port)
    with trio.fail_after(TIMEOUT):
        await closed.wait()
    await stream.aclose()
    assert record["close"] == (1011, "keepalive ping timeout", False)
    assert isinstance(record["error"], wsw.ConnectionClosed) and record["error"].code == 1011
    assert record["request"].code == 1011
    assert server.clients == []


async def test_dialling_client_detects_a_vanished_server() -> None:
    streams: list[trio.SocketStream] = []

    async def silent_server(stream: trio.SocketStream) -> None:
        head = await read_head(stream)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        streams.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, silent_server, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        closes: list[tuple[int, str, bool]] = []
        client = wsw.Client(options=wsw.Options(heartbeat_interval=0.1, close_timeout=0.2))
        client.on("close", lambda c, code, reason, user: closes.append((code, reason, user)))
        with trio.fail_after(TIMEOUT):
            async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client):
                with pytest.raises(wsw.ConnectionClosed) as info:
                    await client.request("never-answered")
                assert info.value.code == 1011
                assert not client.connected
        assert closes == [(1011, "keepalive ping timeout", False)]
        nursery.cancel_scope.cancel()


async def test_heartbeats_keep_a_healthy_idle_connection(nursery: trio.Nursery) -> None:
    server = wsw.Server(heartbeat_interval=0.02)
    server.on("echo", lambda x: x)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", heartbeat_interval=0.02) as client:
        await trio.sleep(0.3)  # many pings each way while idle
        assert client.connected
        with trio.fail_after(TIMEOUT):
            assert await client.request("echo", "alive") == "alive"


def test_heartbeat_defaults() -> None:
    assert wsw.Server().options.heartbeat_interval == 60.0  # on by default for servers
    assert wsw.Options().heartbeat_interval is None  # off for dialling clients unless asked
    with pytest.raises(ValueError):
        wsw.Server(heartbeat_interval=0)


bound_tests(globals())
