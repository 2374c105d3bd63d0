"""End-to-end tests: a dialling client and a server, in process and over loopback TCP.

Most tests run twice through the ``connect`` fixture: once with ``open_test_client`` (a real
trio-websocket connection over in-memory streams) and once over a real socket on 127.0.0.1
(``server.serve`` plus ``wsw.open_client``). Tests that need virtual time run in memory only.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import trio_wswrapper as wsw
from trio_wswrapper.testing import open_raw_peer, open_test_client

TIMEOUT = 10  # seconds; every wait on real time is bounded by this


class Connect:
    """Opens clients to servers, in memory or over loopback (starting ``serve`` on demand)."""

    def __init__(self, kind: str, nursery: trio.Nursery) -> None:
        self.kind = kind
        self._nursery = nursery
        self._ports: dict[wsw.Server, int] = {}

    async def port(self, server: wsw.Server) -> int:
        if server not in self._ports:
            self._ports[server] = await self._nursery.start(server.serve, "127.0.0.1", 0)
        return self._ports[server]

    @asynccontextmanager
    async def __call__(
        self, server: wsw.Server, *, client: wsw.Client | None = None
    ) -> AsyncIterator[wsw.Client]:
        if self.kind == "memory":
            async with open_test_client(server, client=client) as connected:
                yield connected
        else:
            port = await self.port(server)
            async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client) as connected:
                yield connected


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so a leaked socket fails the test that leaked it."""
    yield
    gc.collect()


@pytest.fixture(params=["memory", "loopback"])
def connect(request: pytest.FixtureRequest, nursery: trio.Nursery) -> Connect:
    return Connect(request.param, nursery)


