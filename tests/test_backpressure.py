"""Regression: answers to a peer that sends requests but never reads must not pile up.

Answers bypass the send queue's limit (a handler must never block on it), so before the fix a
peer that kept sending requests without reading made the server queue one answer per request,
without bound. Now the reader stops taking requests while the queue is full (PROTOCOL.md §13),
and the peer's own sends block instead.
"""

from __future__ import annotations

import trio
from trio.testing import MockClock

import trio_wswrapper as wsw
from trio_wswrapper.testing import open_raw_peer

from .bounded import bound_tests

QUEUE = 4


async def test_requests_from_a_peer_that_never_reads_are_throttled(autojump_clock: MockClock) -> None:
    server = wsw.Server(heartbeat_interval=None, send_queue_size=QUEUE, max_concurrent_handlers=8)
    server.on("echo", lambda x: x)
    most_queued = 0
    async with open_raw_peer(server) as peer:
        sent = 0
        with trio.move_on_after(1):
            while sent < 5000:
                await peer.send({"a": ["echo", sent], "i": sent + 1})
                sent += 1
                most_queued = max(most_queued, server.statistics().queued_frames)
        assert sent < 5000, "the peer was never throttled"
        # forced answers of handlers already running may exceed the limit, nothing else
        assert most_queued <= QUEUE + 8
        answered = set()
        while len(answered) < sent:
            message = await peer.receive_json()
            assert message == {"i": message["i"], "d": message["i"] - 1}
            answered.add(message["i"])
        assert answered == set(range(1, sent + 1))


bound_tests(globals())
