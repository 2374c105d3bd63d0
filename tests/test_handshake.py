"""Handshake control: the authorize hook, the Origin allow-list and subprotocol choice."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio_websocket

import trio_wswrapper as wsw

from .bounded import bound_tests

TIMEOUT = 10


def url(port: int, path: str = "/") -> str:
    return f"ws://127.0.0.1:{port}{path}"


async def test_authorize_sees_the_request_and_handlers_see_its_result(nursery: trio.Nursery) -> None:
    seen: list[wsw.Handshake] = []

    def authorize(handshake: wsw.Handshake) -> dict[str, str]:
        seen.append(handshake)
        token = handshake.header("Authorization")
        if token != "Bearer s3cret":
            raise wsw.Reject(401, "bad token", headers=[("WWW-Authenticate", "Bearer")])
        return {"user": handshake.query["user"][0]}

    server = wsw.Server(heartbeat_interval=None, authorize=authorize)

    @server.on("whoami")
    def whoami() -> Any:
        client = wsw.current_client()
        assert client.handshake is not None
        return [client.auth["user"], client.handshake.path]

    port = await nursery.start(server.serve, "127.0.0.1", 0)
    headers = [(b"Authorization", b"Bearer s3cret"), (b"X-Trace", b"a"), (b"x-trace", b"b")]
    with trio.fail_after(TIMEOUT):
        async with wsw.open_client(url(port, "/chat?user=ann"), extra_headers=headers) as client:
            assert await client.request("whoami") == ["ann", "/chat?user=ann"]
        (handshake,) = seen
        assert handshake.header("x-trace") == "a, b"  # repeated headers joined, names folded
        assert handshake.header("missing", "dflt") == "dflt"
        assert handshake.origin is None
        assert handshake.remote is not None and handshake.remote[0] == "127.0.0.1"

        with pytest.raises(wsw.ConnectionRejected) as info:
            async with wsw.open_client(url(port), extra_headers=[(b"Authorization", b"wrong")]):
                pass  # pragma: no cover
    assert info.value.status == 401
    assert info.value.body == b"bad token"
    assert ("www-authenticate", "Bearer") in info.value.headers
    assert "HTTP 401: bad token" in str(info.value)
    assert server.clients == []


async def test_async_authorize_and_a_returned_reject(nursery: trio.Nursery) -> None:
    async def authorize(handshake: wsw.Handshake) -> Any:
        await trio.sleep(0)
        if handshake.path == "/closed":
            return wsw.Reject(404)  # returning a rejection works like raising it
        return "ok"

    server = wsw.Server(heartbeat_interval=None, authorize=authorize)
    server.on("auth", lambda: wsw.current_client().auth)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        async with wsw.open_client(url(port)) as client:
            assert await client.request("auth") == "ok"
        with pytest.raises(wsw.ConnectionRejected) as info:
            async with wsw.open_client(url(port, "/closed")):
                pass  # pragma: no cover
    assert info.value.status == 404
    assert info.value.body == b"Not Found"  # the status phrase when no body is given


async def test_a_failing_authorize_refuses_with_500_and_the_server_goes_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    def authorize(handshake: wsw.Handshake) -> None:
        if handshake.path == "/boom":
            raise RuntimeError("database down")

    server = wsw.Server(heartbeat_interval=None, authorize=authorize)
    server.on("echo", lambda x: x)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(wsw.ConnectionRejected) as info:
            async with wsw.open_client(url(port, "/boom")):
                pass  # pragma: no cover
        assert info.value.status == 500
        assert b"database" not in info.value.body  # no internal details to the peer
        async with wsw.open_client(url(port)) as client:
            assert await client.request("echo", 1) == 1
    assert any("authorize hook failed" in r.message for r in caplog.records if r.levelno == logging.ERROR)


async def test_a_slow_authorize_is_bounded_by_the_connect_timeout(nursery: trio.Nursery) -> None:
    async def authorize(handshake: wsw.Handshake) -> None:
        await trio.sleep_forever()

    server = wsw.Server(heartbeat_interval=None, authorize=authorize, connect_timeout=0.1)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT), pytest.raises(wsw.ConnectionClosed):
        async with wsw.open_client(url(port)):
            pass  # pragma: no cover


def test_reject_needs_an_error_status() -> None:
    with pytest.raises(ValueError):
        wsw.Reject(200)
    assert wsw.Reject(418).body == "I'm a Teapot"
    assert wsw.Reject(599).body == "Rejected"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser: no page to hijack from
        (b"https://app.example", True),
        (b"HTTPS://APP.EXAMPLE/", True),  # case and a trailing slash do not matter
        (b"https://evil.example", False),
        (b"https://app.example:8443", False),  # another port is another origin
        (b"null", False),
    ],
)
async def test_origin_allow_list(nursery: trio.Nursery, origin: bytes | None, allowed: bool) -> None:
    server = wsw.Server(heartbeat_interval=None, allowed_origins=["https://app.example"])
    server.on("echo", lambda x: x)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    headers = [] if origin is None else [(b"Origin", origin)]
    with trio.fail_after(TIMEOUT):
        if allowed:
            async with wsw.open_client(url(port), extra_headers=headers) as client:
                assert await client.request("echo", "in") == "in"
        else:
            with pytest.raises(wsw.ConnectionRejected) as info:
                async with wsw.open_client(url(port), extra_headers=headers):
                    pass  # pragma: no cover
            assert info.value.status == 403


async def test_origin_check_runs_before_authorize(nursery: trio.Nursery) -> None:
    calls: list[str] = []
    server = wsw.Server(
        heartbeat_interval=None, allowed_origins=["*"], authorize=lambda h: calls.append(h.origin or "")
    )
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        async with wsw.open_client(url(port), extra_headers=[(b"Origin", b"https://any.example")]):
            pass
    assert calls == ["https://any.example"]
    strict = wsw.Server(heartbeat_interval=None, allowed_origins=[], authorize=lambda h: calls.append("no"))
    port = await nursery.start(strict.serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT), pytest.raises(wsw.ConnectionRejected):
        async with wsw.open_client(url(port), extra_headers=[(b"Origin", b"https://any.example")]):
            pass  # pragma: no cover
    assert calls == ["https://any.example"]


async def test_subprotocol_negotiation(nursery: trio.Nursery) -> None:
    server = wsw.Server(heartbeat_interval=None, subprotocols=["wsw.v2", "wsw.v1"])
    server.on("proto", lambda: wsw.current_client().handshake.subprotocol)  # type: ignore[union-attr]
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        # the client's order of preference wins among those the server supports
        async with wsw.open_client(url(port), subprotocols=["chat", "wsw.v1", "wsw.v2"]) as client:
            assert await client.request("proto") == "wsw.v1"
        async with wsw.open_client(url(port), subprotocols=["chat"]) as client:
            assert await client.request("proto") is None
        async with trio_websocket.open_websocket_url(url(port), subprotocols=["wsw.v2"]) as ws:
            assert ws.subprotocol == "wsw.v2"


bound_tests(globals())
