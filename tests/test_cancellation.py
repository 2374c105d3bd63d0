"""Cancellation (PROTOCOL.md §8), request ids (§4), cancel reasons (§6.3) and teardown (§12.3).

Requestor-side tests run a real client against a raw peer acting as the server
(``raw_server``); handler-side tests run the ``server`` fixture against a raw peer acting as
the client. All timing is virtual (``autojump_clock``).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import trio
import trio.testing

import trio_wswrapper as wsw
from tests.bounded import bound_tests
from trio_wswrapper.testing import RawPeer, open_raw_peer

ABORTED = '{"message":"Request aborted"},"_":1'


def cancel_frame(rid: int, body: str = ABORTED) -> str:
    return f'{{"i":{rid},"x":{body}}}'


# -- requestor side: what we send --------------------------------------------------------------


async def test_move_on_after_sends_exactly_one_cancel_after_the_request(raw_server, autojump_clock):
    async with raw_server() as (client, peer):
        with trio.move_on_after(1) as scope:
            await client.request("slow", 1)
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(1)
        assert await peer.receive() == '{"a":["slow",1],"i":1}'
        assert await peer.receive() == cancel_frame(1)
        await peer.expect_silence(5)
        assert client.statistics().pending_requests == 0
        assert peer.written == ['{"a":["slow",1],"i":1}', cancel_frame(1)]


async def test_cancelling_the_calling_task_sends_cancel(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        done = []
        scope = trio.CancelScope()

        async def call() -> None:
            with scope:
                try:
                    await client.request("slow")
                finally:
                    done.append(trio.current_time())

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["slow"],"i":1}'
        await trio.sleep(3)
        scope.cancel()
        assert await peer.receive() == cancel_frame(1)
        await peer.expect_silence(1)
        assert done == [pytest.approx(3)]


async def test_per_call_timeout_raises_request_timeout_and_sends_cancel(raw_server, autojump_clock):
    async with raw_server() as (client, peer):
        with pytest.raises(wsw.RequestTimeout) as info:
            await client.request("slow", timeout=2.5)
        assert str(info.value) == "Request timed out"
        assert isinstance(info.value, wsw.WSWrapperError)
        assert trio.current_time() == pytest.approx(2.5)
        assert await peer.receive() == '{"a":["slow"],"i":1}'
        assert await peer.receive() == cancel_frame(1)
        await peer.expect_silence(5)
        assert client.statistics().pending_requests == 0


async def test_connection_default_timeout(raw_server, autojump_clock):
    options = wsw.Options(request_timeout=4)
    async with raw_server(options=options) as (client, peer):
        with pytest.raises(wsw.RequestTimeout, match=r"^Request timed out$"):
            await client.request("slow")
        assert trio.current_time() == pytest.approx(4)
        # a per-call timeout overrides the default, in both directions
        with pytest.raises(wsw.RequestTimeout):
            await client.request("slow", timeout=1)
        assert trio.current_time() == pytest.approx(5)
        with pytest.raises(wsw.RequestTimeout):
            await client.request("slow", timeout=10)
        assert trio.current_time() == pytest.approx(15)
        frames = [await peer.receive() for _ in range(6)]
        assert frames == [
            '{"a":["slow"],"i":1}',
            cancel_frame(1),
            '{"a":["slow"],"i":2}',
            cancel_frame(2),
            '{"a":["slow"],"i":3}',
            cancel_frame(3),
        ]


async def test_default_timeout_on_named_channels(raw_server, autojump_clock):
    async with raw_server(options=wsw.Options(request_timeout=1)) as (client, peer):
        with pytest.raises(wsw.RequestTimeout):
            await client.of("math").request("slow")
        assert await peer.receive() == '{"a":["slow"],"c":"math","i":1}'
        assert await peer.receive() == cancel_frame(1)


async def test_answer_before_timeout_wins(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        result = []

        async def call() -> None:
            result.append(await client.request("q", timeout=5))

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["q"],"i":1}'
        await trio.sleep(4.9)
        await peer.send('{"i":1,"d":"in time"}')
        await trio.sleep(1)
        assert result == ["in time"]
        await peer.expect_silence(10)


async def test_response_after_cancel_is_ignored(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        with trio.move_on_after(1):
            await client.request("first")
        assert await peer.receive() == '{"a":["first"],"i":1}'
        assert await peer.receive() == cancel_frame(1)
        result = []

        async def call() -> None:
            result.append(await client.request("second"))

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["second"],"i":2}'
        await peer.send('{"i":1,"d":"late"}')
        await peer.send('{"i":1,"e":"late"}')
        await peer.send('{"i":1,"h":1}')  # a stale creation: answered with an abort (§9.7)
        assert await peer.receive() == '{"h":1,"x":{"message":"Request aborted"},"_":1}'
        await trio.sleep(1)
        assert result == []
        await peer.send('{"i":2,"d":"second answer"}')
        await trio.sleep(1)
        assert result == ["second answer"]
        await peer.expect_silence()


class _HookTransport:
    """Wraps a transport; runs ``hook()`` synchronously each time the reader asks for a frame."""

    def __init__(self, inner: wsw.MemoryTransport) -> None:
        self.inner = inner
        self.hook = lambda: None

    async def send(self, message: str) -> None:
        await self.inner.send(message)

    async def receive(self) -> str | bytes:
        self.hook()
        return await self.inner.receive()

    async def aclose(self, code: int = 1000, reason: str = "", *, wait: bool = True) -> None:
        await self.inner.aclose(code, reason, wait=wait)

    async def ping(self) -> None:
        await self.inner.ping()


async def test_no_cancel_when_the_answer_was_already_matched(autojump_clock):
    """§8.3: the reader matches the answer, then the caller's scope is cancelled before it runs.

    The hook cancels the caller right after the reader processed the answer frame (the reader
    asks for its next frame without a checkpoint in between), so the caller has been woken
    with the value but has not run yet. The matched outcome stands and no ``x`` is sent.
    """
    client = wsw.Client()
    ours, theirs = wsw.memory_transport_pair()
    transport = _HookTransport(theirs)
    peer = RawPeer(ours)
    outcome: list[Any] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(client._run, transport)
        scope = trio.CancelScope()

        async def call() -> None:
            with scope:
                outcome.append(await client.request("q"))
                await trio.lowlevel.checkpoint()
                outcome.append("not cancelled")
            outcome.append(scope.cancelled_caught)

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["q"],"i":1}'

        def hook() -> None:
            if client.statistics().pending_requests == 0 and not scope.cancel_called:
                scope.cancel()

        transport.hook = hook
        await peer.send('{"i":1,"d":42}')
        await trio.sleep(1)
        assert scope.cancel_called
        assert outcome == [42, True]
        await peer.expect_silence(1)
        await client.aclose()


async def test_no_cancel_when_the_answer_is_matched_after_the_cancel_was_delivered(
    raw_server, autojump_clock
):
    """§8.3: the caller is cancelled, then the reader matches the answer before the caller runs.

    A ``message`` listener (run by the reader before it classifies the frame) cancels the
    caller; the reader then matches the answer. The caller sees ``Cancelled`` and, since the
    answer was matched first, sends no ``x``.
    """
    client = wsw.Client()
    scope = trio.CancelScope()

    @client.on("message")
    def on_message(_client: wsw.Client, frame: str) -> None:
        if '"d"' in frame:
            scope.cancel()

    async with raw_server(client) as (client, peer), trio.open_nursery() as nursery:
        outcome: list[Any] = []

        async def call() -> None:
            with scope:
                outcome.append(await client.request("q"))
            outcome.append(scope.cancelled_caught)

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["q"],"i":1}'
        await peer.send('{"i":1,"d":42}')
        await trio.sleep(1)
        assert outcome == [True]
        assert client.statistics().pending_requests == 0
        await peer.expect_silence(1)


async def test_no_cancel_when_the_connection_ended(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        errors: list[BaseException] = []

        async def call() -> None:
            with trio.move_on_after(100):
                try:
                    await client.request("slow")
                except wsw.ConnectionClosed as exc:
                    errors.append(exc)
                    await trio.sleep(1)  # the cancellation arrives after the failure

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["slow"],"i":1}'
        await trio.sleep(1)
        await peer.transport.aclose(1001, "going away")
        await trio.sleep(200)
        assert len(errors) == 1
        assert errors[0].code == 1001
        # failed promptly (§12.3), not at the scope's deadline
        assert client.statistics().pending_requests == 0
        assert peer.written == ['{"a":["slow"],"i":1}']


async def test_pending_request_fails_promptly_when_we_close(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        failed_at: list[float] = []

        async def call() -> None:
            with pytest.raises(wsw.ConnectionClosed):
                await client.request("slow", timeout=100)
            failed_at.append(trio.current_time())

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["slow"],"i":1}'
        await trio.sleep(2)
        with trio.move_on_after(10):
            await client.aclose()
        await trio.sleep(1)
        assert failed_at and failed_at[0] < 20
        assert all('"x"' not in frame for frame in peer.written)


@pytest.mark.parametrize("compat", ["v3"])
async def test_no_cancel_in_v3_mode(raw_server, autojump_clock, compat):
    async with raw_server(options=wsw.Options(peer_compat=compat, request_timeout=2)) as (client, peer):
        with trio.move_on_after(1):
            await client.request("a")
        with pytest.raises(wsw.RequestTimeout):
            await client.request("b")
        assert await peer.receive() == '{"a":["a"],"i":1}'
        assert await peer.receive() == '{"a":["b"],"i":2}'
        await peer.expect_silence(5)
        assert client.statistics().pending_requests == 0


async def test_cancel_is_sent_in_go16_mode(raw_server, autojump_clock):
    async with raw_server(options=wsw.Options(peer_compat="go16")) as (client, peer):
        with trio.move_on_after(1):
            await client.request("a")
        assert await peer.receive() == '{"a":["a"],"i":1}'
        assert await peer.receive() == cancel_frame(1)


async def test_error_flag_option_applies_to_cancellations(raw_server, autojump_clock):
    async with raw_server(options=wsw.Options(error_flag=True)) as (client, peer):
        with trio.move_on_after(1):
            await client.request("a")
        assert await peer.receive() == '{"a":["a"],"i":1}'
        assert await peer.receive() == '{"i":1,"x":{"message":"Request aborted"},"_":true}'


async def test_already_cancelled_request_allocates_no_id(raw_server, autojump_clock):
    async with raw_server() as (client, peer):
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.request("never")
        assert scope.cancelled_caught
        with trio.move_on_after(1):
            await client.request("first")
        assert await peer.receive() == '{"a":["first"],"i":1}'
        assert await peer.receive() == cancel_frame(1)
        await peer.expect_silence(1)


async def test_request_cancelled_while_waiting_for_queue_space(raw_server, autojump_clock):
    """§4: a request that could not be queued yet allocates no id and sends nothing."""
    options = wsw.Options(limits=wsw.Limits(send_queue_size=1))
    async with raw_server(options=options, buffer=0) as (client, peer), trio.open_nursery() as nursery:
        results: dict[str, Any] = {}

        async def call(name: str, deadline: float) -> None:
            with trio.move_on_after(deadline) as scope:
                results[name] = await client.request(name)
            if scope.cancelled_caught:
                results[name] = "cancelled"

        nursery.start_soon(call, "one", 100)  # taken by the writer, which waits for the peer
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "two", 100)  # fills the queue
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "three", 5)  # waits for room, then gives up
        await trio.sleep(10)
        assert results == {"three": "cancelled"}
        assert client.statistics().pending_requests == 2
        assert await peer.receive() == '{"a":["one"],"i":1}'
        assert await peer.receive() == '{"a":["two"],"i":2}'
        await peer.send('{"i":1,"d":1}')
        await peer.send('{"i":2,"d":2}')
        nursery.start_soon(call, "four", 100)
        assert await peer.receive() == '{"a":["four"],"i":3}'
        await peer.send('{"i":3,"d":3}')
        await trio.sleep(1)
        assert results == {"one": 1, "two": 2, "three": "cancelled", "four": 3}
        await peer.expect_silence(1)


async def test_cancel_follows_a_request_still_in_the_send_queue(raw_server, autojump_clock):
    """§8.1: the cancellation is queued behind its request, never ahead of it nor lost."""
    options = wsw.Options(limits=wsw.Limits(send_queue_size=4))
    async with raw_server(options=options, buffer=0) as (client, peer), trio.open_nursery() as nursery:
        nursery.start_soon(client.emit, "blocker")  # the writer holds it until the peer reads
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await client.request("queued")
        assert await peer.receive() == '{"a":["blocker"]}'
        assert await peer.receive() == '{"a":["queued"],"i":1}'
        assert await peer.receive() == cancel_frame(1)
        await peer.expect_silence(1)


async def test_unencodable_request_allocates_no_id(raw_server, autojump_clock):
    async with raw_server() as (client, peer):
        with pytest.raises(TypeError):
            await client.request("bad", object())
        with pytest.raises(ValueError):
            await client.request("bad", float("nan"))
        with pytest.raises(ValueError):
            await client.request("open")  # reserved on the root channel
        with trio.move_on_after(1):
            await client.request("good")
        assert await peer.receive() == '{"a":["good"],"i":1}'


async def test_ids_strictly_increase_and_survive_reconnects(autojump_clock):
    client = wsw.Client()
    seen = []
    for _ in range(2):
        ours, theirs = wsw.memory_transport_pair()
        peer = RawPeer(ours)
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run, theirs)
            for _ in range(3):
                with trio.move_on_after(1):
                    await client.request("q")
                seen.append(json.loads(await peer.receive())["i"])
                assert await peer.receive() == cancel_frame(seen[-1])
            await client.aclose()
    assert seen == [1, 2, 3, 4, 5, 6]


async def test_request_id_bound(raw_server, autojump_clock):
    async with raw_server() as (client, peer):
        client._next_id = 2**53 - 1
        with trio.move_on_after(1):
            await client.request("last")
        assert await peer.receive() == '{"a":["last"],"i":9007199254740991}'
        assert await peer.receive() == cancel_frame(2**53 - 1)
        with pytest.raises(wsw.ProtocolError):
            await client.request("too far")
        await peer.expect_silence(1)


async def test_ids_skip_live_anonymous_channel_keys(raw_server, autojump_clock):
    client = wsw.Client()
    release = trio.Event()

    @client.on("chan")
    async def chan() -> None:
        async with wsw.open_channel():
            await release.wait()

    async with raw_server(client) as (client, peer), trio.open_nursery() as nursery:
        for rid in (1, 2):
            with trio.move_on_after(1):
                await client.request("q")
            assert await peer.receive() == f'{{"a":["q"],"i":{rid}}}'
            assert await peer.receive() == cancel_frame(rid)
        # the peer's request 3 and 5 become channels we serve; so does our own request 4
        await peer.send('{"a":["chan"],"i":3}')
        assert await peer.receive() == '{"i":3,"h":1}'
        await peer.send('{"a":["chan"],"i":5}')
        assert await peer.receive() == '{"i":5,"h":1}'
        got: list[wsw.AnonymousChannel] = []

        async def call() -> None:
            got.append(await client.request("mine"))

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["mine"],"i":4}'  # 3 is skipped
        await peer.send('{"i":4,"h":1}')
        await trio.sleep(1)
        assert got[0].id == 4
        with trio.move_on_after(1):
            await client.request("q")
        assert await peer.receive() == '{"a":["q"],"i":6}'  # 4 and 5 are skipped
        assert await peer.receive() == cancel_frame(6)
        release.set()  # channels 3 and 5 close silently; ids are still never reused
        await trio.sleep(1)
        with trio.move_on_after(1):
            await client.request("q")
        assert await peer.receive() == '{"a":["q"],"i":7}'


# -- explicit cancellation with a reason (§8.1, §6.3) ------------------------------------------


@pytest.mark.parametrize(
    ("reason", "wire"),
    [
        (None, ABORTED),
        ("user cancelled", '"user cancelled"'),
        (Exception("user error"), '{"message":"user error"},"_":1'),
        ({"code": 42}, '{"code":42}'),
        (0, "0"),
        (wsw.RemoteError("raw"), '"raw"'),
    ],
)
async def test_cancel_source_reason_travels(raw_server, autojump_clock, reason, wire):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        with wsw.CancelSource() as source:
            nursery.start_soon(_cancel_later, source, reason)
            await client.request("slow")
        assert source.cancel_called
        assert source.cancelled_caught
        assert await peer.receive() == '{"a":["slow"],"i":1}'
        assert await peer.receive() == cancel_frame(1, wire)
        await peer.expect_silence(1)


async def _cancel_later(source: wsw.CancelSource, reason: object) -> None:
    await trio.sleep(1)
    source.cancel(reason)


async def test_cancel_source_first_reason_wins_and_timeouts_send_the_default(raw_server, autojump_clock):
    async with raw_server() as (client, peer):
        with wsw.CancelSource() as source:
            with pytest.raises(wsw.RequestTimeout):
                await client.request("slow", timeout=1)
            source.cancel("first")
            source.cancel("second")
            await client.request("never sent")
        assert source.cancelled_caught
        assert source.reason == "first"
        assert await peer.receive() == '{"a":["slow"],"i":1}'
        assert await peer.receive() == cancel_frame(1)
        await peer.expect_silence(1)  # an already-cancelled source allocates no id


async def test_outer_trio_cancellation_inside_a_source_sends_the_default(raw_server, autojump_clock):
    async with raw_server() as (client, peer):
        with trio.move_on_after(1), wsw.CancelSource():
            await client.request("slow")
        assert await peer.receive() == '{"a":["slow"],"i":1}'
        assert await peer.receive() == cancel_frame(1)


async def test_cancel_source_after_creation_aborts_the_channel(raw_server, autojump_clock):
    """§9.3: a cancel source that fires after creation aborts the channel, never ``{"i",x}``."""
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        with wsw.CancelSource() as source:
            nursery.start_soon(_answer_with_channel, peer)
            ch = await client.request("chan")
            assert isinstance(ch, wsw.AnonymousChannel)
            await trio.sleep(5)  # no request timeout is inherited
            assert not ch.closed
            source.cancel("enough")
            assert ch.closed
            assert ch.close_reason == wsw.ErrorPayload("enough")
            await trio.sleep(1)
        assert source.cancelled_caught
        assert await peer.receive() == '{"h":1,"x":"enough"}'
        await peer.expect_silence(1)
        with pytest.raises(wsw.ChannelClosed, match=r"^Cannot emit on a closed channel$"):
            await ch.emit("more")


async def _answer_with_channel(peer: RawPeer) -> None:
    assert await peer.receive() == '{"a":["chan"],"i":1}'
    await peer.send('{"i":1,"h":1}')


# -- handler side: inbound cancellation (§8.2) --------------------------------------------------


async def test_inbound_cancel_stops_exactly_that_handler(server, autojump_clock):
    log: list[tuple[str, Any]] = []
    release = trio.Event()

    @server.on("slow")
    async def slow(tag: str) -> str:
        log.append(("start", tag))
        try:
            await release.wait()
        except trio.Cancelled:
            log.append(("cancelled", tag))
            raise
        return tag

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["slow","a"],"i":1}')
        await peer.send('{"a":["slow","b"],"i":2}')
        await trio.sleep(1)
        await peer.send(cancel_frame(1))
        await trio.sleep(1)
        assert log == [("start", "a"), ("start", "b"), ("cancelled", "a")]
        await peer.expect_silence(1)
        release.set()
        assert await peer.receive() == '{"i":2,"d":"b"}'
        await peer.expect_silence(1)
        assert server.statistics().active_requests == 0


@pytest.mark.parametrize(
    "outcome",
    ["return", "raise", "reject", "return channel"],
)
async def test_nothing_is_sent_after_an_accepted_cancel(server, autojump_clock, outcome):
    finished = []

    @server.on("slow")
    async def slow() -> Any:
        with contextlib.suppress(trio.Cancelled):  # whatever the handler does next, nothing is sent
            await trio.sleep_forever()
        with trio.CancelScope(shield=True):
            await trio.sleep(1)
        finished.append(outcome)
        if outcome == "raise":
            raise ValueError("after cancel")
        if outcome == "reject":
            raise wsw.RemoteError("after cancel")
        if outcome == "return channel":
            return wsw.channel()
        return "after cancel"

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["slow"],"i":1}')
        await trio.sleep(1)
        await peer.send(cancel_frame(1))
        await trio.sleep(5)
        assert finished == [outcome]
        await peer.expect_silence(1)
        # the connection is unaffected
        server.on("ping", lambda: "pong")
        await peer.send('{"a":["ping"],"i":2}')
        assert await peer.receive() == '{"i":2,"d":"pong"}'


@pytest.mark.parametrize(
    ("x", "value", "is_error", "message"),
    [
        (ABORTED, {"message": "Request aborted"}, True, "Request aborted"),
        ('"user cancelled"', "user cancelled", False, "user cancelled"),
        ('{"message":"user error"},"_":true', {"message": "user error"}, True, "user error"),
        ('{"code":42}', {"code": 42}, False, '{"code":42}'),
        ("null", None, False, "null"),
        ("1", 1, False, "1"),
    ],
)
async def test_handler_reads_the_cancel_reason(server, autojump_clock, x, value, is_error, message):
    reasons: list[Any] = []

    @server.on("slow")
    async def slow() -> None:
        reasons.append(wsw.cancel_reason())
        try:
            await trio.sleep_forever()
        finally:
            reasons.append(wsw.cancel_reason())

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["slow"],"i":1}')
        await trio.sleep(1)
        await peer.send(f'{{"i":1,"x":{x}}}')
        await trio.sleep(1)
        assert reasons[0] is None
        reason = reasons[1]
        assert isinstance(reason, wsw.ErrorPayload)
        assert (reason.value, reason.is_error, reason.message) == (value, is_error, message)
        await peer.expect_silence(1)


async def test_cancel_reason_outside_a_request_handler(server, autojump_clock):
    with pytest.raises(RuntimeError):
        wsw.cancel_reason()
    seen: list[Any] = []

    @server.on("event")
    def event() -> None:
        try:
            wsw.cancel_reason()
        except RuntimeError as exc:
            seen.append(exc)

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["event"]}')
        await trio.sleep(1)
        assert len(seen) == 1
        await peer.expect_silence(1)


async def test_cancel_after_the_answer_is_ignored(server, autojump_clock):
    calls = []

    @server.on("echo")
    def echo(x: Any) -> Any:
        calls.append(x)
        return x

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["echo",1],"i":1}')
        assert await peer.receive() == '{"i":1,"d":1}'
        await peer.send(cancel_frame(1))
        await peer.expect_silence(1)
        # the id is free again: a new request with the same number is served normally
        await peer.send('{"a":["echo",2],"i":1}')
        assert await peer.receive() == '{"i":1,"d":2}'
        assert calls == [1, 2]


async def test_cancel_for_unknown_ids_never_touches_our_pending_requests(server, autojump_clock):
    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("question")

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["ask"],"i":7}')
        assert await peer.receive() == '{"a":["question"],"i":1}'
        # the peer's x for number 1 names no request of its own: ignored, not matched to ours
        await peer.send(cancel_frame(1))
        await peer.send('{"i":1,"x":null}')
        await peer.send('{"i":99,"x":"nope"}')
        await peer.send('{"x":"no id"}')
        await peer.expect_silence(1)
        assert server.statistics().pending_requests == 1
        # an inbound request numbered like our pending one is unrelated to it (§4)
        server.on("echo", lambda v: v)
        await peer.send('{"a":["echo","same number"],"i":1}')
        assert await peer.receive() == '{"i":1,"d":"same number"}'
        await peer.send('{"i":1,"d":42}')
        assert await peer.receive() == '{"i":7,"d":42}'


async def test_cancel_of_a_request_made_by_a_handler(server, autojump_clock):
    """Cancelling the peer's request cancels our handler, which cancels its own request."""

    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("question")

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["ask"],"i":7}')
        assert await peer.receive() == '{"a":["question"],"i":1}'
        await peer.send(cancel_frame(7))
        assert await peer.receive() == cancel_frame(1)
        await peer.expect_silence(1)
        assert server.statistics().pending_requests == 0
        assert server.statistics().active_requests == 0


