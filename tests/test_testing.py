"""The testing helpers users get: the pytest fixtures and the in-memory client."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper.testing import open_test_client

from .bounded import bound_tests


@pytest.fixture
def wsw_server() -> wsw.Server:
    """What a user's conftest does: hand the plugin the application's server."""

    def authorize(handshake: wsw.Handshake) -> Any:
        if handshake.header("authorization") == "no":
            raise wsw.Reject(403)
        return handshake.header("authorization")

    server = wsw.Server(heartbeat_interval=None, authorize=authorize)
    server.on("echo", lambda x: x)
    server.on("auth", lambda: wsw.current_client().auth)
    return server


async def test_the_client_fixture_is_one_line(wsw_client: wsw.Client) -> None:
    assert await wsw_client.request("echo", [1, "two"]) == [1, "two"]


async def test_connect_fixture_makes_more_clients(
    wsw_server: wsw.Server, wsw_connect: Any, wsw_client: wsw.Client
) -> None:
    async with wsw_connect(headers=[("Authorization", "ann")]) as other:
        assert await other.request("auth") == "ann"
        assert len(wsw_server.clients) == 2
        # a broadcast reaches both, as it would over sockets
        got: list[str] = []
        other.on("news", got.append)
        wsw_client.on("news", got.append)
        assert await wsw_server.emit("news", "hi") == []
        with trio.fail_after(5):
            while len(got) < 2:
                await trio.sleep(0)
    assert got == ["hi", "hi"]


async def test_the_in_memory_handshake_applies_the_servers_checks(wsw_server: wsw.Server) -> None:
    with pytest.raises(wsw.ConnectionRejected) as info:
        async with open_test_client(wsw_server, headers=[("Authorization", "no")]):
            pass  # pragma: no cover
    assert info.value.status == 403
    async with open_test_client(wsw_server, path="/x?y=1") as client:
        assert await client.request("auth") is None
        (server_side,) = wsw_server.clients
        assert server_side.handshake is not None
        assert server_side.handshake.query == {"y": ["1"]}


async def test_statistics_of_server_and_client(wsw_server: wsw.Server, wsw_client: wsw.Client) -> None:
    release = trio.Event()

    @wsw_server.on("wait")
    async def wait() -> None:
        await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wsw_client.request, "wait")
        with trio.fail_after(5):
            while wsw_server.statistics().active_requests < 1:
                await trio.sleep(0)
        assert wsw_server.statistics() == wsw.ServerStatistics(
            clients=1,
            pending_requests=0,
            active_requests=1,
            running_handlers=1,
            open_channels=0,
            queued_frames=0,
        )
        stats = wsw_client.statistics()
        assert (stats.connected, stats.pending_requests, stats.connections) == (True, 1, 1)
        release.set()
    assert wsw_client.statistics().pending_requests == 0


bound_tests(globals())