class Calls:
    """A recording callable whose calls can be awaited."""

    def __init__(self, result: Any = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._result = result
        self._changed = trio.Event()

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        self._changed.set()
        self._changed = trio.Event()
        return self._result

    async def wait(self, count: int = 1) -> list[tuple[Any, ...]]:
        with trio.fail_after(TIMEOUT):
            while len(self.calls) < count:
                await self._changed.wait()
        return self.calls


def server_side(server: wsw.Server) -> Calls:
    """Record the server-side client of every connection as its ``open`` listeners run."""
    opened = Calls()
    server.on("open", opened)
    return opened


def _raise(exc: BaseException) -> Any:
    raise exc


# ---------------------------------------------------------------------------------------------
# Handlers


async def test_sync_and_async_handlers(connect: Connect, server: wsw.Server) -> None:
    server.on("add", lambda a, b: a + b)

    @server.on("mul")
    async def mul(a: int, b: int) -> int:
        await trio.sleep(0)
        return a * b

    @server.on("fail")
    async def fail(text: str) -> None:
        await trio.sleep(0)
        raise ValueError(text)

    async with connect(server) as client:
        with trio.fail_after(TIMEOUT):
            assert await client.request("add", 2, 3) == 5
            assert await client.request("mul", 2, 3) == 6
            assert await client.request("add", "a", "b") == "ab"
            with pytest.raises(wsw.RemoteError) as info:
                await client.request("fail", "boom")
            assert info.value.message == "boom"
            assert await client.request("add", [1], [2]) == [1, 2]


async def test_decorator_and_call_forms(connect: Connect, server: wsw.Server) -> None:
    def one() -> str:
        return "one"

    def two() -> str:
        return "two"

    @server.on("deco")
    def deco() -> str:
        return "deco"

    assert deco() == "deco"  # the decorator returns the function unchanged
    assert server.on("call", one) is one
    assert server.once("once_call", two) is two

    @server.once("once_deco")
    async def once_deco() -> str:
        return "once deco"

    async with connect(server) as client:
        with trio.fail_after(TIMEOUT):
            assert await client.request("deco") == "deco"
            assert await client.request("call") == "one"
            assert await client.request("once_call") == "two"
            assert await client.request("once_deco") == "once deco"
            for name in ["once_call", "once_deco"]:
                with pytest.raises(wsw.RemoteError, match=rf"^No event listener for '{name}'$"):
                    await client.request(name)

            server.off("call", two)  # a different function: nothing removed
            assert await client.request("call") == "one"
            server.off("call", one)
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'call'$"):
                await client.request("call")
            server.off("deco")
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'deco'$"):
                await client.request("deco")
            server.once("gone", one)
            server.off("gone")
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'gone'$"):
                await client.request("gone")
            server.off("never registered")  # no error


async def test_client_handler_forms(connect: Connect, server: wsw.Server) -> None:
    @server.on("ask")
    async def ask(name: str, *args: Any) -> Any:
        return await wsw.current_client().request(name, *args)

    client = wsw.Client()

    @client.on("double")
    def double(x: int) -> int:
        return 2 * x

    client.once("first", lambda: "first only")
    assert client.on("neg", lambda x: -x) is not None

    async with connect(server, client=client):
        with trio.fail_after(TIMEOUT):
            assert await client.request("ask", "double", 21) == 42
            assert await client.request("ask", "neg", 1) == -1
            assert await client.request("ask", "first") == "first only"
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'first'$"):
                await client.request("ask", "first")
            client.off("double")
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'double'$"):
                await client.request("ask", "double", 1)


async def test_server_once_fires_once_for_the_whole_server(connect: Connect, server: wsw.Server) -> None:
    server.once("hi", lambda: "hello")
    seen = Calls()
    server.once("note", seen)
    async with connect(server) as first, connect(server) as second:
        with trio.fail_after(TIMEOUT):
            assert await first.request("hi") == "hello"
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'hi'$"):
                await second.request("hi")
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'hi'$"):
                await first.request("hi")
            await second.emit("note", 1)
            await seen.wait(1)
            await first.emit("note", 2)
            await second.emit("note", 3)
            # a request behind the events proves they were processed
            with pytest.raises(wsw.RemoteError):
                await first.request("hi")
            with pytest.raises(wsw.RemoteError):
                await second.request("hi")
    assert seen.calls == [(1,)]


async def test_client_once_fires_once_per_client(connect: Connect, server: wsw.Server) -> None:
    @server.on("open")
    def opened(client: wsw.Client) -> None:
        client.once("hi", lambda: f"hello {id(client)}")

    async with connect(server) as first, connect(server) as second:
        with trio.fail_after(TIMEOUT):
            a = await first.request("hi")
            b = await second.request("hi")
            assert a != b
            assert a.startswith("hello ")
            assert b.startswith("hello ")
            for client in (first, second):
                with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'hi'$"):
                    await client.request("hi")


async def _precedence(client: wsw.Client, server_client: wsw.Client, channel: str | None) -> list[Any]:
    def target(obj: Any) -> Any:
        return obj if channel is None else obj.of(channel)

    async def ask() -> Any:
        try:
            if channel is None:
                return await client.request("x")
            return await client.of(channel).request("x")
        except wsw.RemoteError as exc:
            return exc.message

    answers = []
    answers.append(await ask())  # all four registered
    answers.append(await ask())  # connection once consumed
    target(server_client).off("x")
    answers.append(await ask())
    answers.append(await ask())
    target(server_client).on("x", lambda: "connection on again")
    answers.append(await ask())
    return answers


@pytest.mark.parametrize("channel", [None, "ch"])
async def test_handler_precedence(connect: Connect, server: wsw.Server, channel: str | None) -> None:
    """connection once > connection on > server once > server on (§7.1)."""
    opened = server_side(server)
    shared = server if channel is None else server.of(channel)
    shared.on("x", lambda: "server on")
    shared.once("x", lambda: "server once")
    async with connect(server) as client:
        ((server_client,),) = await opened.wait()
        own = server_client if channel is None else server_client.of(channel)
        own.on("x", lambda: "connection on")
        own.once("x", lambda: "connection once")
        with trio.fail_after(TIMEOUT):
            answers = await _precedence(client, server_client, channel)
    assert answers == ["connection once", "connection on", "server once", "server on", "connection on again"]


async def test_reregistration_replaces(connect: Connect, server: wsw.Server) -> None:
    server.on("x", lambda: "first")
    server.on("x", lambda: "second")
    server.once("y", lambda: "first once")
    server.once("y", lambda: "second once")
    server.of("c").on("x", lambda: "c first")
    server.of("c").on("x", lambda: "c second")
    async with connect(server) as client:
        with trio.fail_after(TIMEOUT):
            assert await client.request("x") == "second"
            assert await client.request("y") == "second once"
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'y'$"):
                await client.request("y")
            assert await client.of("c").request("x") == "c second"


async def test_current_client(connect: Connect, server: wsw.Server) -> None:
    seen: list[wsw.Client] = []

    @server.on("who")
    def who() -> int:
        seen.append(wsw.current_client())
        return len(seen)

    @server.on("who_async")
    async def who_async() -> int:
        await trio.sleep(0)
        seen.append(wsw.current_client())
        return len(seen)

    @server.on("open")
    def opened(client: wsw.Client) -> None:
        seen.append(wsw.current_client())

    client = wsw.Client()
    client.on("me", lambda: wsw.current_client() is client)

    @server.on("ask_me")
    async def ask_me() -> Any:
        return await wsw.current_client().request("me")

    with pytest.raises(RuntimeError):
        wsw.current_client()
    async with connect(server, client=client), connect(server) as other:
        with trio.fail_after(TIMEOUT):
            await client.request("who")
            await other.request("who_async")
            await client.request("who_async")
            assert await client.request("ask_me") is True
        with pytest.raises(RuntimeError):
            wsw.current_client()
    first, second, a, b, c = seen
    assert first is a is c
    assert second is b
    assert first is not second
    assert first is not client
    assert first.server is server
    assert client.server is None


async def test_server_to_client_requests(connect: Connect, server: wsw.Server) -> None:
    @server.on("relay")
    async def relay(name: str, *args: Any) -> Any:
        return await wsw.current_client().request(name, *args)

    client = wsw.Client()

    @client.on("square")
    async def square(x: int) -> int:
        await trio.sleep(0)
        return x * x

    @client.on("fail")
    def fail() -> None:
        raise KeyError("nope")

    client.on("raw", lambda: _raise(wsw.RemoteError({"code": 9})))

    async with connect(server, client=client):
        with trio.fail_after(TIMEOUT):
            assert await client.request("relay", "square", 7) == 49
            # the client handler's failure travels to the server and is forwarded back unchanged
            with pytest.raises(wsw.RemoteError) as info:
                await client.request("relay", "fail")
            assert (info.value.message, info.value.value, info.value.is_error) == (
                "'nope'",
                {"message": "'nope'"},
                True,
            )
            with pytest.raises(wsw.RemoteError) as info:
                await client.request("relay", "raw")
            assert (info.value.value, info.value.is_error) == ({"code": 9}, False)
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'missing'$"):
                await client.request("relay", "missing")


@pytest.mark.parametrize(
    ("fn", "message", "value", "is_error"),
    [
        (lambda: _raise(ValueError("boom")), "boom", {"message": "boom"}, True),
        (lambda: _raise(ValueError()), "ValueError", {"message": "ValueError"}, True),
        (lambda: _raise(wsw.RemoteError("raw")), "raw", "raw", False),
        (lambda: _raise(wsw.RemoteError({"code": 1})), '{"code":1}', {"code": 1}, False),
        (lambda: _raise(wsw.RemoteError(None)), "Error", {"message": "Error"}, True),
        (lambda: _raise(wsw.RemoteError(5)), "5", 5, False),
        (lambda: _raise(wsw.RemoteError([1, "a"])), '[1,"a"]', [1, "a"], False),
        (
            lambda: _raise(wsw.RemoteError({"message": "m", "x": 1}, is_error=True)),
            "m",
            {"message": "m", "x": 1},
            True,
        ),
        (object, "Object of type object is not JSON serializable", None, True),
    ],
)
async def test_remote_error_attributes(
    connect: Connect, server: wsw.Server, fn: Any, message: str, value: Any, is_error: bool
) -> None:
    server.on("it", fn)
    async with connect(server) as client:
        with trio.fail_after(TIMEOUT), pytest.raises(wsw.RemoteError) as info:
            await client.request("it")
    error = info.value
    assert error.message == message
    assert str(error) == message
    assert error.value == ({"message": message} if value is None else value)
    assert error.is_error is is_error
    assert isinstance(error, wsw.WSWrapperError)


async def test_client_data(connect: Connect, server: wsw.Server) -> None:
    counter = iter(range(1, 100))

    @server.on("open")
    def opened(client: wsw.Client) -> None:
        assert client.data == {}
        client.data["n"] = next(counter)

    @server.on("whoami")
    def whoami() -> int:
        return wsw.current_client().data["n"]

    async with connect(server) as first, connect(server) as second:
        with trio.fail_after(TIMEOUT):
            assert await first.request("whoami") == 1
            assert await second.request("whoami") == 2
            assert await first.request("whoami") == 1
        first.data["mine"] = True
        assert first.data == {"mine": True}
        assert second.data == {}


# ---------------------------------------------------------------------------------------------
# Named channels (§11)


async def test_named_channels_both_ways(connect: Connect, server: wsw.Server) -> None:
    math = server.of("math")
    math.on("mul", lambda a, b: a * b)
    notes = Calls()
    math.on("note", notes)
    assert server.of("math") is math

    @server.on("push")
    async def push() -> Any:
        news = wsw.current_client().of("news")
        await news.emit("headline", "hi")
        return await news.request("ack", 1)

    client = wsw.Client()
    headlines = Calls()
    client.of("news").on("headline", headlines)
    client.of("news").on("ack", lambda n: n + 1)
    client.on("ack", lambda n: "root ack")  # same name on the root: a different handler

    async with connect(server, client=client):
        with trio.fail_after(TIMEOUT):
            assert client.of("math") is client.of("math")
            assert await client.of("math").request("mul", 6, 7) == 42
            await client.of("math").emit("note", "n")
            assert await notes.wait() == [("n",)]
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'mul'$"):
                await client.request("mul", 1, 2)
            with pytest.raises(wsw.RemoteError, match=r"^Channel 'other' does not exist$"):
                await client.of("other").request("mul", 1, 2)
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'div' on channel 'math'$"):
                await client.of("math").request("div", 1, 2)
            assert await client.request("push") == 2
            assert await headlines.wait() == [("hi",)]
            assert await server.of("news").emit("headline", "all") == []
            assert await headlines.wait(2) == [("hi",), ("all",)]


async def test_named_channel_close_on_client(connect: Connect, server: wsw.Server) -> None:
    release = trio.Event()

    @server.of("room").on("slow")
    async def slow() -> str:
        await release.wait()
        return "slow done"

    @server.on("ask")
    async def ask(name: str) -> Any:
        return await wsw.current_client().of("room").request(name)

    @server.on("tell")
    async def tell() -> None:
        await wsw.current_client().of("room").emit("ping")

    client = wsw.Client()
    room = client.of("room")
    pings = Calls("pong")
    room.on("ping", pings)

    async with connect(server, client=client):
        with trio.fail_after(TIMEOUT):
            assert await client.request("ask", "ping") == "pong"
            async with trio.open_nursery() as nursery:
                results: list[str] = []

                async def in_flight() -> None:
                    results.append(await room.request("slow"))

                nursery.start_soon(in_flight)
                await trio.testing.wait_all_tasks_blocked()
                room.close()
                room.close()  # idempotent
                with pytest.raises(wsw.ChannelClosed):
                    await room.emit("x")
                with pytest.raises(wsw.ChannelClosed):
                    await room.request("x")
                with pytest.raises(wsw.ChannelClosed):
                    room.on("x", print)
                release.set()
            assert results == ["slow done"]  # requests in flight are unaffected

            # inbound traffic for the closed channel: requests rejected, events dropped
            with pytest.raises(wsw.RemoteError, match=r"^Channel 'room' does not exist$"):
                await client.request("ask", "ping")
            await client.request("tell")
            # of() afterwards creates a fresh channel without the old handlers
            fresh = client.of("room")
            assert fresh is not room
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'ping' on channel 'room'$"):
                await client.request("ask", "ping")
            fresh.on("ping", lambda: "fresh pong")
            assert await client.request("ask", "ping") == "fresh pong"
    assert pings.calls == [()]


async def test_named_channel_close_on_server(connect: Connect, server: wsw.Server) -> None:
    room = server.of("room")
    room.on("x", lambda: "x")
    async with connect(server) as client:
        with trio.fail_after(TIMEOUT):
            assert await client.of("room").request("x") == "x"
            room.close()
            with pytest.raises(wsw.RemoteError, match=r"^Channel 'room' does not exist$"):
                await client.of("room").request("x")
            with pytest.raises(wsw.ChannelClosed):
                await room.emit("x")
            again = server.of("room")
            assert again is not room
            with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'x' on channel 'room'$"):
                await client.of("room").request("x")


# ---------------------------------------------------------------------------------------------
# Names and arguments checked locally (§1.1, §5)


RESERVED = ["open", "connect", "message", "error", "close", "disconnect"]


async def test_reserved_names_raise_on_root_but_work_on_channels(
    connect: Connect, server: wsw.Server
) -> None:
    frames = Calls()
    server.on("message", lambda client, payload: frames(payload))
    chat = server.of("chat")
    for name in RESERVED:
        chat.on(name, lambda x, _n=name: f"{_n} {x}")

    @server.on("echo_back")
    async def echo_back(name: str) -> Any:
        return await wsw.current_client().of("chat").request(name, "back")

    client = wsw.Client()
    for name in RESERVED:
        client.of("chat").on(name, lambda x, _n=name: f"client {_n} {x}")

    async with connect(server, client=client):
        with trio.fail_after(TIMEOUT):
            for name in RESERVED:
                with pytest.raises(ValueError, match="reserved"):
                    await client.emit(name, 1)
                with pytest.raises(ValueError, match="reserved"):
                    await client.request(name, 1)
                with pytest.raises(ValueError, match="reserved"):
                    await server.emit(name, 1)
            assert frames.calls == []  # nothing was sent
            for name in RESERVED:
                assert await client.of("chat").request(name, 1) == f"{name} 1"
                assert await client.request("echo_back", name) == f"client {name} back"
            assert await server.of("chat").emit("message", "to all") == []
            await client.of("chat").emit("close", "event")
            # per name: the channel request, the echo_back request and the answer to the server
            received = await frames.wait(3 * len(RESERVED) + 1)
            assert received[-1] == ('{"a":["close","event"],"c":"chat"}',)
            assert len(received) == 3 * len(RESERVED) + 1


async def test_empty_and_non_string_names_raise(connect: Connect, server: wsw.Server) -> None:
    async with connect(server) as client:
        for call in [
            lambda: client.emit(""),
            lambda: client.request(""),
            lambda: client.of("c").emit(""),
            lambda: client.of("c").request(""),
            lambda: server.emit(""),
            lambda: server.of("c").emit(""),
        ]:
            with pytest.raises(ValueError, match="empty"):
                await call()
        for sync in [
            lambda: client.on("", print),
            lambda: client.once("", print),
            lambda: client.of(""),
            lambda: server.on("", print),
            lambda: server.once("", print),
            lambda: server.of(""),
            lambda: server.of("c").on("", print),
        ]:
            with pytest.raises(ValueError, match="empty"):
                sync()
        for call in [lambda: client.emit(5), lambda: client.request(None)]:  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await call()
        for sync in [lambda: client.of(5), lambda: server.of(b"c"), lambda: server.on(5, print)]:  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                sync()
        assert client.statistics().pending_requests == 0


async def test_unencodable_arguments_raise_locally_and_send_nothing(
    connect: Connect, server: wsw.Server
) -> None:
    frames = Calls()
    server.on("message", lambda client, payload: frames(payload))
    server.on("echo", lambda *args: list(args))
    async with connect(server) as client:
        with trio.fail_after(TIMEOUT):
            with pytest.raises(TypeError):
                await client.emit("echo", object())
            with pytest.raises(TypeError):
                await client.request("echo", {1, 2})
            with pytest.raises(ValueError):
                await client.request("echo", float("nan"))
            with pytest.raises(ValueError):
                await client.emit("echo", [float("inf")])
            with pytest.raises(ValueError):
                await client.of("c").request("echo", {"v": float("-inf")})
            with pytest.raises(TypeError):
                await server.emit("echo", object())
            with pytest.raises(ValueError):
                await server.of("c").emit("echo", float("nan"))
            assert client.statistics().pending_requests == 0
            assert await client.request("echo", None, 2**60, "é") == [None, 2**60, "é"]
            ((payload,),) = await frames.wait()
    assert frames.calls == [(payload,)]
    assert payload.startswith('{"a":["echo",null,1152921504606846976,"\\u00e9"],"i":')


# ---------------------------------------------------------------------------------------------
# Broadcast, clients, statistics


async def test_broadcast(connect: Connect, server: wsw.Server) -> None:
    firsts, seconds = Calls(), Calls()
    first_client, second_client = wsw.Client(), wsw.Client()
    first_client.on("news", firsts)
    second_client.on("news", seconds)
    first_client.of("room").on("news", firsts)
    opened = server_side(server)
    async with connect(server, client=first_client), connect(server, client=second_client):
        await opened.wait(2)
        with trio.fail_after(TIMEOUT):
            assert await server.emit("news", 1, "a") == []
            assert await server.of("room").emit("news", 2) == []
            assert await firsts.wait(2) == [(1, "a"), (2,)]
            assert await seconds.wait(1) == [(1, "a")]
            # second_client has no "room" channel: the event is dropped there
            await server.emit("news", 3)
            await firsts.wait(3)
            await seconds.wait(2)
    assert seconds.calls == [(1, "a"), (3,)]


async def test_broadcast_reports_full_and_closed_clients(autojump_clock: MockClock) -> None:
    """A client with a full send queue misses the event and is reported; others get it (§13)."""
    server = wsw.Server(heartbeat_interval=None, send_queue_size=1)
    opened = server_side(server)
    received = Calls()
    reader = wsw.Client()
    reader.on("news", received)
    async with open_raw_peer(server) as stalled, open_test_client(server, client=reader):
        ((stalled_side,), (reader_side,)) = await opened.wait(2)
        assert server.clients == [stalled_side, reader_side]
        failures: list[Any] = []
        sent = 0
        with trio.fail_after(1):  # broadcasts never wait on the stalled client
            while not failures:
                sent += 1
                failures = await server.emit("news", sent)
                await received.wait(sent)
        assert [(client, type(exc)) for client, exc in failures] == [(stalled_side, trio.WouldBlock)]
        assert sent > 2
        room_failures = await server.of("room").emit("x")
        assert [(c, type(e)) for c, e in room_failures] == [(stalled_side, trio.WouldBlock)]
        # a client that is closing (its close waits for the queue to drain) is reported as
        # ConnectionClosed, and still the others receive
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stalled_side.aclose, 4000, "stalled")
            await trio.sleep(1)  # less than the close timeout: the close is still draining
            assert stalled_side in server.clients
            failures = await server.emit("news", "late")
            assert [(c, type(e)) for c, e in failures] == [(stalled_side, wsw.ConnectionClosed)]
            await received.wait(sent + 1)
            # the stalled peer got every frame but the missed ones, in order, then the close
            got = [await stalled.receive_json() for _ in range(sent - 1)]
            assert got == [{"a": ["news", n]} for n in range(1, sent)]
        assert received.calls == [*[(n,) for n in range(1, sent + 1)], ("late",)]
        with pytest.raises(wsw.TransportClosed) as info:
            await stalled.receive()
        assert (info.value.code, info.value.reason) == (4000, "stalled")


