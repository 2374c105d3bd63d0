"""Slow and stalled consumers: they never stall the others and never grow the server's memory.

The policy (PROTOCOL.md §13, docs/reliability.md): each connection's send queue holds at most
``send_queue_size`` frames. A broadcast never waits on a full queue: that client misses the
event and is listed among the broadcast's failures (``trio.WouldBlock``). A peer that stops
reading entirely also stops answering pings, so the heartbeat closes it (1011) within two
intervals, even while a write to it is stuck. A peer that sends but never reads fills its own
queue; the server then stops reading from it (TCP backpressure) instead of buffering more.
"""

from __future__ import annotations

import logging
import socket

import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper._client import _Generation

from .common import (
    Healthy,
    error_log,
    idle,
    leak_types,
    live_objects,
    make_server,
    record,
    rss_kib,
    scale,
    wait_until,
)
from .rawws import RawWebSocket

QUEUE = 32
BLOB = "b" * 32 * 1024


async def stalled_client(port: int) -> RawWebSocket:
    """A WebSocket client that completes the handshake and then never reads again."""
    raw = await RawWebSocket.connect(port)
    raw.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return raw


def queued(client: object) -> int:
    gen = client._gen  # type: ignore[attr-defined]
    assert isinstance(gen, _Generation)
    return len(gen.queue)


async def test_stalled_consumer_misses_broadcasts_without_stalling_others(nursery: trio.Nursery) -> None:
    server = make_server(send_queue_size=QUEUE)
    opened: list[object] = []
    server.on("open", opened.append)
    with error_log() as errors, trio.fail_after(scale(60, 300)):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        received: list[int] = []
        arrived = [trio.Event()]

        def big(seq: int, blob: str) -> None:
            received.append(seq)
            arrived[0].set()

        healthy = wsw.Client()
        healthy.on("big", big)
        async with (
            wsw.open_client(f"ws://127.0.0.1:{port}/", client=healthy),
            await stalled_client(port) as raw,
        ):
            await wait_until(lambda: len(opened) == 2)
            stalled = opened[1]
            rss_start = rss_kib()
            misses = consecutive = sent = 0
            most_queued = 0
            # Broadcast until the stalled client has missed many in a row (its queue stays
            # full); the healthy client must get each one before the next is sent.
            while consecutive < scale(50, 500):
                arrived[0] = trio.Event()
                failures = await server.emit("big", sent, BLOB)
                sent += 1
                assert all(client is stalled and isinstance(exc, trio.WouldBlock) for client, exc in failures)
                if failures:
                    misses += 1
                    consecutive += 1
                else:
                    consecutive = 0
                most_queued = max(most_queued, queued(stalled))
                await arrived[0].wait()
            assert received == list(range(sent))
            assert most_queued == QUEUE
            rss_full = rss_kib()
            await raw.aclose()
        await wait_until(lambda: idle(server))
    record(
        "slow consumer",
        broadcasts=sent,
        healthy_received=len(received),
        stalled_missed=misses,
        stalled_queue_max=most_queued,
        queue_limit=QUEUE,
        frame_kib=len(BLOB) // 1024,
        rss_kib={"start": rss_start, "stalled": rss_full},
    )
    assert not errors.records


async def test_heartbeat_closes_a_stalled_consumer_with_a_stuck_write(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # Captured log records would keep the client they describe alive: record no INFO here.
    caplog.set_level(logging.WARNING, logger="trio_wswrapper")
    server = make_server(send_queue_size=QUEUE, heartbeat_interval=0.3, close_timeout=0.3)
    closes: list[tuple[int, str]] = []
    server.on("close", lambda client, code, reason, user: closes.append((int(code), reason)))
    opened: list[object] = []
    server.on("open", opened.append)
    with error_log() as errors, trio.fail_after(30):
        baseline = live_objects(*leak_types())
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        async with await stalled_client(port):
            await wait_until(lambda: len(opened) == 1)
            # fill the kernel buffers and the queue, so that a write is stuck mid-way
            while not await server.emit("big", 0, BLOB):
                pass
            assert queued(opened[0]) == QUEUE
            opened.clear()
            await wait_until(lambda: bool(closes))
            assert closes == [(1011, "keepalive ping timeout")]
            await wait_until(lambda: idle(server))
        assert live_objects(*leak_types()) == baseline
    record("slow consumer", stalled_closed_by_heartbeat=closes[0][0])
    assert not errors.records


async def test_sender_that_never_reads_is_throttled_not_buffered(nursery: trio.Nursery) -> None:
    server = make_server(send_queue_size=QUEUE)
    opened: list[object] = []
    server.on("open", opened.append)
    with error_log() as errors, trio.fail_after(scale(60, 300)):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        stop = trio.Event()
        healthy = Healthy()
        await nursery.start(healthy.run, port, stop)
        async with await stalled_client(port) as raw:
            await wait_until(lambda: len(opened) == 2)
            hostile = opened[1]
            request = '{"a":["echo","' + "r" * 16384 + '"],"i":%d}'
            sent = 0
            most_queued = 0
            limit = scale(5_000, 50_000)

            async def flood() -> None:
                nonlocal sent
                while sent < limit:
                    sent += 1
                    await raw.send_text(request % sent)

            async with trio.open_nursery() as flooding:
                flooding.start_soon(flood)
                # The server answers until its queue to this peer is full, then stops reading,
                # so the flood ends up blocked in the kernel, not in the server's memory. (Over
                # the websockets transport the flood may stall before the queue is full: its
                # reader task also waits for the socket, to send pongs.)
                progress, stalled_since = sent, trio.current_time()
                while queued(hostile) < QUEUE and sent < limit:
                    await trio.sleep(0.01)
                    if sent != progress:
                        progress, stalled_since = sent, trio.current_time()
                    elif trio.current_time() - stalled_since > 1.0:
                        break
                for _ in range(50):
                    most_queued = max(most_queued, queued(hostile))
                    await trio.sleep(0.01)
                stuck_at = sent
                flooding.cancel_scope.cancel()
            replies_before = healthy.replies
            await wait_until(lambda: healthy.replies > replies_before + 10)
            raw.reset()
        stop.set()
        await wait_until(lambda: idle(server))
    record(
        "slow consumer",
        flood_frames_sent_before_blocking=stuck_at,
        flood_queue_max=most_queued,
        healthy_replies_during_flood=healthy.replies,
    )
    assert stuck_at < limit, "the flood was never throttled"
    assert most_queued <= QUEUE + 1  # the reader's own reply waits for room; one in flight
    assert healthy.lost == 0
    assert not errors.records
