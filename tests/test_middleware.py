"""Middleware (``use``) and the ``handler_context`` hook: order, rejection, tasks, deadlines."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import trio_wswrapper as wsw
from tests.bounded import bound_tests
from trio_wswrapper.testing import open_raw_peer, open_test_client


def recorder(seen: list[Any], label: str) -> Any:
    def middleware(info: wsw.MessageInfo) -> None:
        seen.append((label, info.name))

    return middleware


async def test_order_and_message_info(autojump_clock: MockClock, server: wsw.Server) -> None:
    seen: list[Any] = []
    infos: list[wsw.MessageInfo] = []
    server.use(recorder(seen, "server 1"))
    server.use(recorder(seen, "server 2"))
    server.of("room").use(recorder(seen, "server room"))
    server.of("other").use(recorder(seen, "server other"))

    @server.use
    async def capture(info: wsw.MessageInfo) -> None:
        await trio.sleep(0)
        infos.append(info)

    @server.on("open")
    def opened(client: wsw.Client) -> None:
        client.use(recorder(seen, "client"))
        client.of("room").use(recorder(seen, "client room"))

    server.on("hello", lambda name: f"hi {name}")
    server.of("room").on("join", lambda: "joined")
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["hello","bob"],"i":1}')
        assert await peer.receive() == '{"i":1,"d":"hi bob"}'
        assert seen == [("server 1", "hello"), ("server 2", "hello"), ("client", "hello")]
        seen.clear()
        await peer.send('{"a":["join"],"c":"room","i":2}')
        assert await peer.receive() == '{"i":2,"d":"joined"}'
        assert seen == [
            ("server 1", "join"),
            ("server 2", "join"),
            ("server room", "join"),
            ("client", "join"),
            ("client room", "join"),
        ]
        client = server.clients[0]
    assert infos == [
        wsw.MessageInfo(client, "hello", ("bob",), 1, None, None),
        wsw.MessageInfo(client, "join", (), 2, "room", None),
    ]
    assert infos[0].is_request
    assert not wsw.MessageInfo(client, "e", ()).is_request


async def test_rejections_on_the_wire(autojump_clock: MockClock, server: wsw.Server) -> None:
    @server.use
    def guard(info: wsw.MessageInfo) -> None:
        if info.args and info.args[0] == "raw":
            raise wsw.RemoteError("nope")
        if info.args and info.args[0] == "error":
            raise PermissionError("denied")

    @server.use
    async def second(info: wsw.MessageInfo) -> None:
        await trio.sleep(0)
        if info.args and info.args[0] == "late":
            raise wsw.RemoteError({"code": 403})

    calls: list[Any] = []
    server.on("do", lambda x: calls.append(x) or x)
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["do","raw"],"i":1}')
        assert await peer.receive() == '{"i":1,"e":"nope"}'
        await peer.send('{"a":["do","error"],"i":2}')
        assert await peer.receive() == '{"i":2,"e":{"message":"denied"},"_":1}'
        await peer.send('{"a":["do","late"],"i":3}')
        assert await peer.receive() == '{"i":3,"e":{"code":403}}'
        await peer.send('{"a":["do","ok"],"i":4}')
        assert await peer.receive() == '{"i":4,"d":"ok"}'
    assert calls == ["ok"]


async def test_rejected_event_is_dropped_and_logged(
    autojump_clock: MockClock, server: wsw.Server, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []

    @server.use
    def guard(info: wsw.MessageInfo) -> None:
        if info.args[0] == "bad":
            raise PermissionError("denied")

    server.on("note", calls.append)
    server.on("echo", lambda x: x)
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["note","bad"]}')
        await peer.send('{"a":["note","good"]}')
        await peer.send('{"a":["echo","alive"],"i":9}')
        assert await peer.receive() == '{"i":9,"d":"alive"}'
        await peer.expect_silence()
    assert calls == ["good"]
    assert any(
        "event 'note' rejected by middleware: PermissionError('denied')" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO
    )


async def test_unhandled_and_reserved_messages_bypass_middleware(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    seen: list[Any] = []
    server.use(recorder(seen, "server"))
    opened: list[Any] = []
    server.on("open", opened.append)
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["missing"],"i":1}')
        assert await peer.receive() == '{"i":1,"e":{"message":"No event listener for \'missing\'"},"_":1}'
        await peer.send('{"a":["open"],"i":2}')  # reserved on the root: ignored
        await peer.send('{"a":["x"],"c":"nowhere","i":3}')
        assert await peer.receive() == '{"i":3,"e":{"message":"Channel \'nowhere\' does not exist"},"_":1}'
        await peer.expect_silence()
    assert seen == []
    assert len(opened) == 1


async def test_slow_middleware_runs_in_the_handler_task(autojump_clock: MockClock) -> None:
    server = wsw.Server(heartbeat_interval=None, max_concurrent_handlers=2)
    release = trio.Event()

    @server.use
    async def slow(info: wsw.MessageInfo) -> None:
        if info.name == "slow":
            await release.wait()

    server.on("slow", lambda: "slow done")
    server.on("fast", lambda: "fast done")
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["slow"],"i":1}')
        await peer.send('{"a":["fast"],"i":2}')  # the reader is not blocked by request 1
        assert await peer.receive() == '{"i":2,"d":"fast done"}'
        await peer.send('{"a":["slow"],"i":3}')
        await peer.send('{"a":["fast"],"i":4}')  # two middleware waits fill the handler limit
        assert await peer.receive() == '{"i":4,"e":{"message":"Too many concurrent requests"},"_":1}'
        release.set()
        assert {await peer.receive(), await peer.receive()} == {
            '{"i":1,"d":"slow done"}',
            '{"i":3,"d":"slow done"}',
        }


async def test_cancelling_a_request_cancels_its_middleware(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    cancelled = trio.Event()

    @server.use
    async def slow(info: wsw.MessageInfo) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    server.on("never", lambda: "unreachable")
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["never"],"i":1}')
        await trio.sleep(1)
        await peer.send('{"i":1,"x":{"message":"stop"},"_":1}')
        await cancelled.wait()
        await peer.expect_silence()
        assert server.statistics().running_handlers == 0


async def test_client_side_middleware_and_anonymous_channels(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    server_seen: list[wsw.MessageInfo] = []
    client_seen: list[wsw.MessageInfo] = []
    server.use(server_seen.append)

    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("question", 1)

    @server.on("chan")
    def chan() -> Any:
        ch = wsw.channel()
        ch.on("inside", lambda: "in")
        return ch

    async with open_test_client(server) as client:
        client.use(client_seen.append)

        @client.use
        def refuse(info: wsw.MessageInfo) -> None:
            if info.args == (2,):
                raise wsw.RemoteError("client says no")

        client.on("question", lambda n: n + 1)
        assert await client.request("ask") == 2
        ch = await client.request("chan")
        async with ch:
            assert await ch.request("inside") == "in"
        server.on("ask2", lambda: wsw.current_client().request("question", 2))
        with pytest.raises(wsw.RemoteError, match="client says no"):
            await client.request("ask2")
    # Id 2 is skipped: the server still holds anonymous channel 2 (the client's close is local).
    assert [(i.name, i.args, i.id) for i in client_seen] == [("question", (1,), 1), ("question", (2,), 3)]
    assert [(i.name, i.channel, i.anon) for i in server_seen] == [
        ("ask", None, None),
        ("chan", None, None),
        ("inside", None, 2),
        ("ask2", None, None),
    ]


async def test_client_channel_middleware(autojump_clock: MockClock, server: wsw.Server) -> None:
    seen: list[Any] = []

    @server.on("ping")
    async def ping() -> Any:
        return await wsw.current_client().of("sub").request("pong")

    async with open_test_client(server) as client:
        client.use(recorder(seen, "client"))
        client.of("sub").use(recorder(seen, "client sub"))
        client.of("sub").on("pong", lambda: "pong!")
        assert await client.request("ping") == "pong!"
    assert seen == [("client", "pong"), ("client sub", "pong")]


def test_use_refuses_non_callables(server: wsw.Server) -> None:
    with pytest.raises(TypeError, match="middleware must be callable"):
        server.use(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# handler_context

request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="")


async def test_handler_context_deadline_rejects(autojump_clock: MockClock) -> None:
    server = wsw.Server(heartbeat_interval=None, handler_context=lambda info: trio.fail_after(5))

    @server.on("sleep")
    async def sleep(seconds: float) -> str:
        await trio.sleep(seconds)
        return "slept"

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["sleep",1],"i":1}')
        assert await peer.receive() == '{"i":1,"d":"slept"}'
        await peer.send('{"a":["sleep",10],"i":2}')
        assert await peer.receive(timeout=20) == '{"i":2,"e":{"message":"Handler timed out"},"_":1}'


async def test_handler_context_sets_a_contextvar_around_middleware_and_handler(
    autojump_clock: MockClock,
) -> None:
    entered: list[str] = []

    @contextlib.contextmanager
    def tagged(info: wsw.MessageInfo) -> Iterator[None]:
        token = request_tag.set(f"{info.name}#{info.id}")
        entered.append(request_tag.get())
        try:
            yield
        finally:
            request_tag.reset(token)

    server = wsw.Server(heartbeat_interval=None, handler_context=tagged)
    seen: list[str] = []
    server.use(lambda info: seen.append(request_tag.get()))
    server.on("tag", request_tag.get)
    server.on("note", lambda: seen.append("event " + request_tag.get()))
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["tag"],"i":7}')
        assert await peer.receive() == '{"i":7,"d":"tag#7"}'
        await peer.send('{"a":["note"]}')
        await peer.send('{"a":["tag"],"i":8}')
        assert await peer.receive() == '{"i":8,"d":"tag#8"}'
    assert entered == ["tag#7", "note#None", "tag#8"]
    assert seen == ["tag#7", "note#None", "event note#None", "tag#8"]


async def test_async_handler_context_and_failures(autojump_clock: MockClock) -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def audited(info: wsw.MessageInfo) -> AsyncIterator[None]:
        if info.name == "forbidden":
            raise wsw.RemoteError("not here")
        log.append(f"enter {info.name}")
        try:
            yield
        finally:
            await trio.sleep(0)
            log.append(f"exit {info.name}")

    server = wsw.Server(heartbeat_interval=None, handler_context=audited)
    server.on("ok", lambda: "fine")
    server.on("fail", lambda: 1 / 0)
    server.on("forbidden", lambda: "unreachable")
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["ok"],"i":1}')
        assert await peer.receive() == '{"i":1,"d":"fine"}'
        await peer.send('{"a":["fail"],"i":2}')
        assert await peer.receive() == '{"i":2,"e":{"message":"division by zero"},"_":1}'
        await peer.send('{"a":["forbidden"],"i":3}')
        assert await peer.receive() == '{"i":3,"e":"not here"}'
    assert log == ["enter ok", "exit ok", "enter fail", "exit fail"]


async def test_handler_context_deadline_aborts_a_stream(autojump_clock: MockClock) -> None:
    server = wsw.Server(heartbeat_interval=None, handler_context=lambda info: trio.fail_after(5))

    @server.on("ticks")
    async def ticks() -> Any:
        for i in range(100):
            await trio.sleep(1)
            yield i

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["ticks"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send('{"a":["start"],"h":1}')
        for i in range(4):
            assert await peer.receive() == f'{{"a":["next",{{"value":{i},"done":false}}],"h":1}}'
        assert await peer.receive() == '{"h":1,"x":{"message":"Handler timed out"},"_":1}'
        await peer.expect_silence()


async def test_dialling_client_handler_context(autojump_clock: MockClock, server: wsw.Server) -> None:
    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("slow")

    client = wsw.Client(options=wsw.Options(handler_context=lambda info: trio.fail_after(1)))

    @client.on("slow")
    async def slow() -> str:
        await trio.sleep(10)
        return "late"

    async with open_test_client(server, client=client):
        with pytest.raises(wsw.RemoteError, match="Handler timed out"):
            await client.request("ask")


bound_tests(globals())
