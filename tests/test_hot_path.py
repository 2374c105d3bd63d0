"""The fast paths: plain function handlers called by the reader, and direct writes.

A handler that is a plain function (no middleware, no ``handler_context``) runs in the
connection's reader task instead of a task of its own, and a frame handed over while nothing
is being written goes straight to the socket from the task that made it. Both must keep every
promise of the ordinary paths: context, channels, cancellation, errors and frame order.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.connection import Connection

import trio_wswrapper as wsw
from trio_wswrapper._sendqueue import SendQueue
from trio_wswrapper._transport_wsproto import WsprotoTransport
from trio_wswrapper.testing import open_test_client

from .bounded import bound_tests

TIMEOUT = 10


@pytest.fixture(params=["memory", "loopback"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@asynccontextmanager
async def connected(server: wsw.Server, kind: str) -> AsyncIterator[wsw.Client]:
    if kind == "memory":
        async with open_test_client(server) as client:
            yield client
        return
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
            yield client
        nursery.cancel_scope.cancel()


async def test_plain_handlers_share_the_reader_task(server: wsw.Server, kind: str) -> None:
    tasks: list[trio.lowlevel.Task] = []
    server.on("where", lambda: tasks.append(trio.lowlevel.current_task()))
    routed: list[trio.lowlevel.Task] = []
    room = server.of("room")
    room.on("where", lambda: routed.append(trio.lowlevel.current_task()))

    room.use(lambda info: None)
    with trio.fail_after(TIMEOUT):
        async with connected(server, kind) as client:
            for _ in range(3):
                await client.request("where")
                await client.of("room").request("where")
    # the same task (the reader) ran every plain handler; with middleware, a task per message
    assert len(set(tasks)) == 1
    assert len(set(routed)) == 3
    assert tasks[0] not in routed


async def test_plain_handler_sees_its_client_and_request(server: wsw.Server, kind: str) -> None:
    seen: list[Any] = []

    def open_echo() -> wsw.AnonymousChannel:
        seen.append((wsw.current_client(), wsw.cancel_reason()))
        ch = wsw.channel()
        ch.on("echo", lambda x: x * 2)
        return ch

    server.on("open-echo", open_echo)
    with trio.fail_after(TIMEOUT):
        async with connected(server, kind) as client:
            ch = await client.request("open-echo")
            async with ch:
                assert await ch.request("echo", 21) == 42
            assert await client.request("open-echo") is not ch
    assert len(seen) == 2
    assert all(isinstance(c, wsw.Client) and reason is None for c, reason in seen)
    with pytest.raises(RuntimeError):
        wsw.current_client()  # reset in the reader once the handler returned


async def test_plain_handler_failures_answer_and_log(
    server: wsw.Server, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(x: int) -> None:
        raise ValueError(f"bad {x}")

    server.on("fail", fail)
    server.on("typed", lambda n: n)
    events: list[int] = []

    def typed_event(n: int) -> None:
        events.append(n)

    server.on("typed-event", typed_event)
    server.on("fail-event", lambda: 1 / 0)
    with trio.fail_after(TIMEOUT):
        async with connected(server, kind) as client:
            with pytest.raises(wsw.RemoteError, match="bad 3"):
                await client.request("fail", 3)
            await client.emit("typed-event", "not a number")
            await client.emit("fail-event")
            await client.emit("typed-event", 7)
            assert await client.request("typed", 5) == 5  # everything before it was read
    assert events == [7]
    assert any(r.levelno == logging.WARNING and "typed-event" in r.getMessage() for r in caplog.records)
    failed = [r for r in caplog.records if "fail-event" in r.getMessage()]
    assert failed and failed[0].exc_info is not None


async def test_plain_handler_returning_an_awaitable(server: wsw.Server, kind: str) -> None:
    done = trio.Event()
    reasons: list[Any] = []

    async def later(x: int) -> int:
        await trio.sleep(0.01)
        return x + 1

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            reasons.append(wsw.cancel_reason())
            done.set()

    async def set_later() -> None:
        await trio.sleep(0)
        done.set()

    async def fail_later() -> None:
        raise KeyError("later")

    # plain functions that return coroutines, not coroutine functions
    server.on("later", lambda x: later(x))  # noqa: PLW0108
    server.on("forever", lambda: forever())  # noqa: PLW0108
    server.on("fail-later", lambda: fail_later())  # noqa: PLW0108
    server.on("event", lambda: set_later())  # noqa: PLW0108
    with trio.fail_after(TIMEOUT):
        async with connected(server, kind) as client:
            assert await client.request("later", 1) == 2
            with pytest.raises(wsw.RemoteError, match="later"):
                await client.request("fail-later")
            await client.emit("event")
            await done.wait()
            done = trio.Event()
            with trio.move_on_after(0.05):
                await client.request("forever")
            await done.wait()  # the peer's cancellation reached the awaited handler
            assert await client.request("later", 10) == 11
    assert len(reasons) == 1 and reasons[0] is not None


# -- direct writes ---------------------------------------------------------------------------


class FakeDirect:
    """A direct writer that takes ``accept`` frames and leaves a backlog when told to."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.refuse = False
        self.leave_backlog = False
        self.backlog = False
        self.flushes = 0

    def send_nowait(self, message: str) -> bool:
        if self.refuse or self.backlog:
            return False
        self.written.append(message)
        self.backlog = self.leave_backlog
        return True

    async def flush(self) -> None:
        self.flushes += 1
        self.backlog = False
        await trio.lowlevel.checkpoint()


