"""Broadcasts across real server processes (examples/cluster.py) sharing a real redis-server.

Each test starts redis-server on a free 127.0.0.1 port and two or three server processes, then
connects clients to each over real sockets. Without redis-server or coredis the tests skip,
except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw

from .bounded import bound_tests
from .redis_support import START_TIMEOUT, RedisServer, redis_server_path, require_redis_module

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "examples" / "cluster.py"
TIMEOUT = 30


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require_redis_module()
    server = RedisServer(redis_server_path(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Node:
    """One ``examples/cluster.py`` process; ``port`` is where it serves."""

    def __init__(self, name: str, redis: RedisServer, prefix: str, directory: Path) -> None:
        self.name = name
        port_file = directory / f"{name}.port"
        self.log = directory / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(CLUSTER), "--redis", redis.url, "--prefix", prefix,
                 "--port", "0", "--name", name, "--port-file", str(port_file)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cluster node {name} did not start:\n{self.log.read_text()}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=START_TIMEOUT)


@pytest.fixture
def start_nodes(redis_server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., list[Node]]]:
    """``start_nodes("a", "b", ...)``: server processes sharing ``redis_server`` and a prefix."""
    prefix = f"test-{secrets.token_hex(4)}"
    nodes: list[Node] = []

    def start(*names: str) -> list[Node]:
        for name in names:
            nodes.append(Node(name, redis_server, prefix, tmp_path))
        return nodes

    try:
        yield start
    finally:
        for node in nodes:
            node.stop()


class Ear:
    """A client of one node that records the ``news`` events it gets, root and ``room``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.client = wsw.Client()
        self.heard: list[tuple[str, str, str]] = []
        self.client.on("news", lambda origin, text: self.heard.append(("", origin, text)))
        self.client.of("room").on("news", lambda origin, text: self.heard.append(("room", origin, text)))

    async def wait_for(self, *entries: tuple[str, str, str]) -> None:
        with trio.fail_after(TIMEOUT):
            while not all(entry in self.heard for entry in entries):
                await trio.sleep(0.005)

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.client.request("status")
        return status


@asynccontextmanager
async def ears(nodes: list[Node], per_node: int) -> AsyncIterator[list[list[Ear]]]:
    """``per_node`` connected clients for each node."""
    async with AsyncExitStack() as stack:
        result: list[list[Ear]] = []
        for node in nodes:
            row = [Ear(node) for _ in range(per_node)]
            for ear in row:
                await stack.enter_async_context(wsw.open_client(node.url, client=ear.client))
            result.append(row)
        yield result


async def wait_until_healthy(ear: Ear, healthy: bool = True) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        while (status := await ear.status())["healthy"] is not healthy:
            await trio.sleep(0.02)
    return status


async def test_broadcasts_from_every_process_reach_every_client_once(
    start_nodes: Callable[..., list[Node]],
) -> None:
    nodes = start_nodes("a", "b", "c")
    async with ears(nodes, per_node=2) as rows:
        everyone = [ear for row in rows for ear in row]
        for row in rows:
            assert (await row[0].status())["healthy"] is True
        for row in rows:
            assert await row[1].client.request("say", f"hello from {row[0].node.name}") == 0
        assert await rows[0][0].client.of("room").request("say", "in the room") == 0
        # Then a last event from each process. A process's messages reach every subscriber in
        # the order it published them, so a duplicate would arrive before its last event.
        for row in rows:
            await row[0].client.request("say", "last")
        expected = sorted(
            [("", node.name, f"hello from {node.name}") for node in nodes]
            + [("room", "a", "in the room")]
            + [("", node.name, "last") for node in nodes]
        )
        for ear in everyone:
            await ear.wait_for(*expected)
            assert sorted(ear.heard) == expected
        for row, published in zip(rows, (3, 2, 2), strict=True):
            status = await row[0].status()
            assert status["published"] == published
            assert status["received"] == len(expected) - published
            assert (status["publish_failures"], status["malformed"], status["missed"]) == (0, 0, 0)
            assert status["clients"] == 2


async def test_redis_restarted_mid_test(
    start_nodes: Callable[..., list[Node]], redis_server: RedisServer
) -> None:
    a, b = start_nodes("a", "b")
    async with ears([a, b], per_node=2) as rows:
        on_a, on_b = rows
        await on_a[0].client.request("say", "before")
        for ear in on_a + on_b:
            await ear.wait_for(("", "a", "before"))

        redis_server.stop()
        # Local delivery goes on while Redis is down; the failure is reported.
        await on_a[0].client.request("say", "a alone")
        await on_b[0].client.request("say", "b alone")
        for ear in on_a:
            await ear.wait_for(("", "a", "a alone"))
        for ear in on_b:
            await ear.wait_for(("", "b", "b alone"))
        for row in rows:
            status = await wait_until_healthy(row[0], healthy=False)
            assert status["publish_failures"] >= 1
            assert status["last_error"]
            assert status["connected"] is False

        redis_server.start()
        for row in rows:
            status = await wait_until_healthy(row[0])
            assert status["reconnects"] >= 1
        await on_b[1].client.request("say", "after")
        await on_a[1].client.of("room").request("say", "after")
        for row, alone in ((on_a, ("", "a", "a alone")), (on_b, ("", "b", "b alone"))):
            for ear in row:
                await ear.wait_for(("", "b", "after"), ("room", "a", "after"))
                assert sorted(ear.heard) == sorted(
                    [("", "a", "before"), alone, ("", "b", "after"), ("room", "a", "after")]
                )


