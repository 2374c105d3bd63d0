"""Streaming over anonymous channels: the start/next iterator protocol (PROTOCOL.md §10).

Producer tests run an async-generator handler on the ``server`` fixture and play the consumer
with a raw peer; consumer tests iterate ``ch.iterate()`` against our own producer and against a
raw peer acting as the producer (``raw_server``). Time is virtual.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

import trio_wswrapper as wsw
from tests.bounded import bound_tests
from trio_wswrapper.testing import open_raw_peer, open_test_client

START = '{"a":["start"],"h":1}'
DONE = '{"a":["next",{"done":true}],"h":1}'


def item(value: Any, h: int = 1) -> str:
    return f'{{"a":["next",{{"value":{json.dumps(value, separators=(",", ":"))},"done":false}}],"h":{h}}}'


def fail_safe(h: int) -> str:
    return f'{{"h":{h},"x":{{"message":"Anonymous channel \'{h}\' does not exist"}},"_":1}}'


# -- our producer (§10.1, §10.2) ----------------------------------------------------------------


async def test_transcript(server, autojump_clock):
    log: list[Any] = []

    @server.on("stream")
    async def stream(first: int, last: int) -> Any:
        log.append("started")
        for value in range(first, last + 1):
            yield value
        log.append("exhausted")

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream",3,5],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.expect_silence(5)
        assert log == []  # not advanced before start
        await peer.send(START)
        assert await peer.receive() == '{"a":["next",{"value":3,"done":false}],"h":1}'
        assert await peer.receive() == '{"a":["next",{"value":4,"done":false}],"h":1}'
        assert await peer.receive() == '{"a":["next",{"value":5,"done":false}],"h":1}'
        assert await peer.receive() == '{"a":["next",{"done":true}],"h":1}'
        await peer.expect_silence(1)
        assert log == ["started", "exhausted"]
        # after done the producer closed its channel silently: start meets the fail-safe
        await peer.send(START)
        assert await peer.receive() == fail_safe(1)
        await peer.expect_silence(1)
        assert server.statistics().open_channels == 0
        assert server.statistics().running_handlers == 0


async def test_producer_raises_aborts_without_done(server, autojump_clock):
    closed: list[bool] = []

    @server.on("stream")
    async def stream() -> Any:
        try:
            yield 1
            raise ValueError("gen blew up")
        finally:
            closed.append(True)

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        assert await peer.receive() == item(1)
        assert await peer.receive() == '{"h":1,"x":{"message":"gen blew up"},"_":1}'
        await peer.expect_silence(1)
        assert closed == [True]


async def test_producer_raising_remote_error_forwards_its_payload(server, autojump_clock):
    @server.on("stream")
    async def stream() -> Any:
        yield 1
        raise wsw.RemoteError("raw reason")

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        assert await peer.receive() == item(1)
        assert await peer.receive() == '{"h":1,"x":"raw reason"}'
        await peer.expect_silence(1)


async def test_consumer_abort_closes_the_generator(server, autojump_clock):
    log: list[Any] = []

    @server.on("stream")
    async def stream() -> Any:
        try:
            n = 0
            while True:
                yield n
                n += 1
                await trio.sleep(1)
        except BaseException as exc:
            log.append(type(exc))
            raise
        finally:
            log.append("finally")

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        assert await peer.receive() == item(0)
        assert await peer.receive() == item(1)
        await peer.send('{"h":1,"x":{"message":"Request aborted"},"_":1}')
        await peer.expect_silence(5)
        assert log[-1] == "finally"
        assert server.statistics().running_handlers == 0
        assert server.statistics().open_channels == 0


async def test_consumer_abort_while_the_producer_waits_for_the_send_path(autojump_clock):
    """The generator suspended at ``yield`` (backpressure) is closed with ``aclose()``."""
    server = wsw.Server(heartbeat_interval=None, send_queue_size=1)
    log: list[Any] = []

    @server.on("stream")
    async def stream() -> Any:
        try:
            for n in range(100):
                yield n
        finally:
            log.append("finally")

    ours, theirs = wsw.memory_transport_pair(buffer=0)
    peer = wsw.testing.RawPeer(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept, theirs)
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        await trio.sleep(1)
        await peer.send('{"h":1,"x":"stop"}')
        await trio.sleep(1)
        assert log == ["finally"]
        frames = []
        with trio.move_on_after(1):
            while True:
                frames.append(await peer.receive())
        assert 1 <= len(frames) <= 3  # what was already in the writer and the queue
        assert frames == [item(n) for n in range(len(frames))]
        await ours.aclose()


async def test_producer_paced_by_backpressure(autojump_clock):
    """§10.2: the generator is advanced only once the previous frame is accepted."""
    server = wsw.Server(heartbeat_interval=None, send_queue_size=1)
    produced: list[int] = []

    @server.on("stream")
    async def stream() -> Any:
        for n in range(50):
            produced.append(n)
            yield n

    ours, theirs = wsw.memory_transport_pair(buffer=0)
    peer = wsw.testing.RawPeer(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept, theirs)
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        await trio.sleep(10)
        assert len(produced) <= 4
        for n in range(50):
            assert await peer.receive() == item(n)
        assert await peer.receive() == DONE
        await ours.aclose()


async def test_duplicate_start_is_ignored(server, autojump_clock):
    step = trio.Event()
    starts: list[int] = []

    @server.on("stream")
    async def stream() -> Any:
        starts.append(1)
        yield "a"
        await step.wait()
        yield "b"

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        await peer.send(START)
        assert await peer.receive() == item("a")
        await peer.send(START)
        await peer.expect_silence(1)
        step.set()
        assert await peer.receive() == item("b")
        assert await peer.receive() == DONE
        await peer.expect_silence(1)
        assert starts == [1]


async def test_none_and_falsy_items(server, autojump_clock):
    @server.on("stream")
    async def stream() -> Any:
        for value in (None, 0, False, "", [], {}, {"value": 1, "done": True}):
            yield value

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        assert await peer.receive() == '{"a":["next",{"value":null,"done":false}],"h":1}'
        for value in (0, False, "", [], {}, {"value": 1, "done": True}):
            assert await peer.receive() == item(value)
        assert await peer.receive() == DONE


@pytest.mark.parametrize("bad", [object(), float("nan"), float("inf")])
async def test_unencodable_item_aborts_with_the_encoder_message(server, autojump_clock, bad):
    closed: list[bool] = []

    @server.on("stream")
    async def stream() -> Any:
        try:
            yield 1
            yield bad
            yield 2
        finally:
            closed.append(True)

    try:
        json.dumps(bad, allow_nan=False)
    except (TypeError, ValueError) as exc:
        text = str(exc)
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        assert await peer.receive() == item(1)
        assert await peer.receive() == json.dumps(
            {"h": 1, "x": {"message": text}, "_": 1}, separators=(",", ":")
        )
        await peer.expect_silence(1)
        assert closed == [True]


async def test_generator_failing_at_creation_rejects(server, autojump_clock):
    @server.on("stream")
    async def stream(n):  # unannotated: Python's own arity check applies (§7.3)
        yield n

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')  # wrong arity
        frame = json.loads(await peer.receive())
        assert frame["i"] == 1
        assert frame["_"] == 1
        assert "stream()" in frame["e"]["message"]
        await peer.expect_silence(1)


async def test_other_traffic_on_a_producer_channel(server, autojump_clock):
    @server.on("stream")
    async def stream() -> Any:
        yield 1

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send('{"a":["other"],"h":1,"i":2}')
        assert await peer.receive() == (
            '{"i":2,"e":{"message":"No event listener for \'other\' on channel \'1\'"},"_":1}'
        )
        await peer.send('{"a":["other"],"h":1}')
        await peer.send('{"a":["start"],"h":1,"i":3}')  # a start *request* is not a start
        assert await peer.receive() == (
            '{"i":3,"e":{"message":"No event listener for \'start\' on channel \'1\'"},"_":1}'
        )
        await peer.expect_silence(1)
        await peer.send(START)
        assert await peer.receive() == item(1)
        assert await peer.receive() == DONE


async def test_streaming_handler_invoked_as_an_event_sends_nothing(server, autojump_clock):
    started: list[Any] = []

    @server.on("stream")
    async def stream() -> Any:
        started.append(1)
        yield 1

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"]}')
        await peer.expect_silence(1)
        await peer.send('{"a":["start"],"h":1}')
        assert await peer.receive() == fail_safe(1)
        assert started == []
        assert server.statistics().open_channels == 0


async def test_inbound_cancel_before_start_is_ignored_after_announcement(server, autojump_clock):
    @server.on("stream")
    async def stream() -> Any:
        yield "still here"

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send('{"i":1,"x":{"message":"Request aborted"},"_":1}')
        await peer.expect_silence(1)
        await peer.send(START)
        assert await peer.receive() == item("still here")
        assert await peer.receive() == DONE


async def test_connection_end_closes_the_generator(server, autojump_clock):
    log: list[Any] = []

    @server.on("stream")
    async def stream() -> Any:
        try:
            yield 1
            await trio.sleep_forever()
            yield 2
        finally:
            log.append("finally")

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["stream"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(START)
        assert await peer.receive() == item(1)
        peer.transport.abort()
        await trio.sleep(1)
    assert log == ["finally"]
    assert server.statistics().running_handlers == 0


# -- our consumer (§10.3) -----------------------------------------------------------------------


async def test_iterate_our_own_producer(server, autojump_clock):
    @server.on("ticks")
    async def ticks(n: int) -> Any:
        for i in range(n):
            yield i
            await trio.sleep(0.5)

    async with open_test_client(server) as client:
        ch = await client.request("ticks", 5)
        assert isinstance(ch, wsw.AnonymousChannel)
        assert [v async for v in ch.iterate()] == [0, 1, 2, 3, 4]
        assert [v async for v in (await client.request("ticks", 3)).iterate()] == [0, 1, 2]
        empty = await client.request("ticks", 0)
        assert [v async for v in empty.iterate()] == []


async def test_iterate_our_own_producer_that_fails(server, autojump_clock):
    @server.on("ticks")
    async def ticks() -> Any:
        yield "a"
        raise RuntimeError("gen blew up")

    async with open_test_client(server) as client:
        ch = await client.request("ticks")
        got = []
        with pytest.raises(wsw.ChannelClosed) as info:
            async for v in ch.iterate():
                got.append(v)
        assert got == ["a"]
        assert str(info.value) == "channel closed before iteration completed"
        assert info.value.reason.message == "gen blew up"


async def _open_stream(client: wsw.Client, peer: Any, nursery: trio.Nursery) -> wsw.AnonymousChannel:
    got: list[wsw.AnonymousChannel] = []

    async def call() -> None:
        got.append(await client.request("stream"))

    nursery.start_soon(call)
    assert await peer.receive() == '{"a":["stream"],"i":1}'
    await peer.send('{"i":1,"h":1}')
    await trio.sleep(1)
    return got[0]


async def test_consumer_against_a_raw_producer(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        iterator = ch.iterate()
        await peer.expect_silence(1)  # nothing before the first pull
        values: list[Any] = []

        async def consume() -> None:
            async for value in iterator:
                values.append(value)
            values.append("end")

        nursery.start_soon(consume)
        assert await peer.receive() == START
        for frame in (
            item(1),
            '{"a":["next",5],"h":1}',
            '{"a":["next",null],"h":1}',
            '{"a":["next"],"h":1}',
            '{"a":["progress",{"value":99,"done":true}],"h":1}',
            '{"a":["next",{"done":false}],"h":1}',
            '{"a":["next",{"value":"x","done":0}],"h":1}',
            '{"a":["next",[1,2]],"h":1}',
            '{"a":["next",{"value":null,"done":true}],"h":1}',
            item("after done"),
        ):
            await peer.send(frame)
        await trio.sleep(1)
        assert values == [1, None, None, None, None, "x", None, "end"]
        await peer.expect_silence(1)
        assert not ch.closed  # completion does not close the channel


@pytest.mark.parametrize(
    "done_frame",
    [
        '{"a":["next",{"done":true}],"h":1}',
        '{"a":["next",{"value":7,"done":true}],"h":1}',
        '{"a":["next",{"done":1}],"h":1}',
        '{"a":["next",{"done":"yes"}],"h":1}',
    ],
)
async def test_consumer_done_variants(raw_server, autojump_clock, done_frame):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        await peer.send(item(1))  # buffered before the first pull
        await peer.send(done_frame)
        values = [v async for v in ch.iterate()]
        assert values == [1]
        assert await peer.receive() == START


@pytest.mark.parametrize(
    ("abort", "message"),
    [
        ('{"h":1,"x":{"message":"gen blew up"},"_":1}', "gen blew up"),
        (fail_safe(1), "Anonymous channel '1' does not exist"),
        ('{"h":1,"x":"bye"}', "bye"),
    ],
)
async def test_consumer_abort_mid_stream(raw_server, autojump_clock, abort, message):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        values: list[Any] = []
        errors: list[BaseException] = []

        async def consume() -> None:
            try:
                async for value in ch.iterate():
                    values.append(value)
            except wsw.ChannelClosed as exc:
                errors.append(exc)

        nursery.start_soon(consume)
        assert await peer.receive() == START
        await peer.send(item(1))
        await peer.send(item(2))
        await peer.send(abort)
        await trio.sleep(1)
        assert values == [1, 2]
        (error,) = errors
        assert str(error) == "channel closed before iteration completed"
        assert error.reason is not None
        assert error.reason.message == message
        assert ch.closed
        await peer.expect_silence(1)
        # iterating a closed channel sends nothing and ends with the closure error
        with pytest.raises(wsw.ChannelClosed, match=r"^channel closed before iteration completed$"):
            async for _ in ch.iterate():
                pass
        await peer.expect_silence(1)


async def test_breaking_out_sends_nothing_and_leaves_the_channel_open(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        await peer.send(item(1))
        await peer.send(item(2))
        async for value in ch.iterate():
            assert value == 1
            break
        assert await peer.receive() == START
        await peer.expect_silence(1)
        assert not ch.closed
        iterator = ch.iterate()  # the next iteration is not blocked by the abandoned one
        assert await iterator.__anext__() == 2
        assert await peer.receive() == START  # and starts anew
        await iterator.aclose()
        with pytest.raises(StopAsyncIteration):
            await iterator.__anext__()
        await peer.expect_silence(1)
        assert not ch.closed


async def test_concurrent_iteration_raises(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        first = ch.iterate()
        values: list[Any] = []

        async def consume() -> None:
            async for value in first:
                values.append(value)

        nursery.start_soon(consume)
        assert await peer.receive() == START
        with pytest.raises(RuntimeError):
            await ch.iterate().__anext__()
        await peer.expect_silence(1)  # no second start
        await peer.send(item("only"))
        await peer.send(DONE)
        await trio.sleep(1)
        assert values == ["only"]


async def test_iterating_again_sends_a_new_start(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        for round_ in range(3):
            results: list[Any] = []

            async def consume(results: list[Any] = results) -> None:
                results.extend([v async for v in ch.iterate()])

            nursery.start_soon(consume)
            assert await peer.receive() == START
            await peer.send(item(round_))
            await peer.send(DONE)
            await trio.sleep(1)
            assert results == [round_]
        await peer.expect_silence(1)


async def test_athrow_aborts_the_channel(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        await peer.send(item(1))
        iterator = ch.iterate()
        assert await iterator.__anext__() == 1
        assert await peer.receive() == START
        with pytest.raises(ValueError, match="consumer gave up"):
            await iterator.athrow(ValueError("consumer gave up"))
        assert await peer.receive() == '{"h":1,"x":{"message":"consumer gave up"},"_":1}'
        assert ch.closed


async def test_consumer_woken_by_connection_end(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        errors: list[BaseException] = []

        async def consume() -> None:
            try:
                async for _ in ch.iterate():
                    pass
            except wsw.ChannelClosed as exc:
                errors.append(exc)

        nursery.start_soon(consume)
        assert await peer.receive() == START
        await peer.send(item(1))
        await trio.sleep(1)
        await peer.transport.aclose(1001, "going away")
        await trio.sleep(1)
        (error,) = errors
        assert str(error) == "channel closed before iteration completed"
        assert error.reason is not None


async def test_consumer_overflow(raw_server, autojump_clock):
    """A slow loop body overflows the buffer; buffered values still come before the error."""
    options = wsw.Options(limits=wsw.Limits(channel_buffer_size=3))
    async with raw_server(options=options) as (client, peer), trio.open_nursery() as nursery:
        ch = await _open_stream(client, peer, nursery)
        values: list[Any] = []
        errors: list[BaseException] = []

        async def consume() -> None:
            try:
                async for value in ch.iterate():
                    values.append(value)
                    await trio.sleep(10)
            except wsw.ChannelClosed as exc:
                errors.append(exc)

        nursery.start_soon(consume)
        assert await peer.receive() == START
        await peer.send(item(0))
        await trio.sleep(1)
        for n in range(1, 5):
            await peer.send(item(n))
        assert await peer.receive() == (
            '{"h":1,"x":{"message":"Anonymous channel \'1\' buffer overflow; consumer is too slow"},"_":1}'
        )
        await trio.sleep(100)
        assert values == [0, 1, 2, 3]
        (error,) = errors
        assert str(error) == "channel closed before iteration completed"
        assert error.reason.message == "Anonymous channel '1' buffer overflow; consumer is too slow"
        await peer.expect_silence(1)


# -- iterable_handler: callables returning iterables (§10.2 marker) -----------------------------


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_iterable_handler_streams_what_it_returns(server, autojump_clock, style):
    closed: list[str] = []

    def numbers(n: int) -> Any:
        try:
            yield from range(n)
        finally:
            closed.append("closed")

    if style == "sync":
        server.on("nums", wsw.iterable_handler(numbers))
    else:

        async def build(n: int) -> Any:
            await trio.sleep(0)
            return numbers(n)

        server.on("nums", wsw.iterable_handler(build))

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["nums",2],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.expect_silence(1)
        await peer.send(START)
        assert await peer.receive() == item(0)
        assert await peer.receive() == item(1)
        assert await peer.receive() == DONE
    assert closed == ["closed"]


@pytest.mark.parametrize("result", [5, None, "text", {"a": 1}])
async def test_iterable_handler_rejects_non_iterables(server, autojump_clock, result):
    server.on("bad", wsw.iterable_handler(lambda: result))
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["bad"],"i":1}')
        assert await peer.receive() == (
            '{"i":1,"e":{"message":"iterableHandler: handler must return a sync or async iterable"},"_":1}'
        )
        await peer.expect_silence(1)


async def test_iterable_handler_invoked_as_an_event_is_not_iterated(server, autojump_clock):
    calls: list[int] = []
    server.on("nums", wsw.iterable_handler(lambda: calls.append(1) or range(3)))
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["nums"]}')
        await peer.expect_silence(1)
    assert calls == []


async def test_iterable_handler_consumed_by_our_client(server, autojump_clock):
    @server.on("letters")
    @wsw.iterable_handler
    def letters(word: str) -> Any:
        return list(word)

    async with open_test_client(server) as client:
        channel = await client.request("letters", "abc")
        assert [v async for v in channel.iterate()] == ["a", "b", "c"]


bound_tests(globals())
