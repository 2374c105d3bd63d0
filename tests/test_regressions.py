"""Regression tests for the defects found in review; each one failed before its fix.

What they guard, one section per defect:

1. a streaming generator whose ``finally`` blocks cannot hold a connection's teardown for ever;
2. a sender that gives up after waiting for room in the send queue wakes the next waiting sender;
3. ``AnonymousChannel.receive()`` in a cancelled scope never loses a buffered event;
4. an ``open`` listener that closes the client (or fails) still lets the connect context yield;
5. ``aclose()`` from a ``close``/``error`` listener of the same teardown returns at once;
6. cancelling ``Server.serve`` closes connected clients without waiting out the close timeout;
7. an iterable handler whose ``__aiter__`` raises is rejected exactly once and leaves no state;
8. the ``error_to_json`` option shapes stream rejections and mid-stream aborts;
9. a request carrying an integer beyond Python's digit limit is decoded (as a float) and answered;
10. in ``v3`` mode a channel created by the peer never sends anything with ``h``;
11. a finished handler's answer is queued at once, even when the send queue is full.

Virtual time (``autojump_clock``) unless a test talks over loopback TCP.
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import trio_wswrapper as wsw
from tests.bounded import bound_tests
from trio_wswrapper._sendqueue import SendQueue
from trio_wswrapper.testing import open_raw_peer, open_test_client

TIMEOUT = 10  # seconds; bounds every wait on real time
ANON_UNSUPPORTED = "Anonymous channels are not supported by this peer"


def _item(value: Any, h: int = 1) -> str:
    return f'{{"a":["next",{{"value":{json.dumps(value)},"done":false}}],"h":{h}}}'


# -- 1. a stream cleanup that blocks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "close", "seconds"),
    [
        # the peer drops the connection: the cleanup gets close_timeout, then the teardown runs
        ("peer aborts", (1006, "", False), 1),
        # the server closes: draining the unread queue and the cleanup each get close_timeout
        ("server closes", (1001, "server is closing", False), 2),
    ],
)
async def test_blocking_stream_cleanup_does_not_hold_the_teardown(autojump_clock, how, close, seconds):
    server = wsw.Server(close_timeout=1, heartbeat_interval=None)
    closes: list[tuple[Any, ...]] = []
    closed = trio.Event()
    cleanup: list[str] = []
    # Stands in for trio.sleep_forever(): nothing sets it before the test has its verdict, and
    # setting it afterwards lets a still-blocked cleanup end, so a regression fails, not hangs.
    never = trio.Event()

    @server.on("close")
    def on_close(client: wsw.Client, *args: Any) -> None:
        closes.append(args)
        closed.set()

    @server.on("stream")
    async def stream() -> Any:
        # Never awaits itself: every checkpoint is the producer's, taken while the generator is
        # suspended at ``yield``, so the connection's end reaches it through aclose(). The peer
        # reads one item only, so the producer soon waits for room in the send queue.
        n = 0
        try:
            while True:
                yield n
                n += 1
        finally:
            cleanup.append("finally")
            await never.wait()

    try:
        async with open_raw_peer(server) as peer, trio.open_nursery() as nursery:
            await peer.send('{"a":["stream"],"i":1}')
            assert await peer.receive() == '{"i":1,"h":1}'
            await peer.send('{"a":["start"],"h":1}')
            assert await peer.receive() == _item(0)
            start = trio.current_time()
            if how == "peer aborts":
                peer.transport.abort()
            else:
                nursery.start_soon(server.aclose)
            with trio.move_on_after(30):
                await closed.wait()
            elapsed = trio.current_time() - start
            assert closed.is_set(), "the close listener did not run within 30 s"
            assert cleanup == ["finally"]
            assert elapsed == pytest.approx(seconds)
            assert closes == [close]
            assert server.statistics().running_handlers == 0
    finally:
        never.set()


# -- 2. lost wakeup in the send queue ------------------------------------------------------------


async def test_send_queue_sender_that_gives_up_passes_its_turn(autojump_clock):
    queue = SendQueue(1)
    queue.put_nowait("full")
    log: list[str] = []

    async def gives_up() -> None:
        await queue.wait_writable()
        log.append("first woke and gave up")
        queue.pass_turn()

    async def sends() -> None:
        await queue.wait_writable()
        queue.put_nowait("second")
        log.append("second appended")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gives_up)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(sends)
        await trio.testing.wait_all_tasks_blocked()
        assert log == []
        assert await queue.get() == "full"  # room for one: exactly one sender is woken
        await trio.testing.wait_all_tasks_blocked()
        try:
            assert log == ["first woke and gave up", "second appended"]
            assert len(queue) == 1
            assert await queue.get() == "second"
        finally:
            nursery.cancel_scope.cancel()  # a stranded sender must not hang the test


async def test_unencodable_request_does_not_strand_the_next_sender(raw_server, autojump_clock):
    options = wsw.Options(limits=wsw.Limits(send_queue_size=1))
    async with raw_server(options=options, buffer=0) as (client, peer), trio.open_nursery() as nursery:
        await client.emit("fill", 1)
        await client.emit("fill", 2)  # fill 1 is being written (unbuffered), fill 2 fills the queue
        failures: list[BaseException] = []
        sent: list[str] = []

        async def bad() -> None:
            try:
                await client.request("bad", float("nan"))
            except ValueError as exc:
                failures.append(exc)

        async def good() -> None:
            await client.emit("good")
            sent.append("good")

        nursery.start_soon(bad)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(good)
        await trio.testing.wait_all_tasks_blocked()
        assert (failures, sent) == ([], [])  # both wait for room, bad first
        assert await peer.receive() == '{"a":["fill",1]}'  # room: the writer takes fill 2, wakes bad
        assert await peer.receive() == '{"a":["fill",2]}'
        assert await peer.receive() == '{"a":["good"]}'
        await peer.expect_silence(1)
        assert [type(exc) for exc in failures] == [ValueError]
        assert sent == ["good"]
        assert client.statistics().pending_requests == 0
        assert '"bad"' not in "".join(peer.written)


# -- 3. receive() in a cancelled scope -----------------------------------------------------------


async def test_receive_in_a_cancelled_scope_keeps_the_buffered_event(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:

        async def answer() -> None:
            assert await peer.receive() == '{"a":["chan"],"i":1}'
            await peer.send('{"i":1,"h":1}')
            await peer.send('{"a":["e",0],"h":1}')
            await peer.send('{"a":["e",1],"h":1}')

        nursery.start_soon(answer)
        channel = await client.request("chan")
        await trio.testing.wait_all_tasks_blocked()
        returned: list[Any] = []
        with trio.CancelScope() as scope:
            scope.cancel()
            returned.append(await channel.receive())
        assert scope.cancelled_caught
        assert returned == []
        assert await channel.receive() == ("e", (0,))
        assert await channel.receive() == ("e", (1,))


# -- 4. open listeners that stop the connection --------------------------------------------------


def _refusing_client(log: list[tuple[Any, ...]]) -> wsw.Client:
    client = wsw.Client()

    @client.on("open")
    async def refuse(c: wsw.Client) -> None:
        await c.aclose(4000, "no")

    client.on("close", lambda c, *args: log.append(args))
    return client


async def _assert_closed(client: wsw.Client) -> None:
    assert not client.connected
    with pytest.raises(wsw.ConnectionClosed):
        await client.emit("x")
    with pytest.raises(wsw.ConnectionClosed):
        await client.request("x")


async def test_open_listener_closing_the_client_yields_a_closed_client(server, autojump_clock):
    server_closes: list[tuple[Any, ...]] = []
    server.on("close", lambda c, *args: server_closes.append(args))
    client_closes: list[tuple[Any, ...]] = []
    client = _refusing_client(client_closes)
    async with open_test_client(server, client=client) as yielded:
        assert yielded is client
        await _assert_closed(client)
        assert client_closes == [(4000, "no", True)]
    await trio.testing.wait_all_tasks_blocked()
    assert server_closes == [(4000, "no", False)]


async def test_open_listener_closing_the_client_yields_over_loopback(nursery):
    server = wsw.Server(heartbeat_interval=None)
    server_closed = trio.Event()
    server_closes: list[tuple[Any, ...]] = []

    @server.on("close")
    def on_close(c: wsw.Client, *args: Any) -> None:
        server_closes.append(args)
        server_closed.set()

    port = await nursery.start(server.serve, "127.0.0.1", 0)
    client_closes: list[tuple[Any, ...]] = []
    client = _refusing_client(client_closes)
    with trio.fail_after(TIMEOUT):
        async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client) as yielded:
            assert yielded is client
            await _assert_closed(client)
            assert client_closes == [(4000, "no", True)]
        await server_closed.wait()
    assert server_closes == [(4000, "no", False)]


async def test_open_listener_that_raises_closes_with_1011_and_still_yields(server, autojump_clock):
    server_closes: list[tuple[Any, ...]] = []
    server.on("close", lambda c, *args: server_closes.append(args))
    client = wsw.Client()
    errors: list[BaseException] = []
    client_closes: list[tuple[Any, ...]] = []

    @client.on("open")
    def fail(c: wsw.Client) -> None:
        raise RuntimeError("open failed")

    client.on("error", lambda c, exc: errors.append(exc))
    client.on("close", lambda c, *args: client_closes.append(args))
    async with open_test_client(server, client=client) as yielded:
        assert yielded is client
        await _assert_closed(client)
    assert [str(exc) for exc in errors] == ["open failed"]
    assert client_closes == [(1011, "internal error", False)]
    await trio.testing.wait_all_tasks_blocked()
    assert server_closes == [(1011, "internal error", False)]


# -- 5. aclose() from a close or error listener --------------------------------------------------


async def test_aclose_in_a_close_listener_returns_at_once(raw_server, autojump_clock):
    client = wsw.Client(options=wsw.Options(close_timeout=3))
    log: list[Any] = []

    @client.on("close")
    async def closing(c: wsw.Client, *args: Any) -> None:
        log.append(args)
        await c.aclose()
        log.append("returned")

    async with raw_server(client) as (_, peer):
        with trio.fail_after(1):
            await client.aclose()
        assert log == [(1000, "", True), "returned"]
        with pytest.raises(wsw.TransportClosed) as info:
            await peer.receive()
        assert (info.value.code, info.value.reason) == (1000, "")


async def test_aclose_in_an_error_listener_returns_at_once(raw_server, autojump_clock):
    client = wsw.Client(options=wsw.Options(close_timeout=3))
    log: list[Any] = []
    closed = trio.Event()

    @client.on("error")
    async def failing(c: wsw.Client, exc: BaseException) -> None:
        log.append(type(exc))
        await c.aclose(4000, "ignored")
        log.append("returned")

    @client.on("close")
    def on_close(c: wsw.Client, *args: Any) -> None:
        log.append(args)
        closed.set()

    async with raw_server(client) as (_, peer):
        with trio.fail_after(1):
            peer.transport.abort()
            await closed.wait()
        assert log == [wsw.ConnectionClosed, "returned", (1006, "", False)]


async def test_aclose_in_a_server_close_listener_returns_at_once(autojump_clock):
    server = wsw.Server(close_timeout=3, heartbeat_interval=None)
    log: list[Any] = []
    closed = trio.Event()

    @server.on("close")
    async def closing(c: wsw.Client, *args: Any) -> None:
        log.append(args)
        await c.aclose()
        log.append("returned")
        closed.set()

    async with open_raw_peer(server) as peer:
        with trio.fail_after(1):
            await peer.transport.aclose(4001, "bye")
            await closed.wait()
    assert log == [(4001, "bye", False), "returned"]


# -- 6. cancelling serve -------------------------------------------------------------------------


async def test_cancelling_serve_closes_a_loopback_client_promptly(nursery):
    server = wsw.Server(heartbeat_interval=None)
    opened = trio.Event()
    server.on("open", lambda c: opened.set())
    server_closes: list[tuple[Any, ...]] = []
    server.on("close", lambda c, *args: server_closes.append(args))
    serve_scope = trio.CancelScope()
    stopped = trio.Event()

    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with serve_scope:
            await server.serve("127.0.0.1", 0, task_status=task_status)
        stopped.set()

    port = await nursery.start(serve)
    client_closed = trio.Event()
    client_closes: list[tuple[Any, ...]] = []

    def on_client_close(c: wsw.Client, *args: Any) -> None:
        client_closes.append(args)
        client_closed.set()

    client = wsw.Client()
    client.on("close", on_client_close)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client):
        with trio.fail_after(TIMEOUT):
            await opened.wait()
        start = trio.current_time()
        with trio.fail_after(3):  # the default close_timeout is 5 s
            serve_scope.cancel()
            await stopped.wait()
        assert trio.current_time() - start < 2
        assert server_closes == [(1001, "server is closing", False)]
        with trio.fail_after(TIMEOUT):
            await client_closed.wait()
        assert client_closes == [(1001, "server is closing", False)]
        assert not client.connected


# -- 7. __aiter__ that raises --------------------------------------------------------------------


async def test_iterable_whose_aiter_raises_is_rejected_once(server, autojump_clock):
    class Broken:
        def __aiter__(self) -> Any:
            raise RuntimeError("no iterator")

    server.on("broken", wsw.iterable_handler(Broken))
    server.on("ping", lambda: "pong")
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["broken"],"i":1}')
        assert await peer.receive() == '{"i":1,"e":{"message":"no iterator"},"_":1}'
        await peer.expect_silence(1)
        stats = server.statistics()
        assert (stats.active_requests, stats.running_handlers, stats.open_channels) == (0, 0, 0)
        await peer.send('{"a":["ping"],"i":2}')
        assert await peer.receive() == '{"i":2,"d":"pong"}'


# -- 8. error_to_json for streams ----------------------------------------------------------------


async def test_error_to_json_shapes_stream_rejections_and_aborts(autojump_clock):
    server = wsw.Server(
        heartbeat_interval=None,
        error_to_json=lambda exc: {"message": f"custom: {exc}", "kind": type(exc).__name__},
    )

    @server.on("fails_at_once")
    @wsw.iterable_handler
    def fails_at_once() -> Any:
        raise ValueError("at once")

    @server.on("fails_after_await")
    @wsw.iterable_handler
    async def fails_after_await() -> Any:
        await trio.sleep(1)
        raise LookupError("after await")

    @server.on("fails_later")
    async def fails_later() -> Any:
        yield 1
        raise ValueError("later")

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["fails_at_once"],"i":1}')
        assert await peer.receive() == '{"i":1,"e":{"message":"custom: at once","kind":"ValueError"},"_":1}'
        await peer.send('{"a":["fails_after_await"],"i":2}')
        assert (
            await peer.receive() == '{"i":2,"e":{"message":"custom: after await","kind":"LookupError"},"_":1}'
        )
        await peer.send('{"a":["fails_later"],"i":3}')
        assert await peer.receive() == '{"i":3,"h":1}'
        await peer.send('{"a":["start"],"h":3}')
        assert await peer.receive() == _item(1, h=3)
        assert await peer.receive() == '{"h":3,"x":{"message":"custom: later","kind":"ValueError"},"_":1}'
        await peer.expect_silence(1)


# -- 9. integers beyond Python's digit limit -----------------------------------------------------


async def test_request_with_a_5000_digit_integer_is_answered(server, autojump_clock):
    received: list[Any] = []

    @server.on("echo")
    def echo(value: Any) -> Any:
        received.append(value)
        return value

    try:
        json.dumps(math.inf, allow_nan=False)
    except ValueError as exc:
        out_of_range = str(exc)
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["echo",' + "9" * 5000 + '],"i":1}')
        answer = await peer.receive()
        assert received == [math.inf]  # read as JavaScript reads it
        assert answer == json.dumps({"i": 1, "e": {"message": out_of_range}, "_": 1}, separators=(",", ":"))
        await peer.expect_silence(1)  # exactly one answer
        await peer.send('{"a":["echo",-' + "9" * 5000 + '],"i":2}')
        assert json.loads(await peer.receive())["i"] == 2
        assert received == [math.inf, -math.inf]
        await peer.send('{"a":["echo",2],"i":3}')
        assert await peer.receive() == '{"i":3,"d":2}'
        await peer.expect_silence(1)


# -- 10. v3 mode: a channel created by the peer --------------------------------------------------


async def test_v3_client_never_sends_h_on_a_channel_the_peer_created(raw_server, autojump_clock):
    options = wsw.Options(peer_compat="v3")
    async with raw_server(options=options) as (client, peer), trio.open_nursery() as nursery:

        async def create(rid: int) -> None:
            assert await peer.receive() == f'{{"a":["chan"],"i":{rid}}}'
            await peer.send(f'{{"i":{rid},"h":1}}')

        channels: list[wsw.AnonymousChannel] = []
        for rid in (1, 2, 3):
            nursery.start_soon(create, rid)
            channels.append(await client.request("chan"))
        first, second, third = channels
        assert all(isinstance(ch, wsw.AnonymousChannel) for ch in channels)
        assert [ch.id for ch in channels] == [1, 2, 3]

        with trio.fail_after(1):
            with pytest.raises(wsw.ProtocolError) as info:
                await first.emit("x", 1)
            assert str(info.value) == ANON_UNSUPPORTED
            with pytest.raises(wsw.ProtocolError) as info:
                await first.request("y")
            assert str(info.value) == ANON_UNSUPPORTED
        await peer.expect_silence(1)
        assert client.statistics().pending_requests == 0

        await first.abort("bye")
        assert first.closed
        await peer.expect_silence(1)

        with pytest.raises(KeyError):
            async with second:
                raise KeyError("boom")
        assert second.closed
        await peer.expect_silence(1)

        with trio.CancelScope() as scope:
            async with third:
                scope.cancel()
                await trio.sleep_forever()
        assert third.closed
        await peer.expect_silence(1)

        assert [f for f in peer.written if '"h"' in f] == []
        assert peer.written == ['{"a":["chan"],"i":1}', '{"a":["chan"],"i":2}', '{"a":["chan"],"i":3}']


# -- 11. an answer is queued in the step that commits it -----------------------------------------


async def test_answer_is_queued_at_once_when_the_send_queue_is_full(raw_server, autojump_clock, caplog):
    client = wsw.Client(options=wsw.Options(limits=wsw.Limits(send_queue_size=1)))
    release = trio.Event()
    cancelled: list[bool] = []

    @client.on("work")
    async def work() -> str:
        try:
            await release.wait()
        except trio.Cancelled:
            cancelled.append(True)
            raise
        return "done"

    async with raw_server(client, buffer=0) as (_, peer):
        await peer.send('{"a":["work"],"i":1}')
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics().active_requests == 1
        await client.emit("fill", 1)
        await client.emit("fill", 2)  # fill 1 is being written (the peer is not reading), 2 waits
        assert client.statistics().queued_frames == 1
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        stats = client.statistics()
        assert (stats.active_requests, stats.running_handlers, stats.queued_frames) == (0, 0, 2)
        caplog.clear()
        await peer.send('{"i":1,"x":{"message":"too late"},"_":1}')
        await trio.testing.wait_all_tasks_blocked()
        assert "ignored cancellation of inactive request 1" in [
            r.getMessage().split(": ", 1)[1] for r in caplog.records if r.levelno == logging.DEBUG
        ]
        assert cancelled == []
        assert await peer.receive() == '{"a":["fill",1]}'
        assert await peer.receive() == '{"a":["fill",2]}'
        assert await peer.receive() == '{"i":1,"d":"done"}'
        await peer.expect_silence(1)


async def test_channel_after_the_connection_ended_raises(server: wsw.Server) -> None:
    # A handler that keeps running (shielded) after its connection stopped cannot create the
    # request's channel on a connection that is gone.
    outcome: list[BaseException] = []

    @server.on("late")
    async def late() -> Any:
        client = wsw.current_client()
        with trio.CancelScope(shield=True):
            while client.connected:
                await trio.sleep(0.001)
        try:
            return wsw.channel()
        except wsw.ConnectionClosed as exc:
            outcome.append(exc)
            raise

    with trio.fail_after(5):
        async with open_test_client(server) as client, trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.request, "late"))
            while not server.statistics().active_requests:
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
        assert len(outcome) == 1


bound_tests(globals())