async def test_duplicate_active_id_keeps_the_original(server, autojump_clock):
    release = trio.Event()

    @server.on("slow")
    async def slow(tag: str) -> str:
        await release.wait()
        return tag

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["slow","first"],"i":1}')
        await peer.send('{"a":["slow","dup"],"i":1}')
        await trio.sleep(1)
        release.set()
        assert await peer.receive() == '{"i":1,"d":"first"}'
        await peer.expect_silence(1)


# -- races (§8.3) -------------------------------------------------------------------------------


async def test_race_cancel_and_finish_in_the_same_tick(server, autojump_clock):
    """Inbound x vs. our handler finishing: exactly one outcome, never both, never an error."""
    release = trio.Event()

    @server.on("slow")
    async def slow() -> str:
        await release.wait()
        return "done"

    async with open_raw_peer(server) as peer:
        for rid in range(1, 21):
            release = trio.Event()
            await peer.send(f'{{"a":["slow"],"i":{rid}}}')
            await trio.sleep(1)
            release.set()
            await peer.send(cancel_frame(rid))
            await trio.sleep(1)
            with trio.move_on_after(1):
                frame = await peer.receive()
                assert frame == f'{{"i":{rid},"d":"done"}}'
            await peer.expect_silence(1)
        assert server.statistics().active_requests == 0