async def test_clients_and_statistics(connect: Connect, server: wsw.Server) -> None:
    release = trio.Event()
    opened = server_side(server)
    closed = Calls()
    server.on("close", closed)
    server.on("wait", release.wait)
    empty = wsw.ServerStatistics(0, 0, 0, 0, 0, 0)
    assert server.clients == []
    assert server.statistics() == empty
    async with connect(server) as first:
        async with connect(server) as second:
            ((a,), (b,)) = await opened.wait(2)
            assert server.clients == [a, b]
            assert server.statistics() == wsw.ServerStatistics(2, 0, 0, 0, 0, 0)
            assert first.statistics() == wsw.ClientStatistics(True, 0, 0, 0, 0, 0, 0, 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first.request, "wait")
                nursery.start_soon(first.request, "wait")
                nursery.start_soon(second.request, "wait")
                with trio.fail_after(TIMEOUT):
                    while server.statistics().running_handlers < 3:
                        await trio.sleep(0.001)
                assert server.statistics() == wsw.ServerStatistics(2, 0, 3, 3, 0, 0)
                assert a.statistics() == wsw.ClientStatistics(True, 0, 2, 2, 0, 0, 0, 1)
                assert first.statistics() == wsw.ClientStatistics(True, 2, 0, 0, 0, 0, 0, 1)
                release.set()
            assert first.statistics() == wsw.ClientStatistics(True, 0, 0, 0, 0, 0, 0, 1)
        await closed.wait(1)
        assert server.clients == [a]
        assert second.statistics() == wsw.ClientStatistics(False, 0, 0, 0, 0, 0, 0, 1)
        assert not second.connected
        assert first.connected
    await closed.wait(2)
    assert server.clients == []
    assert server.statistics() == empty