async def test_a_process_started_without_redis_delivers_locally_then_joins(
    start_nodes: Callable[..., list[Node]], redis_server: RedisServer
) -> None:
    redis_server.stop()
    a, b = start_nodes("a", "b")
    async with ears([a, b], per_node=1) as rows:
        (on_a,), (on_b,) = rows
        assert (await on_a.status())["healthy"] is False
        await on_a.client.request("say", "nobody else")
        await on_a.wait_for(("", "a", "nobody else"))
        redis_server.start()
        await wait_until_healthy(on_a)
        await wait_until_healthy(on_b)
        await on_b.client.request("say", "now everyone")
        await on_a.wait_for(("", "b", "now everyone"))
        await on_b.wait_for(("", "b", "now everyone"))
        assert on_b.heard == [("", "b", "now everyone")]


def test_bench_quick_mode_runs(tmp_path: Path) -> None:
    require_redis_module()
    redis_server_path()
    out = tmp_path / "cluster.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "cluster.py"),
            "--quick",
            "--timeout",
            "60",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert set(results) == {"1", "3"}
    for result in results.values():
        (run,) = result["runs"]
        assert run["events/s"] > 0 and run["received"] == run["expected"]
    assert "3 ÷ 1 processes" in done.stdout


async def test_concurrent_emits_share_publishes_and_keep_their_order(redis_server: RedisServer) -> None:
    # Two buses in one process stand for two processes: they share the URL and prefix.
    redis = require_redis_module()
    prefix = f"burst-{secrets.token_hex(4)}"
    bus_a = redis.RedisBroadcast(redis_server.url, prefix=prefix)
    bus_b = redis.RedisBroadcast(redis_server.url, prefix=prefix)
    server_a = wsw.Server(heartbeat_interval=None, broadcast=bus_a)
    # room for the whole burst: bus frames never wait for a client, and dropping is not the point
    server_b = wsw.Server(heartbeat_interval=None, broadcast=bus_b, send_queue_size=4096)
    tasks, each = 20, 100
    received: dict[int, list[int]] = {task: [] for task in range(tasks)}
    done = trio.Event()

    def news(task: int, i: int) -> None:
        received[task].append(i)
        if sum(map(len, received.values())) == tasks * each:
            done.set()

    async def emitter(task: int) -> None:
        for i in range(each):
            await server_a.emit("news", task, i)

    with trio.fail_after(TIMEOUT):
        async with bus_a, bus_b, trio.open_nursery() as nursery:
            port = await nursery.start(server_b.serve, "127.0.0.1", 0)
            async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
                client.on("news", news)
                while not server_b.clients:
                    await trio.sleep(0.01)
                async with trio.open_nursery() as emitters:
                    for task in range(tasks):
                        emitters.start_soon(emitter, task)
                # every emit has returned: its frame went out in a PUBLISH that succeeded
                assert bus_a._settled == tasks * each
                assert bus_a.statistics().publish_failures == 0
                await done.wait()
            nursery.cancel_scope.cancel()
    assert all(received[task] == list(range(each)) for task in range(tasks))
    assert bus_a._number < tasks * each / 4  # frames emitted together shared PUBLISHes
    assert bus_a.statistics().publish_failures == 0
    assert bus_b.statistics().received == tasks * each


async def test_group_emits_reach_members_in_other_processes_only(redis_server: RedisServer) -> None:
    redis = require_redis_module()
    prefix = f"group-{secrets.token_hex(4)}"
    bus_a = redis.RedisBroadcast(redis_server.url, prefix=prefix)
    bus_b = redis.RedisBroadcast(redis_server.url, prefix=prefix)
    server_a = wsw.Server(heartbeat_interval=None, broadcast=bus_a)
    server_b = wsw.Server(heartbeat_interval=None, broadcast=bus_b)
    server_b.on("join", lambda name: server_b.group(name).add(wsw.current_client()))
    seen: dict[str, list[Any]] = {"member": [], "other": []}
    with trio.fail_after(TIMEOUT):
        async with bus_a, bus_b, trio.open_nursery() as nursery:
            port = await nursery.start(server_b.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}/"
            async with wsw.open_client(url) as member, wsw.open_client(url) as other:
                member.on("news", seen["member"].append)
                other.on("news", seen["other"].append)
                await member.request("join", "team")
                await server_a.group("team").emit("news", "team only")  # no member in A
                await server_a.emit("news", "everyone")
                while len(seen["other"]) < 1 or len(seen["member"]) < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert seen == {"member": ["team only", "everyone"], "other": ["everyone"]}


async def test_a_full_outbox_waits_then_reports(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis = require_redis_module()
    bus = redis.RedisBroadcast(redis_server.url, outbox_size=4, batch_size=2, publish_timeout=0.5)
    server = wsw.Server(heartbeat_interval=None, broadcast=bus)
    assert redis_server.process is not None
    with trio.fail_after(TIMEOUT):
        async with bus:
            assert bus.healthy
            redis_server.process.send_signal(signal.SIGSTOP)  # Redis stops answering
            try:
                async with trio.open_nursery() as emitters:
                    for i in range(12):
                        emitters.start_soon(server.emit, "news", i)
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
            # 2 frames in the hung PUBLISH, 4 in the outbox, 6 emits waiting for room: all
            # reported, none lost silently, and every emit returned
            stats = bus.statistics()
            assert (stats.published, stats.publish_failures) == (12, 12)
            assert not bus.healthy
    assert any("not keeping up" in r.getMessage() for r in caplog.records)


bound_tests(globals())