async def test_race_answer_committed_while_waiting_for_queue_space(autojump_clock):
    """An answer handed to the send path is committed: a later x is ignored and it is sent."""
    server = wsw.Server(heartbeat_interval=None, send_queue_size=1)
    release = trio.Event()

    @server.on("slow")
    async def slow() -> str:
        await release.wait()
        return "done"

    @server.on("flood")
    async def flood() -> None:
        for n in range(3):
            await wsw.current_client().emit("tick", n)

    ours, theirs = wsw.memory_transport_pair(buffer=0)
    peer = RawPeer(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept, theirs)
        await peer.send('{"a":["slow"],"i":1}')
        await peer.send('{"a":["flood"]}')
        await trio.sleep(1)  # the writer holds tick 0, tick 1 fills the queue, tick 2 waits
        release.set()
        await trio.sleep(1)  # the answer is committed and waits for room
        await peer.send(cancel_frame(1))
        frames = [await peer.receive() for _ in range(4)]
        assert sorted(frames) == sorted(
            ['{"a":["tick",0]}', '{"a":["tick",1]}', '{"a":["tick",2]}', '{"i":1,"d":"done"}']
        )
        await peer.expect_silence(1)
        await ours.aclose()


async def test_race_timeout_vs_creation(raw_server, autojump_clock):
    """Creation first: the timeout stops applying. Timeout first: stale creation (§9.7)."""
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        got: list[Any] = []

        async def call() -> None:
            got.append(await client.request("chan", timeout=5))

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["chan"],"i":1}'
        await trio.sleep(4.9)
        await peer.send('{"i":1,"h":1}')
        await trio.sleep(10)
        assert isinstance(got[0], wsw.AnonymousChannel)
        assert not got[0].closed
        await peer.expect_silence(1)

        with pytest.raises(wsw.RequestTimeout):
            await client.request("chan", timeout=5)
        assert await peer.receive() == '{"a":["chan"],"i":2}'
        assert await peer.receive() == cancel_frame(2)
        await peer.send('{"i":2,"h":1}')
        assert await peer.receive() == '{"h":2,"x":{"message":"Request aborted"},"_":1}'
        await peer.expect_silence(1)
        assert client.statistics().open_channels == 1