# ---------------------------------------------------------------------------------------------
# Lifecycle (§12)


async def test_open_listener_runs_before_first_frame(connect: Connect, server: wsw.Server) -> None:
    @server.on("open")
    async def opened(client: wsw.Client) -> None:
        await trio.sleep(0.05)
        client.on("late", lambda: "registered in open")
        client.data["ready"] = True
        await client.emit("welcome", "hi")

    client = wsw.Client()
    welcomes = Calls()
    client.on("welcome", welcomes)
    async with connect(server, client=client):
        with trio.fail_after(TIMEOUT):
            assert await client.request("late") == "registered in open"
            assert welcomes.calls == [("hi",)]  # the welcome was written before the answer


async def test_open_failure_closes_with_1011(connect: Connect, server: wsw.Server) -> None:
    @server.on("connect")
    def opened(client: wsw.Client) -> None:
        raise RuntimeError("refused")

    server_closed = Calls()
    server.on("close", server_closed)
    client = wsw.Client()
    client_closed = Calls()
    client.on("close", client_closed)
    server.on("echo", lambda x: x)
    async with connect(server, client=client):
        assert await client_closed.wait() == [(client, 1011, "internal error", False)]
        with pytest.raises(wsw.ConnectionClosed) as info:
            await client.request("echo", 1)
        assert info.value.code == 1011
    ((_, *args),) = await server_closed.wait()
    assert args == [1011, "internal error", False]