async def test_send_queue_writes_directly_only_when_idle() -> None:
    direct = FakeDirect()
    queue = SendQueue(8, direct)
    queue.put_nowait("a")
    assert direct.written == ["a"] and len(queue) == 0
    direct.refuse = True
    queue.put_nowait("b")  # refused: queued for the writer
    direct.refuse = False
    queue.put_nowait("c")  # "b" is waiting, so "c" must not overtake it
    assert direct.written == ["a"] and len(queue) == 2
    assert await queue.get() == "b"
    queue.put_nowait("d")  # the writer is busy writing "b"
    assert await queue.get() == "c"
    assert await queue.get() == "d"
    with trio.testing.assert_checkpoints():
        with trio.move_on_after(0.01):
            await queue.get()  # idle again: nothing to write
    direct.leave_backlog = True
    queue.put_nowait("e")  # taken, but the socket left part of it
    queue.put_nowait("f")  # must wait for the rest of "e"
    assert direct.written == ["a", "e"]
    assert await queue.get() is None  # the writer flushes first
    await direct.flush()
    assert await queue.get() == "f"


async def test_send_queue_drain_waits_for_the_flush() -> None:
    direct = FakeDirect()
    direct.leave_backlog = True
    queue = SendQueue(8, direct)
    queue.put_nowait("big")
    drained = False

    async def drain() -> None:
        nonlocal drained
        await queue.drain()
        drained = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        assert not drained
        assert await queue.get() is None
        await direct.flush()
        with trio.move_on_after(0.01):
            await queue.get()
        await trio.testing.wait_all_tasks_blocked()
        assert drained


@asynccontextmanager
async def socket_transports(sndbuf: int = 0) -> AsyncIterator[tuple[WsprotoTransport, WsprotoTransport]]:
    a, b = trio.socket.socketpair()
    if sndbuf:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    server = WsprotoTransport(trio.SocketStream(a), Connection(ConnectionType.SERVER))
    client = WsprotoTransport(trio.SocketStream(b), Connection(ConnectionType.CLIENT))
    try:
        yield server, client
    finally:
        await server._drop()
        await client._drop()


async def test_direct_write_leaves_the_rest_for_flush() -> None:
    big = "x" * 2_000_000
    with trio.fail_after(TIMEOUT):
        async with socket_transports(sndbuf=4096) as (server, client):
            assert server.send_nowait("first")
            assert not server.backlog
            assert server.send_nowait(big)
            assert server.backlog  # a small buffer took only part of it
            assert not server.send_nowait("overtaking")  # refused: the rest goes first
            received: list[str | bytes] = []
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    for _ in range(3):
                        received.append(await client.receive())

                nursery.start_soon(read)
                await server.flush()
                assert not server.backlog
                await server.send("after")
            assert received == ["first", big, "after"]


async def test_direct_write_is_refused_without_a_plain_socket() -> None:
    a, _ = trio.testing.memory_stream_pair()
    transport = WsprotoTransport(a, Connection(ConnectionType.SERVER))
    assert not transport.send_nowait("x")
    async with socket_transports() as (server, _):
        async with server._send_lock:
            assert not server.send_nowait("x")  # a write is in progress
        await server.aclose(wait=False)
        assert not server.send_nowait("x")  # closed


async def test_large_answers_in_order_over_loopback() -> None:
    # Answers too big for the socket buffer leave a backlog; what follows must queue behind it.
    big = "y" * 3_000_000
    server = wsw.Server(heartbeat_interval=None, max_message_size=8 << 20)
    server.on("big", lambda: big)
    ticks: list[int] = []

    async def burst() -> None:
        client = wsw.current_client()
        for i in range(100):
            await client.emit("tick", i)

    server.on("burst", burst)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            async with wsw.open_client(f"ws://127.0.0.1:{port}/", max_message_size=8 << 20) as client:
                client.on("tick", ticks.append)
                async with trio.open_nursery() as inner:
                    for _ in range(4):
                        inner.start_soon(client.request, "burst")
                    results = [await client.request("big") for _ in range(3)]
                assert results == [big] * 3
            nursery.cancel_scope.cancel()
    # each burst's events arrive before its answer, and in order
    assert sorted(ticks) == [i for i in range(100) for _ in range(4)]


bound_tests(globals())
