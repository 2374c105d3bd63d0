"""Our Client against a real JavaScript ws-server-wrapper 1.6.1 server (Node.js) over loopback.

ws-server-wrapper 1.6.1 wraps each socket in ws-wrapper 2.2.0, which greets every client with
``{"a":["connect",null]}`` (a reserved name we must ignore, PROTOCOL §15) and pings every
``--heartbeat-ms`` (200 ms here), terminating clients that miss a pong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw

pytestmark = pytest.mark.interop


@asynccontextmanager
async def connect(url: str, **handlers: Any) -> AsyncIterator[wsw.Client]:
    client = wsw.Client(options=wsw.Options(peer_compat="v3", request_timeout=5.0))
    for name, fn in handlers.items():
        client.on(name, fn)
    async with wsw.open_client(url, client=client) as connected:
        yield connected


async def test_requests_and_rejections(js_server: str) -> None:
    async with connect(js_server) as client:
        assert await client.request("echo", {"k": [1, None, "x"]}) == {"k": [1, None, "x"]}
        assert await client.request("add", 2, 40) == 42
        assert await client.of("math").request("mul", 6, 7) == 42

        with pytest.raises(wsw.RemoteError) as failed:
            await client.request("fail", "boom")
        assert (failed.value.message, failed.value.is_error) == ("boom", True)
        assert failed.value.value == {"message": "boom"}

        with pytest.raises(wsw.RemoteError) as raw:
            await client.request("fail_string", "oops")
        assert (raw.value.value, raw.value.is_error, raw.value.message) == ("oops", False, "oops")

        with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'nope'$"):
            await client.request("nope")
        with pytest.raises(wsw.RemoteError, match=r"^Channel 'nochan' does not exist$"):
            await client.of("nochan").request("x")


async def test_server_asks_the_client(js_server: str) -> None:
    async def answer(q: str) -> str:
        assert wsw.current_client() is client
        return f"py:{q}"

    async with connect(js_server, answer=answer) as client:
        assert await client.request("ask_client", "q1") == "py:q1"


async def test_client_rejections_travel_back(js_server: str) -> None:
    def answer(kind: str) -> None:
        if kind == "error":
            raise KeyError("py no")
        raise wsw.RemoteError({"code": 7})

    async with connect(js_server, answer=answer) as client:
        with pytest.raises(wsw.RemoteError) as err:
            await client.request("ask_client", "error")
        assert err.value.message == "'py no'"
        with pytest.raises(wsw.RemoteError) as raw:
            await client.request("ask_client", "raw")
        assert (raw.value.value, raw.value.is_error) == ({"code": 7}, False)


async def test_broadcasts_and_events(js_server: str) -> None:
    received: list[tuple[str, Any]] = []
    both = trio.Event()

    def record(where: str) -> Any:
        def handler(arg: Any) -> None:
            received.append((where, arg))
            if len(received) == 2:
                both.set()

        return handler

    async with connect(js_server, news=record("root")) as client:
        client.of("room").on("news", record("room"))
        assert await client.request("please_broadcast", "news", {"n": 1}) == 1
        with trio.fail_after(5):
            await both.wait()
        assert sorted(received) == [("room", {"n": 1}), ("root", {"n": 1})]

        await client.emit("notify", "first")
        await client.emit("notify", ["second"])
        assert await client.request("last_notify") == ["first", ["second"]]


async def test_connect_greeting_is_ignored_and_heartbeat_answered(js_server: str) -> None:
    frames: list[Any] = []
    opened: list[wsw.Client] = []
    greeted = trio.Event()

    def on_message(client: wsw.Client, raw: Any) -> None:
        frames.append(raw)
        greeted.set()

    async with connect(js_server, message=on_message, connect=opened.append) as client:
        with trio.fail_after(5):
            await greeted.wait()
        # The greeting reached the raw-message hook but was not dispatched as "connect":
        # the lifecycle listener ran once, for our own open.
        assert frames[0] == '{"a":["connect",null]}'
        assert opened == [client]
        # Five heartbeat periods: ws-server-wrapper terminates clients that miss a pong.
        await trio.sleep(1.0)
        assert client.connected
        assert await client.request("echo", "still here") == "still here"
    assert opened == [client]


async def test_timeout_is_local_for_v3_peers(js_server: str) -> None:
    async with connect(js_server) as client:
        with pytest.raises(wsw.RequestTimeout, match="Request timed out"):
            await client.request("slow", 2000, "late", timeout=0.2)
        # No cancellation frame was sent (v3 mode), so the connection keeps working normally.
        assert await client.request("echo", 1) == 1


async def test_server_shutdown_is_seen_as_close(js_server: str) -> None:
    closed: list[tuple[int, str, bool]] = []
    async with connect(js_server) as client:
        client.on("close", lambda c, code, reason, user: closed.append((code, reason, user)))
        await client.aclose(4000, "done")
    assert closed == [(4000, "done", True)]


async def test_reconnecting_client_survives_a_server_restart() -> None:
    # The JS server exits (closing us with 1001) and a new one takes the same port: the
    # reconnecting client dials again, its handlers still answer, and emits made while it was
    # down reach the new server.
    from .conftest import run_node

    client = wsw.Client(options=wsw.Options(peer_compat="v3", request_timeout=5.0))
    client.on("answer", lambda q: f"re:{q}")
    closes: list[tuple[int, bool]] = []
    client.on("close", lambda c, code, reason, user: closes.append((code, user)))
    policy = wsw.Reconnect(initial_delay=0.05, max_delay=0.2)
    done = trio.Event()

    async def second_server(port: int, *, task_status: trio.TaskStatus[Any]) -> None:
        async with run_node("server_peer.js", "--heartbeat-ms", "200", "--port", str(port)) as second:
            task_status.started(await second.read_line())
            await done.wait()

    async with trio.open_nursery() as nursery, run_node("server_peer.js", "--heartbeat-ms", "200") as first:
        port = (await first.read_line())["port"]
        async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client, reconnect=policy):
            assert await client.request("ask_client", "one") == "re:one"
            await first.process.stdin.aclose()  # type: ignore[union-attr]
            with trio.fail_after(10):
                while client.connected:
                    await trio.sleep(0.01)
            await client.emit("notify", "while-down")
            assert await nursery.start(second_server, port) == {"port": port}
            with trio.fail_after(10):
                await client.wait_connected()
                assert await client.request("ask_client", "two") == "re:two"
                assert await client.request("last_notify") == ["while-down"]
        done.set()
    assert closes == [(1001, False), (1000, True)]
    assert all(type(code) is int for code, _ in closes)
