"""Reconnecting clients: backoff, handlers that survive, offline emits, drops at awkward moments.

These run over real loopback sockets in real time, with short backoff delays; every wait is
bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw

from .bounded import bound_tests

TIMEOUT = 10
FAST = wsw.Reconnect(initial_delay=0.01, max_delay=0.05, jitter=0.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drop_all(server: wsw.Server) -> None:
    """Cut every client's TCP connection without a closing handshake (the client sees 1006)."""
    for client in server.clients:
        transport: Any = client._gen.transport  # type: ignore[union-attr]
        if hasattr(transport, "ws"):  # trio-websocket
            await transport.ws._close_stream()
        else:  # wsproto, websockets: the TCP stream under them
            await trio.aclose_forcefully(transport.stream)


async def wait_for(predicate: Any) -> None:
    with trio.fail_after(TIMEOUT):
        while not predicate():
            await trio.sleep(0.005)


def make_server(**kwargs: Any) -> wsw.Server:
    server = wsw.Server(heartbeat_interval=None, **kwargs)
    server.on("echo", lambda x: x)
    return server


# -- policy --------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = wsw.Reconnect(initial_delay=0.5, multiplier=2, max_delay=3, jitter=0)
    assert [policy.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(10_000) == 3.0  # no overflow for long outages


def test_jitter_shortens_the_delay_by_at_most_its_fraction() -> None:
    policy = wsw.Reconnect(initial_delay=1, jitter=0.25)
    assert policy.delay(0, lambda: 0.0) == 1.0
    assert policy.delay(0, lambda: 1.0) == 0.75
    assert policy.delay(0, lambda: 0.5) == 0.875


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay": 0},
        {"max_delay": -1},
        {"multiplier": 0},
        {"jitter": 1.5},
        {"max_attempts": 0},
        {"offline_queue_size": -1},
    ],
)
def test_policy_validates_its_fields(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        wsw.Reconnect(**kwargs)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/", "ws://", "127.0.0.1:8080", "ws://h:99999/"])
async def test_bad_urls_are_refused_before_dialling(url: str) -> None:
    with pytest.raises(ValueError, match="invalid WebSocket URL"):
        async with wsw.open_client(url, reconnect=FAST):
            pass  # pragma: no cover


# -- reconnection ----------------------------------------------------------------------------------


async def test_handlers_survive_and_close_tells_a_drop_from_a_user_close(nursery: trio.Nursery) -> None:
    server = make_server()

    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("name")

    port = await nursery.start(server.serve, "127.0.0.1", 0)
    client = wsw.Client()
    client.on("name", lambda: "alice")
    opens: list[int] = []
    closes: list[tuple[int, bool]] = []
    client.on("open", lambda c: opens.append(len(opens)))
    client.on("close", lambda c, code, reason, user: closes.append((code, user)))
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client, reconnect=FAST):
        with trio.fail_after(TIMEOUT):
            assert await client.request("ask") == "alice"
            await drop_all(server)
            await wait_for(lambda: len(opens) == 2 and client.connected)
            assert closes == [(1006, False)]
            assert await client.request("ask") == "alice"  # the handler registered once still works
            assert client.statistics().connections == 2
    assert closes == [(1006, False), (1000, True)]
    with pytest.raises(wsw.ConnectionClosed):
        await client.wait_connected()


async def test_server_restart_on_the_same_port(nursery: trio.Nursery) -> None:
    port = free_port()
    first = make_server()
    await nursery.start(first.serve, "127.0.0.1", port)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=FAST) as client:
        with trio.fail_after(TIMEOUT):
            assert await client.request("echo", 1) == 1
            await first.aclose()  # 1001 to every client, the listener stops
            await wait_for(lambda: not client.connected)
            with pytest.raises(wsw.ConnectionClosed):
                await client.request("echo", 2)  # down: requests fail at once
            second = make_server()
            await nursery.start(second.serve, "127.0.0.1", port)
            await client.wait_connected()
            assert await client.request("echo", 3) == 3
            await second.aclose()


async def test_first_connection_is_retried_until_the_server_comes_up(nursery: trio.Nursery) -> None:
    port = free_port()
    connected = trio.Event()

    async def dial() -> None:
        async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=FAST) as client:
            assert await client.request("echo", "up") == "up"
        connected.set()

    nursery.start_soon(dial)
    await trio.sleep(0.1)  # several refused attempts
    assert not connected.is_set()
    server = make_server()
    await nursery.start(server.serve, "127.0.0.1", port)
    with trio.fail_after(TIMEOUT):
        await connected.wait()
    await server.aclose()


