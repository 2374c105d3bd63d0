"""Every transport over loopback: handshakes, refusal, subprotocols, pings, limits, close codes.

The whole suite runs over one transport at a time (``pytest --transport=NAME``); these tests
cover each transport in every run, and what only the adapters themselves do.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_websocket

import trio_wswrapper as wsw
from trio_wswrapper import _transports
from trio_wswrapper._handshake import HandshakeFailed, RequestInfo

from .bounded import bound_tests

TIMEOUT = 10


@pytest.fixture(params=_transports.TRANSPORTS)
def name(request: pytest.FixtureRequest) -> _transports.TransportName:
    if request.param == "websockets":
        pytest.importorskip("websockets", reason="the websockets transport needs websockets>=17")
    return request.param  # type: ignore[no-any-return]


Handler = Callable[[RequestInfo, wsw.Transport], Awaitable[None]]


@asynccontextmanager
async def listener(
    name: _transports.TransportName,
    handler: Handler,
    *,
    check: _transports.RequestCheck | None = None,
    subprotocols: tuple[str, ...] = (),
    max_message_size: int = 1 << 20,
) -> AsyncIterator[int]:
    """A loopback listener running ``accept_stream`` on each connection; yields its port."""
    failures: list[BaseException] = []

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                try:
                    info, transport = await _transports.accept_stream(
                        name,
                        nursery,
                        stream,
                        max_message_size=max_message_size,
                        check=check,
                        subprotocols=subprotocols,
                    )
                except HandshakeFailed as exc:
                    failures.append(exc)
                else:
                    await handler(info, transport)
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve_one, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def echo_until_closed(info: RequestInfo, transport: wsw.Transport) -> None:
    try:
        while True:
            await transport.send(await transport.receive())  # type: ignore[arg-type]
    except wsw.TransportClosed:
        pass


async def expect_close(transport: wsw.Transport) -> None:
    with pytest.raises(wsw.TransportClosed):
        await transport.receive()


async def test_unknown_transport_is_refused(server: wsw.Server) -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        await server.serve("127.0.0.1", 0, transport="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown transport"):
        async with wsw.open_client("ws://127.0.0.1:1/", transport="nope"):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_request_over_each_transport(name: _transports.TransportName, nursery: trio.Nursery) -> None:
    server = wsw.Server(heartbeat_interval=None)
    server.on("echo", lambda x: x)
    port = await nursery.start(
        lambda task_status: server.serve("127.0.0.1", 0, transport=name, task_status=task_status)
    )
    with trio.fail_after(TIMEOUT):
        async with wsw.open_client(f"ws://127.0.0.1:{port}/", transport=name) as client:
            assert await client.request("echo", "hi") == "hi"
            big = "é" * 100_000  # up to 600 kB as JSON: many reads, possibly many frames
            assert await client.request("echo", big) == big


@pytest.mark.parametrize("server_transport", _transports.TRANSPORTS)
async def test_transports_interoperate(
    name: _transports.TransportName, server_transport: _transports.TransportName, nursery: trio.Nursery
) -> None:
    if server_transport == "websockets":
        pytest.importorskip("websockets")
    server = wsw.Server(heartbeat_interval=None)
    server.on("add", lambda a, b: a + b)
    closes: list[tuple[int, str]] = []
    closed = trio.Event()
    server.on("close", lambda c, code, reason, user: (closes.append((code, reason)), closed.set()))
    port = await nursery.start(
        lambda task_status: server.serve("127.0.0.1", 0, transport=server_transport, task_status=task_status)
    )
    with trio.fail_after(TIMEOUT):
        async with wsw.open_client(f"ws://127.0.0.1:{port}/", transport=name) as client:
            assert await client.request("add", 2, 3) == 5
            await client.aclose(4000, "bye")
        await closed.wait()
    assert closes == [(4000, "bye")]


async def test_handshake_sees_path_headers_and_subprotocols(name: _transports.TransportName) -> None:
    seen: list[RequestInfo] = []

    async def handler(info: RequestInfo, transport: wsw.Transport) -> None:
        seen.append(info)
        await echo_until_closed(info, transport)

    with trio.fail_after(TIMEOUT):
        async with (
            listener(name, handler, subprotocols=("two",)) as port,
            _transports.connect(
                name,
                f"ws://127.0.0.1:{port}/room?id=7",
                subprotocols=["one", "two"],
                extra_headers=[(b"x-token", b"secret")],
            ) as transport,
        ):
            await transport.send("ping?")
            assert await transport.receive() == "ping?"
            async with trio.open_nursery() as nursery:
                # Like the core's heartbeat, ping while a reader runs (it sees the pong).
                nursery.start_soon(expect_close, transport)
                await transport.ping()
                await transport.aclose()
    (info,) = seen
    assert info.path == "/room?id=7"
    assert info.subprotocols == ("one", "two")
    assert ("x-token", "secret") in [(k.lower(), v) for k, v in info.headers]
    assert "RequestInfo" in repr(info)


async def test_check_refuses_over_http(name: _transports.TransportName) -> None:
    async def refuse(info: RequestInfo) -> wsw.Reject | None:
        if info.path == "/private":
            return wsw.Reject(403, "go away", headers=[("X-Why", "private")])
        return None

    with trio.fail_after(TIMEOUT):
        async with listener(name, echo_until_closed, check=refuse) as port:
            with pytest.raises(wsw.ConnectionRejected) as info:
                async with wsw.open_client(f"ws://127.0.0.1:{port}/private", transport=name):
                    pass  # pragma: no cover
            assert (info.value.status, info.value.body) == (403, b"go away")
            assert ("x-why", "private") in info.value.headers
            async with _transports.connect(name, f"ws://127.0.0.1:{port}/public") as transport:
                await transport.send("ok")
                assert await transport.receive() == "ok"
                await transport.aclose()


async def test_connect_failures(name: _transports.TransportName) -> None:
    with trio.fail_after(TIMEOUT):
        # Nothing listens on this port once the listener is closed.
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await listeners[0].aclose()
        with pytest.raises(wsw.ConnectionClosed, match="cannot connect"):
            async with wsw.open_client(f"ws://127.0.0.1:{port}/", transport=name):
                pass  # pragma: no cover

        # A peer that is not a WebSocket server.
        async def not_http(stream: trio.SocketStream) -> None:
            await stream.send_all(b"SSH-2.0-nope\r\n\r\n")
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            (bad,) = await nursery.start(partial(trio.serve_tcp, not_http, 0, host="127.0.0.1"))
            url = f"ws://127.0.0.1:{bad.socket.getsockname()[1]}/"
            with pytest.raises((wsw.ConnectionClosed, HandshakeFailed, trio_websocket.HandshakeError)):
                async with wsw.open_client(url, transport=name):
                    pass  # pragma: no cover
            nursery.cancel_scope.cancel()


async def test_server_rejects_a_bad_handshake_without_failing(name: _transports.TransportName) -> None:
    handled = trio.Event()

    async def never(info: RequestInfo, transport: wsw.Transport) -> None:
        handled.set()  # pragma: no cover

    with trio.fail_after(TIMEOUT):
        async with listener(name, never) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # no Upgrade header
            reply = b""
            while True:
                data = await stream.receive_some()
                if not data:
                    break
                reply += data
                if b"\r\n\r\n" in reply and name != "trio-websocket":
                    break
            await stream.aclose()
            assert reply.startswith(b"HTTP/1.1 4") or reply == b""
    assert not handled.is_set()


async def test_oversized_message_closes_with_1009(name: _transports.TransportName) -> None:
    ended: list[wsw.TransportClosed] = []

    async def handler(info: RequestInfo, transport: wsw.Transport) -> None:
        try:
            await transport.receive()
        except wsw.TransportClosed as exc:
            ended.append(exc)

    with trio.fail_after(TIMEOUT):
        async with (
            listener(name, handler, max_message_size=100) as port,
            _transports.connect(name, f"ws://127.0.0.1:{port}/") as transport,
        ):
            await transport.send("x" * 101)
            with pytest.raises(wsw.TransportClosed) as info:
                await transport.receive()
    assert info.value.code == 1009
    assert [(e.code, e.reason) for e in ended] == [(1009, "Exceeded maximum message size: 100 bytes")]


async def test_peer_close_code_and_reason_reach_the_reader(name: _transports.TransportName) -> None:
    async def closer(info: RequestInfo, transport: wsw.Transport) -> None:
        assert await transport.receive() == "close me"
        await transport.aclose(4321, "as asked")

    with trio.fail_after(TIMEOUT):
        async with (
            listener(name, closer) as port,
            _transports.connect(name, f"ws://127.0.0.1:{port}/") as transport,
        ):
            await transport.send("close me")
            with pytest.raises(wsw.TransportClosed) as info:
                await transport.receive()
            with pytest.raises(wsw.TransportClosed):
                await transport.send("too late")
            await transport.aclose()  # already closed: a no-op
    assert (info.value.code, info.value.reason) == (4321, "as asked")


async def test_close_without_waiting_still_sends_the_close_frame(name: _transports.TransportName) -> None:
    got: list[tuple[int, str]] = []

    async def reader(info: RequestInfo, transport: wsw.Transport) -> None:
        try:
            await transport.receive()
        except wsw.TransportClosed as exc:
            got.append((exc.code, exc.reason))

    with trio.fail_after(TIMEOUT):
        async with listener(name, reader) as port:
            async with _transports.connect(name, f"ws://127.0.0.1:{port}/") as transport:
                await transport.aclose(1001, "going", wait=False)
            while not got:
                await trio.sleep(0.01)
    assert got == [(1001, "going")]


async def test_binary_messages_and_pings_from_the_peer(name: _transports.TransportName) -> None:
    websockets_client = pytest.importorskip("websockets.trio.client")

    async def echo_bytes(info: RequestInfo, transport: wsw.Transport) -> None:
        await echo_until_closed(info, transport)

    with trio.fail_after(TIMEOUT):
        async with (
            listener(name, echo_bytes) as port,
            websockets_client.connect(f"ws://127.0.0.1:{port}/", compression=None, proxy=None) as ws,
        ):
            pong = await ws.ping(b"are you there")
            await pong.wait()
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
            await ws.send(["frag", "mented"])  # one message in three frames
            assert await ws.recv() == "fragmented"


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client
    context that trusts only it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    return server_context, client_context


async def test_wss(
    name: _transports.TransportName, nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls
    server = wsw.Server(heartbeat_interval=None)
    server.on("echo", lambda x: x)
    port = await nursery.start(
        lambda task_status: server.serve(
            "127.0.0.1", 0, ssl_context=server_context, transport=name, task_status=task_status
        )
    )
    with trio.fail_after(TIMEOUT):
        async with wsw.open_client(
            f"wss://127.0.0.1:{port}/", ssl_context=client_context, transport=name
        ) as client:
            assert await client.request("echo", "secret") == "secret"


bound_tests(globals())
