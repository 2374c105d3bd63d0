"""The fast paths: plain function handlers called by the reader, and direct writes.

A handler that is a plain function (no middleware, no ``handler_context``) runs in the
connection's reader task instead of a task of its own, and a frame handed over while nothing
is being written goes straight to the socket from the task that made it. Both must keep every
promise of the ordinary paths: context, channels, cancellation, errors and frame order.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
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
    leaked: list[bool] = []

    def after(client: wsw.Client, frame: Any) -> None:
        # runs in the reader's own context, after the inline handler of the previous frame:
        # outside any request handler, so cancel_reason() must refuse
        try:
            wsw.cancel_reason()
        except RuntimeError:
            leaked.append(False)
        else:
            leaked.append(True)

    server.on("message", after)
    with trio.fail_after(TIMEOUT):
        async with connected(server, kind) as client:
            ch = await client.request("open-echo")
            async with ch:
                assert await ch.request("echo", 21) == 42
            second = await client.request("open-echo")
            assert isinstance(second, wsw.AnonymousChannel) and second.id != ch.id
            await second.aclose()
            assert server.clients == [seen[0][0]]
    assert len(seen) == 2
    assert seen[0][0] is seen[1][0] and all(reason is None for _, reason in seen)
    assert leaked and not any(leaked)  # the handler's context did not stay in the reader


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
    ticks: dict[int, list[int]] = {b: [] for b in range(4)}
    seen_at_answer: dict[int, int] = {}

    async def burst(burst_id: int) -> None:
        client = wsw.current_client()
        for i in range(100):
            await client.emit("tick", burst_id, i)

    async def ask(client: wsw.Client, burst_id: int) -> None:
        await client.request("burst", burst_id)
        seen_at_answer[burst_id] = len(ticks[burst_id])

    server.on("burst", burst)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            async with wsw.open_client(f"ws://127.0.0.1:{port}/", max_message_size=8 << 20) as client:
                client.on("tick", lambda b, i: ticks[b].append(i))
                async with trio.open_nursery() as inner:
                    for burst_id in range(4):
                        inner.start_soon(ask, client, burst_id)
                    results = [await client.request("big") for _ in range(3)]
                assert results == [big] * 3
            nursery.cancel_scope.cancel()
    # each burst's events arrive in order, and all of them before its answer
    assert ticks == {b: list(range(100)) for b in range(4)}
    assert seen_at_answer == {b: 100 for b in range(4)}


# -- framing: the fast parser against wsproto ------------------------------------------------


def client_frame_bytes(kind: str, payload: bytes, fin: bool = True, rsv: int = 0, opcode: int = 1) -> bytes:
    """One frame as a client sends it (masked), built by hand so that it may be malformed."""
    first = (0x80 if fin else 0) | rsv | opcode
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    if kind == "unmasked":
        return head[:1] + bytes((head[1] & 0x7F,)) + head[2:] + payload
    return head + mask + masked


LIMIT = 4096

frame_items = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=300)),
    st.tuples(st.just("binary"), st.binary(max_size=300)),
    st.tuples(st.just("fragmented"), st.lists(st.text(max_size=40), min_size=2, max_size=4)),
    st.tuples(st.just("ping"), st.binary(max_size=20)),
    st.tuples(st.just("pong"), st.binary(max_size=20)),
    st.tuples(st.just("large"), st.integers(min_value=126, max_value=70_000)),
    st.tuples(st.just("bad-utf8"), st.just(b"\xff\xfe")),
    st.tuples(st.just("rsv"), st.text(max_size=5)),
    st.tuples(st.just("unmasked"), st.text(max_size=5)),
    st.tuples(st.just("stray-continuation"), st.sampled_from([3, LIMIT + 1])),
    st.tuples(st.just("interrupted"), st.text(max_size=5)),
    st.tuples(st.just("too-big"), st.just(5000)),
)


def encode_items(items: list[tuple[str, Any]]) -> bytes:
    out = b""
    for kind, value in items:
        if kind == "text":
            out += client_frame_bytes(kind, value.encode())
        elif kind == "binary":
            out += client_frame_bytes(kind, value, opcode=2)
        elif kind == "fragmented":
            for i, part in enumerate(value):
                last = i == len(value) - 1
                out += client_frame_bytes(kind, part.encode(), fin=last, opcode=0 if i else 1)
                if i == 0:  # control frames may come between fragments
                    out += client_frame_bytes("ping", b"in-between", opcode=9)
        elif kind == "ping":
            out += client_frame_bytes(kind, value, opcode=9)
        elif kind == "pong":
            out += client_frame_bytes(kind, value, opcode=10)
        elif kind == "large":
            out += client_frame_bytes(kind, b"L" * value)
        elif kind == "bad-utf8":
            out += client_frame_bytes(kind, value)
        elif kind == "rsv":
            out += client_frame_bytes(kind, value.encode(), rsv=0x40)
        elif kind == "unmasked":
            out += client_frame_bytes(kind, value.encode())
        elif kind == "stray-continuation":
            out += client_frame_bytes(kind, b"C" * value, opcode=0)
        elif kind == "interrupted":
            # a new message while a fragmented one is unfinished: a protocol error
            out += client_frame_bytes(kind, b"first part", fin=False)
            out += client_frame_bytes(kind, value.encode())
        elif kind == "too-big":
            out += client_frame_bytes(kind, b"B" * value)
    return out


def reference(data: bytes) -> tuple[list[str | bytes], int]:
    """What wsproto alone makes of ``data``: the messages, then the close code (1006: none)."""
    conn = Connection(ConnectionType.SERVER)
    from wsproto.events import BytesMessage, CloseConnection, TextMessage
    from wsproto.utilities import RemoteProtocolError

    messages: list[str | bytes] = []
    parts: list[Any] = []
    size = 0
    try:
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                parts.append(event.data)
                size += len(event.data)
                if size > LIMIT:
                    return messages, 1009
                if event.message_finished:
                    joined = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                    messages.append(joined)
                    parts, size = [], 0
            elif isinstance(event, CloseConnection):
                return messages, int(event.code)
    except RemoteProtocolError:
        return messages, 1006
    return messages, 1006


async def transport_result(data: bytes, cuts: list[int]) -> tuple[list[str | bytes], int]:
    """What the transport makes of ``data`` arriving in pieces cut at ``cuts``."""
    ours, theirs = trio.testing.memory_stream_pair()
    transport = WsprotoTransport(ours, Connection(ConnectionType.SERVER), max_message_size=LIMIT)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            await theirs.send_all(data[a:b])
    await theirs.send_eof()
    messages: list[str | bytes] = []
    while True:
        try:
            messages.append(await transport.receive())
        except wsw.TransportClosed as closed:
            return messages, closed.code


@settings(max_examples=150, deadline=None)
@given(items=st.lists(frame_items, max_size=8), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_fast_parser_agrees_with_wsproto(items: list[tuple[str, Any]], cuts: list[int]) -> None:
    data = encode_items(items)
    assert trio.run(transport_result, data, cuts) == reference(data)


# -- the opening handshake hands the transport a frame boundary -------------------------------

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def read_frames(stream: trio.SocketStream, count: int) -> list[str]:
    """Read the 101 response, then ``count`` unmasked text frames from a server."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(4096)
    head, _, data = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    frames: list[str] = []
    while len(frames) < count:
        if len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
            n = data[1] & 0x7F
            assert n < 126 and data[0] == 0x81
            frames.append(data[2 : 2 + n].decode())
            data = data[2 + n :]
            continue
        data += await stream.receive_some(4096)
    return frames


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([0], id="one write"),
        pytest.param([len(UPGRADE) - 1], id="blank line split"),
        pytest.param([len(UPGRADE) - 3, len(UPGRADE) + 3], id="head and frame split"),
        pytest.param([len(UPGRADE)], id="head then frames"),
    ],
)
async def test_frames_in_the_same_packets_as_the_handshake(pieces: list[int]) -> None:
    server = wsw.Server(heartbeat_interval=None)
    server.on("echo", lambda x: x)
    frames = client_frame_bytes("text", b'{"a":["echo",1],"i":1}') + client_frame_bytes(
        "text", b'{"a":["echo",2],"i":2}'
    )
    data = UPGRADE + frames
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            # the wsproto transport's own handshake reader (trio-websocket hangs on this)
            port = await nursery.start(partial(server.serve, "127.0.0.1", 0, transport="wsproto"))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                bounds = [0, *pieces, len(data)]
                for a, b in itertools.pairwise(bounds):
                    if b > a:
                        await stream.send_all(data[a:b])
                        await trio.sleep(0.01)
                replies = await read_frames(stream, 2)
            nursery.cancel_scope.cancel()
    assert replies == ['{"i":1,"d":1}', '{"i":2,"d":2}']


async def test_idle_connections_have_no_writer_task() -> None:
    server = wsw.Server(heartbeat_interval=None, max_message_size=8 << 20)
    server.on("big", lambda: "z" * 4_000_000)
    server.on("ping", lambda: "pong")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve, "127.0.0.1", 0, transport="wsproto"))
            url = f"ws://127.0.0.1:{port}/"
            async with wsw.open_client(url, max_message_size=8 << 20, transport="wsproto") as client:
                assert await client.request("ping") == "pong"
                (peer,) = server.clients
                assert peer._gen is not None and client._gen is not None
                # replies and requests went straight to the sockets: no writer task was needed
                assert not peer._gen.nursery.child_tasks and not client._gen.nursery.child_tasks
                assert len(await client.request("big")) == 4_000_000
                # a reply larger than the socket buffer needed the writer to finish it
                assert len(peer._gen.nursery.child_tasks) == 1
                assert await client.request("ping") == "pong"
            nursery.cancel_scope.cancel()


bound_tests(globals())
