"""Broadcast backends in process: the default, a hub shared by servers, a custom backend, and
how RedisBroadcast treats bus messages and a bus that is not running (no Redis needed)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper.testing import open_test_client

from .bounded import bound_tests
from .redis_support import require_redis_module


class Listener:
    """A client that records every ``news`` event, on the root and on channel ``room``."""

    def __init__(self) -> None:
        self.client = wsw.Client()
        self.seen: list[tuple[str, tuple[Any, ...]]] = []
        self.client.on("news", lambda *args: self.seen.append(("", args)))
        self.client.of("room").on("news", lambda *args: self.seen.append(("room", args)))

    async def wait_for(self, count: int) -> list[tuple[str, tuple[Any, ...]]]:
        with trio.fail_after(10):
            while len(self.seen) < count:
                await trio.sleep(0.001)
        return self.seen


@asynccontextmanager
async def connected(*servers: wsw.Server) -> AsyncIterator[list[Listener]]:
    """One listening client connected to each server."""
    listeners = [Listener() for _ in servers]
    async with AsyncExitStack() as stack:
        for server, listener in zip(servers, listeners, strict=True):
            await stack.enter_async_context(open_test_client(server, client=listener.client))
        yield listeners


async def settle(*listeners: Listener) -> None:
    """Let in-flight events arrive: a request round trip on each connection."""
    for listener in listeners:
        with pytest.raises(wsw.RemoteError):
            await listener.client.request("no such handler")


async def test_default_backend_is_private_to_the_server() -> None:
    one, two = wsw.Server(heartbeat_interval=None), wsw.Server(heartbeat_interval=None)
    assert isinstance(one.broadcast, wsw.LocalBroadcast)
    assert isinstance(one.broadcast, wsw.BroadcastBackend)
    assert one.broadcast is not two.broadcast
    async with connected(one, two) as (a, b):
        assert await one.emit("news", 1) == []
        assert await a.wait_for(1) == [("", (1,))]
        await settle(a, b)
        assert b.seen == []
    assert one.broadcast.statistics() == wsw.BroadcastStatistics(published=1)


async def test_shared_local_backend_reaches_every_attached_server() -> None:
    hub = wsw.LocalBroadcast()
    one = wsw.Server(heartbeat_interval=None, broadcast=hub)
    two = wsw.Server(heartbeat_interval=None, broadcast=hub)
    assert one.broadcast is hub and set(hub.servers) == {one, two}
    async with connected(one, two, one) as listeners:
        await one.emit("news", "from one")
        await two.of("room").emit("news", "from two")
        for listener in listeners:
            assert await listener.wait_for(2) == [("", ("from one",)), ("room", ("from two",))]
        await settle(*listeners)
        assert all(len(listener.seen) == 2 for listener in listeners)
    assert hub.statistics().published == 2


async def test_failures_name_the_clients_of_any_attached_server() -> None:
    hub = wsw.LocalBroadcast()
    one = wsw.Server(heartbeat_interval=None, broadcast=hub, send_queue_size=1)
    two = wsw.Server(heartbeat_interval=None, broadcast=hub, send_queue_size=1)
    async with connected(one, two) as listeners:
        clients = [*one.clients, *two.clients]
        # Without a checkpoint between them, the second frame finds each queue still full.
        failures = hub.deliver('{"a":["news",1]}') + hub.deliver('{"a":["news",2]}')
        assert sorted(id(c) for c, _ in failures) == sorted(id(c) for c in clients)
        assert all(isinstance(exc, trio.WouldBlock) for _, exc in failures)
        for listener in listeners:
            assert await listener.wait_for(1) == [("", (1,))]
    assert hub.statistics().missed == 2


async def test_a_custom_backend_gets_each_frame_once() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.frames: list[str] = []
            self.servers: list[wsw.Server] = []

        def attach(self, server: wsw.Server) -> None:
            self.servers.append(server)

        async def publish(self, frame: str, group: str | None = None) -> list[tuple[wsw.Client, Exception]]:
            self.frames.append(frame)
            return [failure for server in self.servers for failure in server._broadcast(frame, group)]

    backend = Recorder()
    server = wsw.Server(heartbeat_interval=None, broadcast=backend)
    assert backend.servers == [server]
    async with connected(server) as (listener,):
        await server.emit("news", "x")
        await server.of("room").emit("news", "y")
        assert await listener.wait_for(2) == [("", ("x",)), ("room", ("y",))]
    assert backend.frames == ['{"a":["news","x"]}', '{"a":["news","y"],"c":"room"}']


# --- RedisBroadcast without Redis: bus messages and the not-running state -------------------


@pytest.fixture
def redis() -> Any:
    """The ``trio_wswrapper.redis`` module; skips without coredis, except under CI."""
    return require_redis_module()


def bus_message(data: Any) -> Any:
    return {"type": "message", "pattern": None, "channel": b"trio_wswrapper:broadcast", "data": data}


def envelope(
    frame: str | list[str], origin: str = "0123456789abcdef", number: int = 1, **extra: Any
) -> bytes:
    frames = [frame] if isinstance(frame, str) else frame
    return json.dumps({"v": 1, "o": origin, "n": number, "f": frames, **extra}).encode()


NEWS = '{"a":["news",1]}'

HOSTILE: list[Any] = [
    b"",
    b"\xff\xfe not utf-8",
    b"not json",
    b"[" * 100_000,  # over max_message_size
    b"[1, 2]",
    b'"a string"',
    json.dumps({"o": "x", "n": 1, "f": [NEWS]}).encode(),  # no version
    json.dumps({"v": 2, "o": "x", "n": 1, "f": [NEWS]}).encode(),
    json.dumps({"v": 1, "o": 5, "n": 1, "f": [NEWS]}).encode(),
    json.dumps({"v": 1, "o": "x", "n": 1, "f": ["news", 1]}).encode(),  # a frame not a string
    json.dumps({"v": 1, "o": "x", "n": 1, "f": NEWS}).encode(),  # frames not a list
    json.dumps({"v": 1, "o": "x", "n": 1, "f": []}).encode(),  # no frame
    json.dumps({"v": 1, "o": "x", "f": [NEWS]}).encode(),  # no number
    json.dumps({"v": 1, "o": "x", "n": "1", "f": [NEWS]}).encode(),
    envelope("not json"),
    envelope('{"i":7,"a":["news",1]}'),  # a request: clients would answer it
    envelope('{"h":3,"a":["news",1]}'),  # an anonymous channel
    envelope('{"c":5,"a":["news",1]}'),  # a channel name that is not a string
    envelope('{"a":["open"]}'),  # a reserved name on the root channel
    envelope('{"i":7,"d":1}'),  # an answer
    envelope('{"i":7,"x":"stop"}'),  # a cancellation
    envelope([NEWS, '{"i":7,"a":["news",1]}']),  # one bad frame drops the whole message
    envelope('{"a":["news","' + "x" * 2000 + '"]}'),  # over max_message_size
    12345,
]


async def test_hostile_bus_messages_are_dropped_and_logged(
    redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bus = redis.RedisBroadcast(max_message_size=1024)
    server = wsw.Server(heartbeat_interval=None, broadcast=bus)
    deep = ("[" * 100_000 + "]" * 100_000).encode()  # deeper than the JSON decoder recurses
    async with connected(server) as (listener,):
        bus._max_message_size = len(deep)
        bus._on_message(bus_message(deep))
        bus._max_message_size = 1024
        for data in HOSTILE:
            bus._on_message(bus_message(data))
        # A message this backend published is not delivered twice; another origin's is.
        bus._on_message(bus_message(envelope('{"a":["news","mine"]}', origin=bus.origin)))
        bus._on_message(bus_message(envelope('{"a":["news","theirs"]}', extra=1)))
        # The same message twice (a retried PUBLISH) is delivered once.
        bus._on_message(bus_message(envelope('{"a":["news","theirs"]}', extra=1)))
        bus._on_message(bus_message(envelope('{"c":"room","a":["news","room"]}', number=2).decode()))
        # Frames batched in one message are delivered in order.
        batch = ['{"a":["news","b1"]}', '{"c":"room","a":["news","b2"]}', '{"a":["news","b3"]}']
        bus._on_message(bus_message(envelope(batch, number=3)))
        assert await listener.wait_for(5) == [
            ("", ("theirs",)),
            ("room", ("room",)),
            ("", ("b1",)),
            ("room", ("b2",)),
            ("", ("b3",)),
        ]
        await settle(listener)
        assert len(listener.seen) == 5
    stats = bus.statistics()
    assert (stats.malformed, stats.received, stats.published) == (len(HOSTILE) + 1, 5, 0)
    dropped = [r for r in caplog.records if "malformed message from the Redis bus" in r.getMessage()]
    assert dropped and all(r.levelno == logging.WARNING for r in dropped)


async def test_a_bus_that_is_not_running_delivers_locally_and_reports(
    redis: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = redis.RedisBroadcast(prefix="chat")
    assert bus.channel == "chat:broadcast"
    assert len(bus.origin) == 16 and bus.origin != redis.RedisBroadcast().origin
    server = wsw.Server(heartbeat_interval=None, broadcast=bus)
    async with connected(server) as (listener,):
        assert await server.emit("news", 1) == []
        assert await listener.wait_for(1) == [("", (1,))]
    assert not bus.healthy
    assert isinstance(bus.last_error, RuntimeError)
    stats = bus.statistics()
    assert (stats.published, stats.publish_failures, stats.connected) == (1, 1, False)
    assert any("not published to Redis" in r.getMessage() for r in caplog.records)


async def test_the_memory_of_received_messages_is_bounded(
    redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis, "RECENT", 3)
    bus = redis.RedisBroadcast()
    server = wsw.Server(heartbeat_interval=None, broadcast=bus)
    async with connected(server) as (listener,):
        for number in (1, 2, 3, 4, 1):  # 1 is forgotten once 4 arrives, so it is new again
            bus._on_message(bus_message(envelope(f'{{"a":["news",{number}]}}', number=number)))
        assert len(bus._recent_set) == len(bus._recent) == 3
        seen = await listener.wait_for(5)
        assert [args for _, args in seen] == [(1,), (2,), (3,), (4,), (1,)]


def test_options_are_checked(redis: Any) -> None:
    with pytest.raises(ValueError, match="prefix"):
        redis.RedisBroadcast(prefix="")
    with pytest.raises(ValueError, match="backoff"):
        redis.RedisBroadcast(min_backoff=2, max_backoff=1)
    with pytest.raises(ValueError, match="batch_size"):
        redis.RedisBroadcast(batch_size=0)


bound_tests(globals())