async def test_pending_requests_fail_at_once_on_a_drop(nursery: trio.Nursery) -> None:
    server = make_server()
    started = trio.Event()

    @server.on("forever")
    async def forever() -> None:
        started.set()
        await trio.sleep_forever()

    port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=FAST) as client:

        async def drop_when_started() -> None:
            await started.wait()
            await drop_all(server)

        nursery.start_soon(drop_when_started)
        # far shorter than any timeout: the drop fails the request, not the clock
        with trio.fail_after(2), pytest.raises(wsw.ConnectionClosed):
            await client.request("forever", timeout=60)
        await client.wait_connected()
        assert await client.request("echo", "again") == "again"


async def test_nothing_of_the_old_connection_reaches_the_new_one(nursery: trio.Nursery) -> None:
    server = make_server()
    frames: list[tuple[int, str]] = []
    started = trio.Event()

    @server.on("message")
    def record(client: wsw.Client, frame: str) -> None:
        frames.append((id(client), frame))

    @server.on("slow")
    async def slow() -> None:
        started.set()
        await trio.sleep_forever()

    port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=FAST) as client:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as inner:

                async def request_and_cancel() -> None:
                    with pytest.raises(wsw.ConnectionClosed):
                        await client.request("slow")

                inner.start_soon(request_and_cancel)
                await started.wait()
                await drop_all(server)
            await client.wait_connected()
            await client.request("echo", "marker")
    second = [frame for owner, frame in frames if owner != frames[0][0]]
    # the new connection carries only what was made for it: no cancellation of the old request
    assert second == ['{"a":["echo","marker"],"i":2}']


async def test_emits_while_down_are_flushed_in_order(nursery: trio.Nursery) -> None:
    server = make_server()
    got: list[Any] = []
    server.on("note", got.append)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    policy = wsw.Reconnect(initial_delay=0.3, jitter=0.0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=policy) as client:
        with trio.fail_after(TIMEOUT):
            await client.emit("note", 0)
            await wait_for(lambda: got == [0])
            await drop_all(server)
            await wait_for(lambda: not client.connected)
            for n in range(1, 4):
                await client.emit("note", n)
                await client.of("room").emit("ignored-no-handler", n)  # named channels queue too
            assert client.statistics().offline_frames == 6
            await client.wait_connected()
            await client.emit("note", 4)
            await wait_for(lambda: len(got) == 5)
    assert got == [0, 1, 2, 3, 4]


async def test_full_offline_queue_is_a_clear_error(nursery: trio.Nursery) -> None:
    server = make_server()
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    policy = wsw.Reconnect(initial_delay=5, offline_queue_size=2)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=policy) as client:
        with trio.fail_after(TIMEOUT):
            await drop_all(server)
            await wait_for(lambda: not client.connected)
            await client.emit("a")
            await client.emit("b")
            with pytest.raises(wsw.ConnectionClosed, match="offline send queue is full"):
                await client.emit("c")
            with pytest.raises(wsw.ConnectionClosed):
                await client.request("echo", 1)  # requests are never queued


async def test_zero_offline_queue_refuses_emits_while_down(nursery: trio.Nursery) -> None:
    server = make_server()
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    policy = wsw.Reconnect(initial_delay=5, offline_queue_size=0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=policy) as client:
        with trio.fail_after(TIMEOUT):
            await drop_all(server)
            await wait_for(lambda: not client.connected)
            with pytest.raises(wsw.ConnectionClosed, match="reconnecting"):
                await client.emit("a")


async def test_gives_up_after_max_attempts(nursery: trio.Nursery) -> None:
    server = make_server()
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    policy = wsw.Reconnect(initial_delay=0.01, jitter=0, max_attempts=3)
    closes: list[bool] = []
    client = wsw.Client()
    client.on("close", lambda c, code, reason, user: closes.append(user))
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client, reconnect=policy):
        with trio.fail_after(TIMEOUT):
            await server.aclose()
            with pytest.raises(wsw.ConnectionClosed, match="gave up reconnecting after 3 attempts"):
                await client.wait_connected()
            with pytest.raises(wsw.ConnectionClosed):
                await client.emit("late")  # no more offline queueing once given up
    assert closes == [False]


async def test_first_connection_gives_up_with_the_connect_error() -> None:
    policy = wsw.Reconnect(initial_delay=0.01, max_attempts=2)
    with trio.fail_after(TIMEOUT), pytest.raises(wsw.ConnectionClosed, match="cannot connect"):
        async with wsw.open_client(f"ws://127.0.0.1:{free_port()}/", reconnect=policy):
            pass  # pragma: no cover