async def test_close_by_client(connect: Connect, server: wsw.Server) -> None:
    server_closed, server_disconnected = Calls(), Calls()
    server.on("close", server_closed)
    server.on("disconnect", server_disconnected)
    errors = Calls()
    server.on("error", errors)
    opened = server_side(server)

    client = wsw.Client()
    both = Calls()
    client.on("close", both)
    client.on("disconnect", both)  # the same function under both aliases runs once
    async with connect(server, client=client):
        ((server_client,),) = await opened.wait()
        with trio.fail_after(TIMEOUT):
            await client.aclose(4000, "bye")
        assert both.calls == [(client, 4000, "bye", True)]
        assert not client.connected
        await client.aclose(1000, "again")  # closing a closed client does nothing
    assert await server_closed.wait() == [(server_client, 4000, "bye", False)]
    assert await server_disconnected.wait() == [(server_client, 4000, "bye", False)]
    assert both.calls == [(client, 4000, "bye", True)]
    assert errors.calls == []


async def test_close_by_leaving_the_block(connect: Connect, server: wsw.Server) -> None:
    server_closed = Calls()
    server.on("close", server_closed)
    client = wsw.Client()
    client_closed = Calls()
    client.on("close", client_closed)
    async with connect(server, client=client):
        pass
    assert client_closed.calls == [(client, 1000, "", True)]
    ((_, *args),) = await server_closed.wait()
    assert args == [1000, "", False]


