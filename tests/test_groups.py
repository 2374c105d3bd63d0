"""Groups: named sets of clients that ``group.emit`` reaches, on every server sharing a
broadcast backend, and no one else; members leave when they disconnect."""

from __future__ import annotations

import json
from typing import Any

import pytest

import trio_wswrapper as wsw
from trio_wswrapper.testing import open_test_client

from .bounded import bound_tests
from .redis_support import require_redis_module
from .test_broadcast import bus_message, connected, settle


async def test_members_get_group_events_and_no_one_else() -> None:
    server = wsw.Server(heartbeat_interval=None)
    room = server.group("room-1")
    assert len(room) == 0 and room.clients == []
    here: dict[str, wsw.Client] = {}
    server.on("hello", lambda name: here.__setitem__(name, wsw.current_client()))
    async with connected(server, server, server) as (a, b, c):
        for name, listener in zip("abc", (a, b, c), strict=True):
            await listener.client.request("hello", name)
        first, second, third = here["a"], here["b"], here["c"]
        room.add(first)
        room.add(third)
        room.add(third)  # again: no effect
        assert first in room and second not in room and len(room) == 2
        assert room.clients == [first, third]
        assert server.group("room-1").clients == [first, third]  # the same group by name
        assert await room.emit("news", 1) == []
        assert await room.emit("news", 2, channel="room") == []
        for listener in (a, c):
            assert await listener.wait_for(2) == [("", (1,)), ("room", (2,))]
        await settle(a, b, c)
        assert b.seen == []
        room.discard(third)
        room.discard(second)  # not a member: no effect
        await room.emit("news", 3)
        assert await a.wait_for(3) == [("", (1,)), ("room", (2,)), ("", (3,))]
        await settle(a, c)
        assert len(c.seen) == 2
    assert "room-1" not in server._groups  # nothing is kept for an empty group


async def test_members_leave_every_group_when_they_disconnect() -> None:
    server = wsw.Server(heartbeat_interval=None)
    async with open_test_client(server):
        (client,) = server.clients
        server.group("a").add(client)
        server.group("b").add(client)
        assert client in server.group("a") and client in server.group("b")
    assert server._groups == {} and server._memberships == {}
    with pytest.raises(ValueError, match="not connected"):
        server.group("a").add(client)


async def test_group_names_and_events_are_checked() -> None:
    server = wsw.Server(heartbeat_interval=None)
    with pytest.raises(ValueError):
        server.group("")
    group = server.group("g")
    with pytest.raises(ValueError):
        await group.emit("open")  # a reserved name on the root channel
    with pytest.raises((ValueError, TypeError)):
        await group.emit("news", channel="")
    assert repr(group) == "<trio_wswrapper.Group 'g' (0 here)>"


async def test_groups_reach_members_on_every_server_of_a_shared_backend() -> None:
    hub = wsw.LocalBroadcast()
    one = wsw.Server(heartbeat_interval=None, broadcast=hub)
    two = wsw.Server(heartbeat_interval=None, broadcast=hub)

    def join(name: str) -> None:
        client = wsw.current_client()
        assert client.server is not None
        client.server.group(name).add(client)

    for server in (one, two):
        server.on("join", join)
    async with connected(one, two, two) as (a, b, c):
        await a.client.request("join", "user:7")
        await c.client.request("join", "user:7")
        assert await two.group("user:7").emit("news", "hi") == []
        assert await a.wait_for(1) == [("", ("hi",))]
        assert await c.wait_for(1) == [("", ("hi",))]
        await settle(a, b, c)
        assert b.seen == []


async def test_group_frames_on_the_redis_bus(redis: Any) -> None:
    bus = redis.RedisBroadcast()
    server = wsw.Server(heartbeat_interval=None, broadcast=bus)
    server.on("join", lambda: server.group("g").add(wsw.current_client()))
    async with connected(server, server) as (member, other):
        await member.client.request("join")

        def envelope(entries: list[Any], number: int) -> bytes:
            return json.dumps({"v": 1, "o": "elsewhere", "n": number, "f": entries}).encode()

        bus._on_message(bus_message(envelope([["g", '{"a":["news","to g"]}'], '{"a":["news","all"]}'], 1)))
        bus._on_message(bus_message(envelope([["nobody", '{"a":["news","to nobody"]}']], 2)))
        for bad in ([["g"]], [["g", 5]], [[1, "x"]], [["g", '{"a":["news",1]}', "extra"]]):
            bus._on_message(bus_message(envelope(bad, 3)))
        assert await member.wait_for(2) == [("", ("to g",)), ("", ("all",))]
        assert await other.wait_for(1) == [("", ("all",))]
        await settle(member, other)
        assert len(member.seen) == 2 and len(other.seen) == 1
    assert bus.statistics().malformed == 4


@pytest.fixture
def redis() -> Any:
    return require_redis_module()


bound_tests(globals())