async def test_cancelling_a_request_made_on_an_anonymous_channel(raw_server, autojump_clock):
    """§8.1: plain ``{"i",x}`` without ``h``; the channel stays open."""
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_answer_with_channel, peer)
        ch = await client.request("chan")
        with trio.move_on_after(1):
            await ch.request("slow")
        assert await peer.receive() == '{"a":["slow"],"h":1,"i":2}'
        assert await peer.receive() == cancel_frame(2)
        assert not ch.closed
        await ch.emit("still", "open")
        assert await peer.receive() == '{"a":["still","open"],"h":1}'
        with pytest.raises(wsw.RequestTimeout):
            await ch.request("slow", timeout=1)
        assert await peer.receive() == '{"a":["slow"],"h":1,"i":3}'
        assert await peer.receive() == cancel_frame(3)
        assert not ch.closed


class _AfterReceive(_HookTransport):
    """Runs ``hook(frame)`` after a frame arrived and before the reader processes it."""

    async def receive(self) -> str | bytes:
        frame = await self.inner.receive()
        self.hook(frame)
        return frame


async def test_channel_answer_matched_after_the_caller_was_cancelled_is_aborted(autojump_clock):
    """§9.3: the request's cancellation is inherited by the channel it produced.

    The caller's scope is cancelled, then, before the caller runs, the reader matches the
    creation frame: the caller never receives the channel, so it is aborted, not orphaned.
    """
    client = wsw.Client()
    ours, theirs = wsw.memory_transport_pair()
    transport = _AfterReceive(theirs)
    peer = RawPeer(ours)
    outcome: list[Any] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(client._run, transport)
        scope = trio.CancelScope()

        async def call() -> None:
            with scope:
                outcome.append(await client.request("chan"))
            outcome.append(scope.cancelled_caught)

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["chan"],"i":1}'
        transport.hook = lambda frame: scope.cancel() if frame == '{"i":1,"h":1}' else None
        await peer.send('{"i":1,"h":1}')
        assert await peer.receive() == '{"h":1,"x":{"message":"Request aborted"},"_":1}'
        await trio.sleep(1)
        assert outcome == [True]
        assert client.statistics().open_channels == 0
        await peer.expect_silence(1)
        await client.aclose()


bound_tests(globals())