async def test_close_by_server_side_client(connect: Connect, server: wsw.Server) -> None:
    server_closed = Calls()
    server.on("close", server_closed)
    opened = server_side(server)
    client = wsw.Client()
    client_closed = Calls()
    client.on("close", client_closed)
    async with connect(server, client=client):
        ((server_client,),) = await opened.wait()
        with trio.fail_after(TIMEOUT):
            await server_client.aclose(4100, "kicked")
        assert server_closed.calls == [(server_client, 4100, "kicked", True)]
        assert await client_closed.wait() == [(client, 4100, "kicked", False)]
        with pytest.raises(wsw.ConnectionClosed):
            await client.emit("x")
    assert client_closed.calls == [(client, 4100, "kicked", False)]
    assert len(server_closed.calls) == 1


async def test_server_aclose(connect: Connect, server: wsw.Server) -> None:
    server_closed = Calls()
    server.on("close", server_closed)
    errors = Calls()
    server.on("error", errors)
    opened = server_side(server)
    first, second = wsw.Client(), wsw.Client()
    first_closed, second_closed = Calls(), Calls()
    first.on("close", first_closed)
    second.on("close", second_closed)
    async with connect(server, client=first), connect(server, client=second):
        ((a,), (b,)) = await opened.wait(2)
        with trio.fail_after(TIMEOUT):
            await server.aclose()
        assert sorted(server_closed.calls, key=lambda c: c[0] is b) == [
            (a, 1001, "server is closing", False),
            (b, 1001, "server is closing", False),
        ]
        assert await first_closed.wait() == [(first, 1001, "server is closing", False)]
        assert await second_closed.wait() == [(second, 1001, "server is closing", False)]
        with pytest.raises(wsw.ConnectionClosed):
            await first.request("x")
        assert server.clients == []
    assert errors.calls == []
    assert len(server_closed.calls) == 2


