"""A real JavaScript ws-wrapper 3.0.3 client (Node.js) against our Server over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw

from .conftest import js_client

pytestmark = pytest.mark.interop


class Recorder:
    """What our server saw: events, lifecycle calls."""

    def __init__(self) -> None:
        self.notified: list[Any] = []
        self.closed: list[tuple[int, str, bool]] = []
        self.opened = 0
        self.changed = trio.Event()

    def note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()


def make_server(seen: Recorder) -> wsw.Server:
    # JS 3.x does not understand cancellations or anonymous channels (PROTOCOL §14).
    server = wsw.Server(peer_compat="v3", heartbeat_interval=None)

    @server.on("open")
    def opened(client: wsw.Client) -> None:
        seen.opened += 1
        seen.note()

    @server.on("close")
    def closed(client: wsw.Client, code: int, reason: str, user_closed: bool) -> None:
        seen.closed.append((code, reason, user_closed))
        seen.note()

    @server.on("echo")
    async def echo(x: Any) -> Any:
        await trio.sleep(0)
        return x

    server.on("add", lambda a, b: a + b)

    @server.on("fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    @server.on("reject_raw")
    def reject_raw(value: Any) -> None:
        raise wsw.RemoteError(value)

    @server.on("notify")
    def notify(*args: Any) -> None:
        seen.notified.append(list(args))
        seen.note()

    @server.on("ask_client")
    async def ask_client(q: str) -> Any:
        return await wsw.current_client().request("answer", q)

    @server.on("ask_client_fail")
    async def ask_client_fail(q: str) -> Any:
        try:
            await wsw.current_client().request("answer_fail", q)
        except wsw.RemoteError as exc:
            return {"caught": exc.message, "is_error": exc.is_error}
        return "no error"

    @server.on("broadcast")
    async def broadcast(event: str, arg: Any) -> int:
        failures = await server.emit(event, arg)
        failures += await server.of("room").emit(event, arg)
        return len(server.clients) - len(failures) // 2

    server.of("math").on("mul", lambda a, b: a * b)
    server.of("room").on("message", lambda text: f"room got {text}")
    return server


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Recorder, wsw.Server]]:
    seen = Recorder()
    server = make_server(seen)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield f"ws://127.0.0.1:{port}/", seen, server
        nursery.cancel_scope.cancel()


async def request(peer: Any, event: str, *args: Any, channel: str | None = None) -> Any:
    return await peer.command("request", channel=channel, event=event, args=list(args), timeout=5000)


@pytest.mark.parametrize(
    "value",
    [None, 0, False, "", "text ✓ \u2028", -1.5, 2**53 - 1, [1, [2, {"a": None}]], {"k": {"n": [True]}}],
)
async def test_requests_round_trip_json_values(served: Any, value: Any) -> None:
    url, _, _ = served
    async with js_client(url) as js:
        assert await request(js, "echo", value) == {"id": 1, "ok": True, "value": value}


async def test_requests_errors_and_channels(served: Any) -> None:
    url, _, _ = served
    async with js_client(url) as js:
        assert (await request(js, "add", 2, 40))["value"] == 42
        assert (await request(js, "mul", 6, 7, channel="math"))["value"] == 42
        assert (await request(js, "message", "hi", channel="room"))["value"] == "room got hi"

        failed = await request(js, "fail", "boom")
        assert failed["ok"] is False
        assert failed["error"]["isError"] is True
        assert failed["error"]["message"] == "boom"

        raw = await request(js, "reject_raw", {"code": 42})
        assert raw["ok"] is False
        assert raw["error"]["isError"] is False
        assert raw["error"]["raw"] == {"code": 42}

        # JS 3 turns a string rejection into an Error with that message (PROTOCOL §6.6).
        text = await request(js, "reject_raw", "oops")
        assert text["error"]["message"] == "oops"

        missing = await request(js, "nope")
        assert missing["error"]["message"] == "No event listener for 'nope'"
        missing = await request(js, "nope", channel="math")
        assert missing["error"]["message"] == "No event listener for 'nope' on channel 'math'"
        missing = await request(js, "x", channel="nochan")
        assert missing["error"]["message"] == "Channel 'nochan' does not exist"

        # Arity errors are ordinary rejections carrying Python's TypeError text.
        arity = await request(js, "add", 1)
        assert arity["ok"] is False
        assert "missing 1 required positional argument" in arity["error"]["message"]


async def test_events_and_server_to_client_requests(served: Any) -> None:
    url, seen, _ = served
    async with js_client(url) as js:
        assert await js.command("emit", channel=None, event="notify", args=["n1", 2]) == {
            "id": 1,
            "ok": True,
        }
        await seen.wait_for(lambda: seen.notified == [["n1", 2]])

        assert (await request(js, "ask_client", "q7"))["value"] == "js:q7"
        caught = (await request(js, "ask_client_fail", "q8"))["value"]
        assert caught == {"caught": "js refused q8", "is_error": True}


async def test_broadcast_reaches_every_js_client(served: Any) -> None:
    url, seen, server = served
    async with js_client(url) as first, js_client(url) as second:
        await seen.wait_for(lambda: len(server.clients) == 2)
        assert (await request(first, "broadcast", "news", {"n": 1}))["value"] == 2
        for js in (first, second):
            reply = await js.command("wait_events", count=2, timeout=5000)
            assert reply["ok"] is True
            assert sorted(reply["value"], key=str) == sorted(
                [[None, "news", [{"n": 1}]], ["room", "news", [{"n": 1}]]], key=str
            )


async def test_close_codes_reach_our_listeners(served: Any) -> None:
    url, seen, server = served
    async with js_client(url) as js:
        await seen.wait_for(lambda: seen.opened == 1)
        assert (await js.command("close", code=4001, reason="bye"))["ok"] is True
    await seen.wait_for(lambda: seen.closed == [(4001, "bye", False)])
    await seen.wait_for(lambda: not server.clients)


async def test_server_close_reaches_js_client(served: Any) -> None:
    url, seen, server = served
    async with js_client(url) as js:
        await seen.wait_for(lambda: seen.opened == 1)
        await server.aclose()
        with trio.fail_after(5):
            while True:
                state = (await js.command("state"))["value"]
                if state["closed"]:
                    break
                await trio.sleep(0.02)
        assert state["close"]["code"] == 1001
        assert state["close"]["reason"] == "server is closing"
    assert seen.closed == [(1001, "server is closing", False)]