async def test_a_refused_handshake_is_not_retried(nursery: trio.Nursery) -> None:
    attempts: list[str] = []

    def authorize(handshake: wsw.Handshake) -> None:
        attempts.append(handshake.path)
        raise wsw.Reject(401, "no token")

    server = make_server(authorize=authorize)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT), pytest.raises(wsw.ConnectionRejected) as info:
        async with wsw.open_client(f"ws://127.0.0.1:{port}/x", reconnect=FAST):
            pass  # pragma: no cover
    assert info.value.status == 401
    assert attempts == ["/x"]


async def test_a_busy_server_is_retried(nursery: trio.Nursery) -> None:
    calls: list[int] = []

    def authorize(handshake: wsw.Handshake) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise wsw.Reject(503, "busy")

    server = make_server(authorize=authorize)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=FAST) as client:
        with trio.fail_after(TIMEOUT):
            assert await client.request("echo", 1) == 1
    assert len(calls) == 3


async def test_close_during_backoff_returns_promptly(nursery: trio.Nursery) -> None:
    server = make_server()
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    policy = wsw.Reconnect(initial_delay=60, jitter=0)
    with trio.fail_after(2):
        async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=policy) as client:
            await server.aclose()
            await wait_for(lambda: not client.connected)
            await client.aclose()  # stops the 60 s backoff
            with pytest.raises(wsw.ConnectionClosed):
                await client.wait_connected()


async def test_drop_in_the_middle_of_a_stream(nursery: trio.Nursery) -> None:
    server = make_server()
    sent = trio.Event()

    @server.on("ticks")
    async def ticks() -> AsyncIterator[int]:
        for n in range(1000):
            yield n
            if n == 5:
                sent.set()

    port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=FAST) as client:
        with trio.fail_after(TIMEOUT):
            got: list[int] = []
            with pytest.raises((wsw.ConnectionClosed, wsw.ChannelClosed)):
                async for value in (await client.request("ticks")).iterate():
                    got.append(value)
                    if value == 5:
                        await drop_all(server)
            assert got[:6] == [0, 1, 2, 3, 4, 5]
            await client.wait_connected()
            stream = await client.request("ticks")
            async with stream:
                values = stream.iterate()
                assert [await values.__anext__() for _ in range(3)] == [0, 1, 2]


async def test_drop_during_the_open_listener_then_recover(nursery: trio.Nursery) -> None:
    server = make_server()
    attempts: list[int] = []

    @server.on("open")
    async def open_(client: wsw.Client) -> None:
        attempts.append(1)
        if len(attempts) <= 2:
            await client.aclose(1011, "not yet")  # the first two connections end at once

    port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", reconnect=FAST) as client:
        with trio.fail_after(TIMEOUT):
            while True:
                await client.wait_connected()
                try:
                    assert await client.request("echo", "ok") == "ok"
                    break
                except wsw.ConnectionClosed:
                    await wait_for(lambda: not client.connected or len(attempts) >= 3)
    assert len(attempts) >= 3


async def test_wait_connected_on_a_plain_client() -> None:
    client = wsw.Client()
    with trio.move_on_after(0.05) as scope:
        await client.wait_connected()  # never connected: waits (cancellably)
    assert scope.cancelled_caught


async def test_wait_connected_after_a_plain_connection_ends(nursery: trio.Nursery) -> None:
    server = make_server()
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
        await client.wait_connected()
        await drop_all(server)
        await wait_for(lambda: not client.connected)
        with trio.fail_after(TIMEOUT), pytest.raises(wsw.ConnectionClosed):
            await client.wait_connected()  # no reconnection: it ends with the connection


async def test_close_while_a_reconnection_is_being_set_up(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trio_wswrapper import _dial

    server = make_server()
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    client = wsw.Client()
    made: list[Any] = []
    real = _dial.connect_transport

    @asynccontextmanager
    async def connect_then_close(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with real(*args, **kwargs) as transport:
            made.append(transport)
            if len(made) == 2 and client._stop_reconnecting is not None:
                # What aclose() does when it lands after the handshake of a reconnection and
                # before that connection is set up: it finds no open connection to close.
                client._stop_reconnecting()
            yield transport

    monkeypatch.setattr(_dial, "connect_transport", connect_then_close)
    async with wsw.open_client(f"ws://127.0.0.1:{port}/", client=client, reconnect=FAST):
        with trio.fail_after(TIMEOUT):
            await drop_all(server)
            await wait_for(lambda: len(made) == 2)
            # the connection set up after the close is closed at once, not left open
            await wait_for(lambda: not server.clients and not client.connected)


bound_tests(globals())