async def test_server_aclose_stops_serving(nursery: trio.Nursery, server: wsw.Server) -> None:
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
        with trio.fail_after(TIMEOUT):
            await server.aclose()
            while client.connected:
                await trio.sleep(0.001)
    with trio.fail_after(TIMEOUT), pytest.raises(wsw.ConnectionClosed):
        async with wsw.open_client(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover


async def test_pending_requests_fail_promptly_when_the_connection_ends(
    connect: Connect, server: wsw.Server
) -> None:
    handler_cancelled = Calls()
    server_request_ended = Calls()

    @server.on("hang")
    async def hang() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            handler_cancelled()
            raise

    @server.on("ask")
    async def ask() -> None:
        # the server's own pending request ends too (its handler is cancelled at teardown)
        try:
            await wsw.current_client().request("hang")
        except (wsw.ConnectionClosed, trio.Cancelled) as exc:
            server_request_ended(type(exc))
            raise

    client = wsw.Client()
    client.on("hang", trio.sleep_forever)
    opened = server_side(server)
    async with connect(server, client=client):
        ((server_client,),) = await opened.wait()
        await client.emit("ask")
        failures: list[BaseException] = []

        async def pending() -> None:
            try:
                await client.request("hang")
            except wsw.ConnectionClosed as exc:
                failures.append(exc)

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending)
                nursery.start_soon(pending)
                while (
                    server_client.statistics().active_requests < 2 or client.statistics().active_requests < 1
                ):
                    await trio.sleep(0.001)
                await server_client.aclose(4200, "gone")
        assert [(type(e), e.code, e.reason) for e in failures] == [(wsw.ConnectionClosed, 4200, "gone")] * 2
        assert len(handler_cancelled.calls) == 2
        assert len(server_request_ended.calls) == 1
        assert server_client.statistics() == wsw.ClientStatistics(False, 0, 0, 0, 0, 0, 0, 1)


async def test_emit_and_request_after_close_raise(connect: Connect, server: wsw.Server) -> None:
    never = wsw.Client()
    with pytest.raises(wsw.ConnectionClosed):
        await never.emit("x")
    with pytest.raises(wsw.ConnectionClosed):
        await never.request("x")
    assert not never.connected
    async with connect(server) as client:
        pass
    assert not client.connected
    for call in [
        lambda: client.emit("x"),
        lambda: client.request("x"),
        lambda: client.of("c").emit("x"),
        lambda: client.of("c").request("x"),
    ]:
        with trio.fail_after(TIMEOUT), pytest.raises(wsw.ConnectionClosed):
            await call()


