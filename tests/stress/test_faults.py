"""Faults: resets mid-request and mid-stream, vanished peers, shutdown with work in flight,
and cancellation injected at every checkpoint of a request's lifetime.

All over real loopback sockets. Nothing may hang (every test has a deadline), every pending
request must fail promptly with ConnectionClosed, every handler must be cancelled and every
stream's generator finalised, and nothing may be left behind once the connections are gone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw

from .common import (
    Healthy,
    add,
    error_log,
    idle,
    leak_types,
    live_objects,
    make_server,
    record,
    scale,
    task_count,
    wait_until,
)
from .rawws import RawWebSocket


class Tracker:
    """Counts handler starts and ends on the server, and how each ended."""

    def __init__(self) -> None:
        self.started = 0
        self.endings: list[str] = []

    def install(self, server: wsw.Server) -> None:
        @server.on("hold")
        async def hold() -> None:
            self.started += 1
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                self.endings.append("cancelled")
                raise

        @server.on("endless")
        async def endless() -> AsyncIterator[int]:
            self.started += 1
            i = 0
            try:
                while True:
                    yield i
                    i += 1
            finally:
                self.endings.append("finalised")

        @server.on("ask-client")
        async def ask_client() -> Any:
            self.started += 1
            try:
                return await wsw.current_client().request("question")
            except wsw.ConnectionClosed:
                self.endings.append("request failed: ConnectionClosed")
                raise
            except trio.Cancelled:
                self.endings.append("cancelled")
                raise


# -- abrupt resets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["mid-request", "mid-stream", "mid-server-request"])
async def test_tcp_reset(where: str, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_wswrapper")  # records would hold clients
    server = make_server()
    tracker = Tracker()
    tracker.install(server)
    closes: list[int] = []
    server.on("close", lambda client, code, reason, user: closes.append(int(code)))
    with error_log() as errors, trio.fail_after(30):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        baseline = live_objects(*leak_types())
        stop = trio.Event()
        healthy = Healthy()
        await nursery.start(healthy.run, port, stop)
        rounds = scale(10, 200)
        for _ in range(rounds):
            async with await RawWebSocket.connect(port) as raw:
                if where == "mid-request":
                    await raw.send_text('{"a":["hold"],"i":1}')
                    await wait_until(lambda: server.statistics().running_handlers == 1)
                elif where == "mid-stream":
                    await raw.send_text('{"a":["endless"],"i":1}')
                    assert await raw.receive() == '{"i":1,"h":1}'
                    await raw.send_text('{"a":["start"],"h":1}')
                    for i in range(3):
                        assert await raw.receive() == f'{{"a":["next",{{"value":{i},"done":false}}],"h":1}}'
                else:
                    await raw.send_text('{"a":["ask-client"],"i":1}')
                    assert await raw.receive() == '{"a":["question"],"i":1}'
                raw.reset()
            await wait_until(lambda: idle(server, clients=1))
        stop.set()
        await wait_until(lambda: idle(server))
        assert live_objects(*leak_types()) == baseline
    assert tracker.started == rounds
    if where == "mid-stream":
        assert tracker.endings == ["finalised"] * rounds
    elif where == "mid-request":
        assert tracker.endings == ["cancelled"] * rounds
    else:
        # §12.3: pending requests fail before handlers are cancelled
        assert tracker.endings == ["request failed: ConnectionClosed"] * rounds
    assert closes.count(1006) == rounds
    assert healthy.lost == 0
    assert not errors.records
    add("faults", f"resets {where}", rounds)


# -- vanished peers --------------------------------------------------------------------------------


async def test_vanished_peers_are_found_by_the_heartbeat(nursery: trio.Nursery) -> None:
    # long enough that a busy machine never misses the healthy client's pong
    server = make_server(heartbeat_interval=1.0, close_timeout=0.5)
    closes: list[tuple[int, str]] = []
    server.on("close", lambda client, code, reason, user: closes.append((int(code), reason)))
    tracker = Tracker()
    tracker.install(server)
    vanishing = scale(20, 200)
    with error_log() as errors, trio.fail_after(60):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        stop = trio.Event()
        healthy = Healthy()
        await nursery.start(healthy.run, port, stop)
        ghosts = []
        for _ in range(vanishing):
            raw = await RawWebSocket.connect(port)
            await raw.send_text('{"a":["hold"],"i":1}')  # then never read or answer again
            ghosts.append(raw)
        await wait_until(lambda: len(closes) == vanishing, timeout=30)
        assert closes == [(1011, "keepalive ping timeout")] * vanishing
        assert tracker.endings == ["cancelled"] * vanishing
        stop.set()
        await wait_until(lambda: idle(server))
        for raw in ghosts:
            await raw.aclose()
    assert healthy.lost == 0 and healthy.replies > 0
    assert not errors.records
    add("faults", "vanished peers closed by the heartbeat", vanishing)


# -- shutdown with work in flight ------------------------------------------------------------------


async def test_shutdown_with_requests_and_streams_in_flight(nursery: trio.Nursery) -> None:
    server = make_server(close_timeout=1)
    tracker = Tracker()
    tracker.install(server)
    clients = scale(10, 100)
    outcomes: list[str] = []
    client_closes: list[tuple[int, str, bool]] = []
    serving = trio.CancelScope()

    async def serve(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with serving:
            await server.serve("127.0.0.1", 0, task_status=task_status)

    async def expect_closed(what: str, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            await call()
        except wsw.ConnectionClosed as exc:
            outcomes.append(f"{what}: ConnectionClosed {exc.code}")
        except wsw.ChannelClosed:
            outcomes.append(f"{what}: ChannelClosed")
        else:
            outcomes.append(f"{what}: returned")

    async def one_client(ready: trio.Semaphore) -> None:
        client = wsw.Client()
        client.on("question", trio.sleep_forever)  # the server's request stays pending
        client.on("close", lambda c, code, reason, user: client_closes.append((int(code), reason, user)))
        async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client), trio.open_nursery() as work:
            stream = await client.request("endless")

            async def consume() -> None:
                async with stream:
                    async for _ in stream.iterate():
                        await trio.sleep(0)

            work.start_soon(expect_closed, "request", lambda: client.request("hold"))
            work.start_soon(expect_closed, "server request", lambda: client.request("ask-client"))
            work.start_soon(expect_closed, "stream", consume)
            ready.release()

    with error_log() as errors, trio.fail_after(60):
        port = await nursery.start(serve)
        baseline = task_count()
        ready = trio.Semaphore(0)
        async with trio.open_nursery() as running:
            for _ in range(clients):
                running.start_soon(one_client, ready)
            for _ in range(clients):
                await ready.acquire()
            await wait_until(lambda: tracker.started == 3 * clients)
            await server.aclose()
        await wait_until(lambda: idle(server))
        await wait_until(lambda: task_count() <= baseline)  # serving stopped, nothing left
    assert sorted(set(outcomes)) == [
        "request: ConnectionClosed 1001",
        "server request: ConnectionClosed 1001",
        "stream: ChannelClosed",
    ]
    assert len(outcomes) == 3 * clients
    assert client_closes == [(1001, "server is closing", False)] * clients
    assert sorted(tracker.endings) == sorted(
        ["cancelled"] * clients + ["finalised"] * clients + ["request failed: ConnectionClosed"] * clients
    )
    assert not errors.records
    add("faults", "clients shut down with work in flight", clients)


# -- cancellation at every checkpoint --------------------------------------------------------------


class CancelAtStep(trio.abc.Instrument):
    """Cancels ``scope`` at ``task``'s ``step``-th checkpoint: when the task is scheduled
    there (``wake``), or as soon as it has yielded there and waits (``park``)."""

    def __init__(self, task: trio.lowlevel.Task, step: int, scope: trio.CancelScope, mode: str) -> None:
        self.task, self.step, self.scope, self.mode = task, step, scope, mode
        #: Checkpoints reached so far, counted the way ``mode`` counts them.
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and self.mode == "wake":
            self.steps += 1
            if self.steps == self.step:
                self.scope.cancel()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and self.mode == "park":
            self.steps += 1
            if self.steps == self.step:
                self.scope.cancel()


async def echo(client: wsw.Client) -> Any:
    assert await client.request("echo", [1, "x"]) == [1, "x"]


async def slow(client: wsw.Client) -> Any:
    assert await client.request("slow", 5) == 5


async def stream(client: wsw.Client) -> Any:
    ch = await client.request("stream", 4)
    async with ch:
        assert [v async for v in ch.iterate()] == [0, 1, 2, 3]


async def channel(client: wsw.Client) -> Any:
    ch = await client.request("chan")
    async with ch:
        await ch.emit("hi", 1)
        async for name, args in ch:
            assert (name, args) == ("echo", (1,))
            break
        await ch.emit("bye")


async def named(client: wsw.Client) -> Any:
    assert await client.of("room").request("echo", "r") == "r"


OPERATIONS = {"echo": echo, "slow": slow, "stream": stream, "channel": channel, "named": named}


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_cancellation_at_every_checkpoint(operation: str, nursery: trio.Nursery) -> None:
    server = make_server()
    op = OPERATIONS[operation]
    with error_log() as errors, trio.fail_after(120):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
            cancelled = {"wake": 0, "park": 0}
            for mode in cancelled:
                step = 0
                while True:
                    scope = trio.CancelScope()
                    instrument = CancelAtStep(trio.lowlevel.current_task(), step, scope, mode)
                    if step == 0:
                        scope.cancel()  # already cancelled when the operation starts
                    trio.lowlevel.add_instrument(instrument)
                    try:
                        with scope:
                            await op(client)
                    finally:
                        trio.lowlevel.remove_instrument(instrument)
                    cancelled[mode] += scope.cancelled_caught
                    # whatever the step, the connection stays usable and nothing is left behind
                    await echo(client)
                    await wait_until(lambda: idle(server, clients=1))
                    stats = client.statistics()
                    assert (stats.pending_requests, stats.open_channels, stats.running_handlers) == (0, 0, 0)
                    if not scope.cancelled_caught and instrument.steps < step:
                        break  # the operation finished before this step: every checkpoint was hit
                    step += 1
        await wait_until(lambda: idle(server))
    # step 0 cancels in both modes; a parked wait is cancelled at least once more
    assert cancelled["wake"] >= 1 and cancelled["park"] >= 2
    assert not errors.records
    add("faults", "cancellation points injected", step + 1)
    record("faults", **{f"checkpoints in one {operation}": step})