async def test_open_client_to_refused_port_raises_connection_closed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(TIMEOUT), pytest.raises(wsw.ConnectionClosed) as info:
        async with wsw.open_client(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover
    assert type(info.value) is wsw.ConnectionClosed


class BodyError(Exception):
    pass


async def test_body_exception_propagates_as_itself(nursery: trio.Nursery, server: wsw.Server) -> None:
    closed = Calls()
    server.on("close", closed)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    error = BodyError("from the body")
    with trio.fail_after(TIMEOUT), pytest.raises(BodyError) as info:
        async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
            await client.emit("anything")
            raise error
    assert info.value is error
    ((_, *args),) = await closed.wait()
    assert args == [1000, "", False]
    # cancelling the body is not an error either, and it does not wait out the close timeout
    # (5 s) for a closing handshake that trio-websocket's cancelled reader could never finish
    with trio.fail_after(2):
        with trio.move_on_after(0.05) as scope:
            async with wsw.open_client(f"ws://127.0.0.1:{port}/"):
                await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_serve_reports_the_bound_port(nursery: trio.Nursery) -> None:
    servers = [wsw.Server(heartbeat_interval=None) for _ in range(2)]
    for n, server in enumerate(servers):
        server.on("who", lambda _n=n: _n)
    ports = [await nursery.start(server.serve, "127.0.0.1", 0) for server in servers]
    assert all(type(port) is int and 0 < port < 65536 for port in ports)
    assert ports[0] != ports[1]
    with trio.fail_after(TIMEOUT):
        for n, port in enumerate(ports):
            async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
                assert await client.request("who") == n


# ---------------------------------------------------------------------------------------------
# Limits (§13)


@pytest.mark.parametrize("kind", ["memory", "loopback"])
async def test_oversized_message_closes_with_1009(nursery: trio.Nursery, kind: str) -> None:
    server = wsw.Server(heartbeat_interval=None, max_message_size=1000)
    server.on("echo", lambda x: x)
    server_errors, server_closed = Calls(), Calls()
    server.on("error", server_errors)
    server.on("close", server_closed)
    connect = Connect(kind, nursery)
    big, ok = wsw.Client(), wsw.Client()
    big_closed = Calls()
    big.on("close", big_closed)
    reason = "Exceeded maximum message size: 1000 bytes"
    async with connect(server, client=ok), connect(server, client=big):
        with trio.fail_after(TIMEOUT):
            # {"a":["echo","…"],"i":1} has 23 characters around the string: 1000 in all is fine
            assert len('{"a":["echo",""],"i":1}') == 23
            assert await big.request("echo", "x" * 977) == "x" * 977
            with pytest.raises(wsw.ConnectionClosed) as info:
                await big.request("echo", "y" * 978)  # 1001 characters with "i":2
            assert (info.value.code, info.value.reason) == (1009, reason)
            assert await big_closed.wait() == [(big, 1009, reason, False)]
            ((_, error),) = await server_errors.wait()
            assert isinstance(error, wsw.ConnectionClosed)
            assert error.code == 1009
            ((_, *args),) = await server_closed.wait()
            assert args == [1009, reason, False]
            # the other client is unaffected
            assert await ok.request("echo", "still here") == "still here"
            assert ok.connected


async def test_request_timeout(autojump_clock: MockClock, server: wsw.Server) -> None:
    cancelled = Calls()

    @server.on("sleep")
    async def sleep(seconds: float) -> str:
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            cancelled(seconds)
            raise
        return "slept"

    client = wsw.Client(options=wsw.Options(request_timeout=5))
    async with open_test_client(server, client=client):
        start = trio.current_time()
        with pytest.raises(wsw.RequestTimeout) as info:
            await client.request("sleep", 100, timeout=1)
        assert str(info.value) == "Request timed out"
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, wsw.WSWrapperError)
        assert trio.current_time() - start == pytest.approx(1)
        # the default timeout of the connection applies without a per-call one
        start = trio.current_time()
        with pytest.raises(wsw.RequestTimeout, match=r"^Request timed out$"):
            await client.request("sleep", 100)
        assert trio.current_time() - start == pytest.approx(5)
        assert await client.request("sleep", 4) == "slept"
        assert await client.request("sleep", 8, timeout=10) == "slept"
        await cancelled.wait(2)
        assert cancelled.calls == [(100,), (100,)]  # the peer was told each time
        assert client.statistics().pending_requests == 0
        assert server.statistics().active_requests == 0
