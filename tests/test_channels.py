"""Anonymous channels (PROTOCOL.md §9, §12.3, §14.2; DESIGN.md §2).

Handler-side wire tests run the ``server`` fixture against a raw peer acting as the requestor;
requestor-side wire tests run a real client against a raw peer acting as the server
(``raw_server``); end-to-end tests connect a real client to the server. Time is virtual.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import trio_wswrapper as wsw
from tests.bounded import bound_tests
from trio_wswrapper.testing import open_raw_peer, open_test_client

ABORTED = '{"message":"Request aborted"},"_":1'


def fail_safe(h: int) -> str:
    return f'{{"h":{h},"x":{{"message":"Anonymous channel \'{h}\' does not exist"}},"_":1}}'


def overflow(h: int) -> str:
    text = f"Anonymous channel '{h}' buffer overflow; consumer is too slow"
    return f'{{"h":{h},"x":{{"message":"{text}"}},"_":1}}'


def does_not_exist(rid: int, h: int) -> str:
    return f'{{"i":{rid},"e":{{"message":"Anonymous channel \'{h}\' does not exist"}},"_":1}}'


# -- handler side: opening (§9.2) ---------------------------------------------------------------


async def test_structured_channel_announces_emits_and_closes_silently(server, autojump_clock):
    @server.on("count")
    async def count(n: int) -> str:
        async with wsw.open_channel() as ch:
            assert isinstance(ch, wsw.AnonymousChannel)
            assert ch.id == 7
            for i in range(n):
                await ch.emit("data", i)
        assert ch.closed
        assert ch.close_reason is None
        return "discarded"  # the request was answered by the announcement

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["count",2],"i":7}')
        assert await peer.receive() == '{"i":7,"h":1}'
        assert await peer.receive() == '{"a":["data",0],"h":7}'
        assert await peer.receive() == '{"a":["data",1],"h":7}'
        await peer.expect_silence(1)
        assert server.statistics().open_channels == 0
        await peer.send('{"a":["late"],"h":7}')
        assert await peer.receive() == fail_safe(7)


@pytest.mark.parametrize(
    ("exc", "wire"),
    [
        (ValueError("boom"), '{"message":"boom"},"_":1'),
        (ValueError(), '{"message":"ValueError"},"_":1'),
        (wsw.RemoteError("raw"), '"raw"'),
        (wsw.RemoteError({"code": 42}), '{"code":42}'),
    ],
)
async def test_structured_channel_exception_exit_aborts_with_that_error(server, autojump_clock, exc, wire):
    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            await ch.emit("hello")
            raise exc

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        assert await peer.receive() == '{"a":["hello"],"h":1}'
        assert await peer.receive() == f'{{"h":1,"x":{wire}}}'
        await peer.expect_silence(1)  # no rejection for the request after the announcement


async def test_structured_channel_cancelled_by_connection_handler_scope_aborts_with_default(
    server, autojump_clock
):
    @server.on("chan")
    async def chan() -> None:
        with trio.move_on_after(2):
            async with wsw.open_channel():
                await trio.sleep_forever()

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        assert await peer.receive() == f'{{"h":1,"x":{ABORTED}}}'
        assert trio.current_time() == pytest.approx(2)
        await peer.expect_silence(1)


async def test_returned_channel(server, autojump_clock):
    @server.on("chan")
    def chan() -> wsw.AnonymousChannel:
        ch = wsw.channel()
        assert wsw.channel() is ch  # one channel per request
        ch.on("add", lambda a, b: a + b)
        return ch

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":3}')
        assert await peer.receive() == '{"i":3,"h":1}'
        await peer.send('{"a":["add",1,2],"h":3,"i":4}')
        assert await peer.receive() == '{"i":4,"d":3}'  # answered without h
        await peer.send('{"a":["nope"],"h":3,"i":5}')
        assert await peer.receive() == (
            '{"i":5,"e":{"message":"No event listener for \'nope\' on channel \'3\'"},"_":1}'
        )
        await peer.send('{"a":["nope"],"h":"3"}')  # numeric-string h; an event without handler
        await peer.expect_silence(1)
        assert server.statistics().open_channels == 1


async def test_unannounced_channel_cannot_send(server, autojump_clock):
    errors: list[BaseException] = []

    @server.on("chan")
    async def chan() -> wsw.AnonymousChannel:
        ch = wsw.channel()
        for call in (ch.emit("early"), ch.request("early")):
            try:
                await call
            except wsw.WSWrapperError as exc:
                errors.append(exc)
        return ch

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.expect_silence(1)
        assert len(errors) == 2


async def test_returning_a_channel_not_obtained_by_the_request_is_an_ordinary_result(server, autojump_clock):
    @server.on("plain")
    def plain() -> Any:
        return None

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["plain"],"i":1}')
        assert await peer.receive() == '{"i":1,"d":null}'


@pytest.mark.parametrize("style", ["open_channel", "channel"])
async def test_opening_a_channel_in_an_event_handler_raises_and_sends_nothing(server, autojump_clock, style):
    errors: list[BaseException] = []

    @server.on("ev")
    async def ev() -> None:
        try:
            if style == "channel":
                wsw.channel()
            else:
                async with wsw.open_channel():
                    pass
        except wsw.ProtocolError as exc:
            errors.append(exc)

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["ev"]}')
        await peer.expect_silence(1)
        assert len(errors) == 1
        assert server.statistics().open_channels == 0
    with pytest.raises(wsw.ProtocolError):
        wsw.channel()


@pytest.mark.parametrize("compat", ["v3", "go16"])
@pytest.mark.parametrize("style", ["open_channel", "channel", "stream"])
async def test_old_peers_refuse_channels(autojump_clock, compat, style):
    server = wsw.Server(heartbeat_interval=None, peer_compat=compat)

    @server.on("chan")
    async def chan() -> Any:
        if style == "channel":
            return wsw.channel()
        async with wsw.open_channel():
            pass
        return None

    @server.on("stream")
    async def stream() -> Any:
        yield 1

    async with open_raw_peer(server) as peer:
        await peer.send(f'{{"a":["{"stream" if style == "stream" else "chan"}"],"i":1}}')
        assert await peer.receive() == (
            '{"i":1,"e":{"message":"Anonymous channels are not supported by this peer"},"_":1}'
        )
        await peer.expect_silence(1)
        # no frame with h: fail-safes are suppressed, the rejection remains
        await peer.send('{"a":["x"],"h":5}')
        await peer.send('{"a":["x"],"h":5,"i":2}')
        assert (
            await peer.receive() == '{"i":2,"e":{"message":"Anonymous channel \'5\' does not exist"},"_":1}'
        )
        await peer.expect_silence(1)


@pytest.mark.parametrize("compat", ["v3", "go16"])
async def test_old_peers_no_stale_creation_abort(raw_server, autojump_clock, compat):
    async with raw_server(options=wsw.Options(peer_compat=compat)) as (client, peer):
        with trio.move_on_after(1):
            await client.request("q")
        assert await peer.receive() == '{"a":["q"],"i":1}'
        if compat == "go16":
            assert await peer.receive() == f'{{"i":1,"x":{ABORTED}}}'
        await peer.send('{"i":1,"h":1}')
        await peer.expect_silence(1)
        assert all('"h"' not in frame for frame in peer.written)


# -- requestor side: receiving (§9.3) -----------------------------------------------------------


async def test_requestor_receives_an_anonymous_channel_and_iterates_events(server, autojump_clock):
    @server.on("count")
    async def count(n: int) -> None:
        async with wsw.open_channel() as ch:
            for i in range(n):
                await ch.emit("data", i, {"sq": i * i})
            await ch.emit("end")

    async with open_test_client(server) as client:
        ch = await client.request("count", 3)
        assert isinstance(ch, wsw.AnonymousChannel)
        assert ch.id == 1
        got = []
        async with ch:
            async for name, args in ch:
                got.append((name, args))
                if name == "end":
                    break
        assert got == [
            ("data", (0, {"sq": 0})),
            ("data", (1, {"sq": 1})),
            ("data", (2, {"sq": 4})),
            ("end", ()),
        ]
        assert ch.closed


async def test_on_and_once_handlers_take_their_events_the_rest_is_iterated(server, autojump_clock):
    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            go = trio.Event()
            ch.once("go", go.set)
            await go.wait()
            for name in ("a", "b", "b", "c", "a", "d"):
                await ch.emit(name, name.upper())
            await trio.sleep_forever()

    async with open_test_client(server) as client:
        ch = await client.request("chan")
        on_a: list[Any] = []
        once_b: list[Any] = []
        ch.on("a", on_a.append)
        ch.once("b", once_b.append)
        await ch.emit("go")
        rest = [await ch.receive() for _ in range(3)]
        assert rest == [("b", ("B",)), ("c", ("C",)), ("d", ("D",))]
        assert on_a == ["A", "A"]
        assert once_b == ["B"]
        await ch.abort()


async def test_emit_and_request_both_directions(server, autojump_clock):
    seen: list[Any] = []

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            ch.on("add", lambda a, b: a + b)
            ch.on("note", seen.append)
            seen.append(await ch.request("mul", 2, 3))
            await ch.emit("ev", "from server")
            await trio.sleep_forever()

    async with open_test_client(server) as client:
        ch = await client.request("chan")
        ch.on("mul", lambda a, b: a * b)
        assert await ch.request("add", 1, 2) == 3
        await ch.emit("note", "from client")
        assert await ch.receive() == ("ev", ("from server",))
        await trio.sleep(1)
        assert seen == [6, "from client"]
        with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'nope' on channel '1'$"):
            await ch.request("nope")
        # reserved names are ordinary names on anonymous channels (§5)
        with pytest.raises(wsw.RemoteError, match=r"^No event listener for 'open' on channel '1'$"):
            await ch.request("open")
        await ch.abort()


async def test_channel_traffic_on_the_wire_from_the_handler_side(server, autojump_clock):
    results: list[Any] = []

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            results.append(await ch.request("mul", 2, 3))
            results.append(await ch.request("open"))  # reserved names travel on channels
            await trio.sleep_forever()

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":5}')
        assert await peer.receive() == '{"i":5,"h":1}'
        assert await peer.receive() == '{"a":["mul",2,3],"h":5,"i":1}'
        await peer.send('{"i":1,"d":6}')
        assert await peer.receive() == '{"a":["open"],"h":5,"i":2}'
        await peer.send('{"i":2,"d":null}')
        await trio.sleep(1)
        assert results == [6, None]


async def test_requestor_wire_channel_traffic(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        got: list[Any] = []

        async def call() -> None:
            got.append(await client.request("chan", 1))

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["chan",1],"i":1}'
        await peer.send('{"i":1,"h":1}')
        await trio.sleep(1)
        (ch,) = got
        assert isinstance(ch, wsw.AnonymousChannel)
        ch.on("double", lambda v: 2 * v)
        await ch.emit("hello", None)
        assert await peer.receive() == '{"a":["hello",null],"h":1}'
        await peer.send('{"a":["double",21],"h":1,"i":1}')  # the peer's own id 1
        assert await peer.receive() == '{"i":1,"d":42}'
        result: list[Any] = []

        async def ask() -> None:
            result.append(await ch.request("inc", 1))

        nursery.start_soon(ask)
        assert await peer.receive() == '{"a":["inc",1],"h":1,"i":2}'
        await peer.send('{"i":2,"d":2}')
        await trio.sleep(1)
        assert result == [2]
        await ch.abort()
        assert await peer.receive() == f'{{"h":1,"x":{ABORTED}}}'


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ('{"i":1,"h":1}', "channel"),
        ('{"i":1,"h":"1"}', "channel"),
        ('{"i":1,"h":9}', "channel"),  # h is only a marker; the id is the request's
        ('{"i":1,"d":5,"h":1}', "channel"),
        ('{"i":1,"e":"no","h":1}', "reject"),
        ('{"i":1,"d":null}', "value"),
    ],
)
async def test_creation_frame_variants(raw_server, autojump_clock, frame, kind):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        got: list[Any] = []

        async def call() -> None:
            try:
                got.append(await client.request("q"))
            except wsw.RemoteError as exc:
                got.append(exc)

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["q"],"i":1}'
        await peer.send(frame)
        await trio.sleep(1)
        (result,) = got
        if kind == "channel":
            assert isinstance(result, wsw.AnonymousChannel)
            assert result.id == 1
            assert client.statistics().open_channels == 1
        elif kind == "reject":
            assert isinstance(result, wsw.RemoteError)
            assert client.statistics().open_channels == 0
        else:
            assert result is None
        await peer.expect_silence(1)


@pytest.mark.parametrize(
    ("how", "wire"),
    [
        ("exit-normal", None),
        ("exit-error", '{"message":"boom"},"_":1'),
        ("exit-cancel", ABORTED),
        ("aclose", None),
    ],
)
async def test_requestor_scope_closes_or_aborts(raw_server, autojump_clock, how, wire):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_answer_with_channel, peer)
        ch = await client.request("chan")
        with trio.move_on_after(1):
            try:
                async with ch:
                    if how == "exit-error":
                        raise ValueError("boom")
                    if how == "exit-cancel":
                        await trio.sleep_forever()
                    if how == "aclose":
                        await ch.aclose()
            except ValueError:
                pass
        assert ch.closed
        if wire is None:
            await peer.expect_silence(1)
            assert ch.close_reason is None
        else:
            assert await peer.receive() == f'{{"h":1,"x":{wire}}}'
        # traffic for the closed channel meets the fail-safe; requests also get a rejection
        await peer.send('{"a":["ev"],"h":1}')
        assert await peer.receive() == fail_safe(1)
        await peer.send('{"a":["req"],"h":1,"i":7}')
        assert await peer.receive() == fail_safe(1)
        assert (
            await peer.receive() == '{"i":7,"e":{"message":"Anonymous channel \'1\' does not exist"},"_":1}'
        )


async def _answer_with_channel(peer: Any, rid: int = 1) -> None:
    assert await peer.receive() == f'{{"a":["chan"],"i":{rid}}}'
    await peer.send(f'{{"i":{rid},"h":1}}')


# -- aborts (§9.6, §6.3) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "wire", "message"),
    [
        (None, ABORTED, "Request aborted"),
        ("enough", '"enough"', "enough"),
        (Exception("user error"), '{"message":"user error"},"_":1', "user error"),
        ({"code": 42}, '{"code":42}', '{"code":42}'),
        (wsw.RemoteError({"message": "fwd"}, is_error=True), '{"message":"fwd"},"_":1', "fwd"),
    ],
)
async def test_requestor_aborts(server, autojump_clock, reason, wire, message):
    """Requestor aborts end to end: the handler's consumer ends with the reason."""
    outcome: list[Any] = []

    @server.on("chan")
    async def chan() -> None:
        try:
            async with wsw.open_channel() as ch:
                await ch.emit("ready")
                async for item in ch:
                    outcome.append(item)
        except wsw.ChannelClosed as exc:
            outcome.append(exc)

    async with open_test_client(server) as client:
        ch = await client.request("chan")
        assert await ch.receive() == ("ready", ())
        await ch.emit("one")
        await ch.abort(reason)
        assert ch.closed
        assert ch.close_reason.message == message
        await ch.abort("again")  # aborting a closed channel does nothing
        await trio.sleep(1)
        assert outcome[0] == ("one", ())
        closed = outcome[1]
        assert isinstance(closed, wsw.ChannelClosed)
        assert closed.reason is not None
        assert closed.reason.message == message
        assert server.statistics().open_channels == 0

    # the same reason as a raw peer sends it reaches the handler the same way, with no reply
    outcome.clear()
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        assert await peer.receive() == '{"a":["ready"],"h":1}'
        await peer.send(f'{{"h":1,"x":{wire}}}')
        await peer.expect_silence(1)
        assert len(outcome) == 1
        assert outcome[0].reason.message == message


@pytest.mark.parametrize(
    ("reason", "wire"),
    [
        (None, ABORTED),
        ("bye", '"bye"'),
        (ValueError("handler error"), '{"message":"handler error"},"_":1'),
        ({"code": 1}, '{"code":1}'),
        (wsw.ErrorPayload({"message": "payload"}, True), '{"message":"payload"},"_":1'),
    ],
)
async def test_handler_side_abort_on_the_wire(server, autojump_clock, reason, wire):
    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            await ch.abort(reason)
            assert ch.closed
            await ch.abort("twice")

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        assert await peer.receive() == f'{{"h":1,"x":{wire}}}'
        await peer.expect_silence(1)


async def test_inbound_abort_wakes_the_requestor_consumer_after_buffered_events(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_answer_with_channel, peer)
        ch = await client.request("chan")
        await peer.send('{"a":["a",1],"h":1}')
        await peer.send('{"a":["b",2],"h":1}')
        await peer.send('{"h":1,"x":{"message":"bye"},"_":1}')
        await trio.sleep(1)
        assert ch.closed
        got: list[Any] = []
        with pytest.raises(wsw.ChannelClosed) as info:
            async for item in ch:
                got.append(item)
        assert got == [("a", (1,)), ("b", (2,))]
        assert info.value.reason == wsw.ErrorPayload({"message": "bye"}, True)
        assert ch.close_reason.message == "bye"
        await peer.expect_silence(1)  # nothing is sent in reply to an abort
        await peer.send('{"h":1,"x":"again"}')  # abort of an unknown channel: ignored
        await peer.send('{"h":77,"x":null}')
        await peer.expect_silence(1)


async def test_inbound_abort_with_null_reason(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_answer_with_channel, peer)
        ch = await client.request("chan")
        await peer.send('{"h":1,"x":null}')
        await trio.sleep(1)
        assert ch.closed
        assert ch.close_reason == wsw.ErrorPayload(None)


@pytest.mark.parametrize("side", ["handler", "requestor"])
async def test_closed_channel_emit_and_request_raise_exact_texts(server, autojump_clock, side):
    errors: list[BaseException] = []

    async def check(ch: wsw.AnonymousChannel) -> None:
        with pytest.raises(wsw.ChannelClosed) as emit_info:
            await ch.emit("x")
        with pytest.raises(wsw.ChannelClosed) as request_info:
            await ch.request("x")
        errors.extend([emit_info.value, request_info.value])

    @server.on("chan")
    async def chan(abort: bool) -> None:
        async with wsw.open_channel() as ch:
            if abort:
                await ch.abort("stop")
        if side == "handler":
            await check(ch)

    async with open_test_client(server) as client:
        ch = await client.request("chan", side == "handler")
        if side == "requestor":
            await ch.aclose()
            await check(ch)
        await trio.sleep(1)
    assert [str(e) for e in errors] == [
        "Cannot emit on a closed channel",
        "Cannot send request on a closed channel",
    ]
    assert all(isinstance(e, wsw.WSWrapperError) for e in errors)


async def test_unknown_channel_fail_safe(server, autojump_clock):
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["ev",1],"h":12}')
        assert await peer.receive() == fail_safe(12)
        await peer.send('{"a":["req",1],"h":12,"i":3}')
        assert await peer.receive() == fail_safe(12)
        assert (
            await peer.receive() == '{"i":3,"e":{"message":"Anonymous channel \'12\' does not exist"},"_":1}'
        )
        await peer.send('{"a":["ev"],"h":"13","c":"ignored"}')
        assert await peer.receive() == fail_safe(13)
        for bad in ('{"a":["ev"],"h":0}', '{"a":["ev"],"h":"abc"}', '{"a":["ev"],"h":1.5,"i":4}'):
            await peer.send(bad)
        await peer.expect_silence(1)


async def test_requests_in_flight_survive_channel_closure(server, autojump_clock):
    release = trio.Event()

    @server.on("chan")
    def chan() -> wsw.AnonymousChannel:
        ch = wsw.channel()

        async def slow() -> str:
            await release.wait()
            return "still answered"

        ch.on("slow", slow)
        return ch

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send('{"a":["slow"],"h":1,"i":2}')
        await trio.sleep(1)
        await peer.send('{"h":1,"x":"closing"}')
        await trio.sleep(1)
        release.set()
        assert await peer.receive() == '{"i":2,"d":"still answered"}'


# -- buffering (§9.4) ---------------------------------------------------------------------------


async def test_early_events_are_buffered_on_the_requestor(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        got: list[Any] = []

        async def call() -> None:
            got.append(await client.request("chan"))

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["chan"],"i":1}'
        await peer.send('{"i":1,"h":1}')
        for n in range(5):
            await peer.send(f'{{"a":["n",{n}],"h":1}}')
        await trio.sleep(10)
        (ch,) = got
        assert [await ch.receive() for _ in range(5)] == [("n", (n,)) for n in range(5)]


async def test_early_events_are_buffered_on_the_handler_side(server, autojump_clock):
    got: list[Any] = []

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            await trio.sleep(10)
            async for item in ch:
                got.append(item)
                if len(got) == 3:
                    break

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        for n in range(3):
            await peer.send(f'{{"a":["n",{n}],"h":1}}')
        await trio.sleep(20)
        assert got == [("n", (n,)) for n in range(3)]


async def test_buffer_overflow_on_the_handler_side(autojump_clock):
    server = wsw.Server(heartbeat_interval=None, channel_buffer_size=2)
    got: list[Any] = []
    go = trio.Event()

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            await go.wait()
            try:
                async for item in ch:
                    got.append(item)
            except wsw.ChannelClosed as exc:
                got.append(exc)

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        for n in range(3):
            await peer.send(f'{{"a":["n",{n}],"h":1}}')
        assert await peer.receive() == overflow(1)
        await peer.expect_silence(1)
        await peer.send('{"a":["n",3],"h":1}')
        assert await peer.receive() == fail_safe(1)
        go.set()
        await trio.sleep(1)
        assert got[:2] == [("n", (0,)), ("n", (1,))]
        closed = got[2]
        assert isinstance(closed, wsw.ChannelClosed)
        assert closed.reason.message == "Anonymous channel '1' buffer overflow; consumer is too slow"
        assert len(got) == 3


async def test_buffer_overflow_on_the_requestor(raw_server, autojump_clock):
    options = wsw.Options(limits=wsw.Limits(channel_buffer_size=2))
    async with raw_server(options=options) as (client, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_answer_with_channel, peer)
        ch = await client.request("chan")
        handled: list[Any] = []
        ch.on("handled", handled.append)  # events with a handler do not fill the buffer
        for n in range(5):
            await peer.send(f'{{"a":["handled",{n}],"h":1}}')
        await peer.send('{"a":["n",0],"h":1}')
        await peer.send('{"a":["n",1],"h":1}')
        await peer.expect_silence(1)
        await peer.send('{"a":["n",2],"h":1}')
        assert await peer.receive() == overflow(1)
        assert await ch.receive() == ("n", (0,))
        assert await ch.receive() == ("n", (1,))
        with pytest.raises(wsw.ChannelClosed) as info:
            await ch.receive()
        assert info.value.reason.message == "Anonymous channel '1' buffer overflow; consumer is too slow"
        assert handled == [0, 1, 2, 3, 4]


# -- collision guard (§9.5) ---------------------------------------------------------------------


async def test_collision_with_a_registered_channel(server, autojump_clock):
    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel():
            await trio.sleep_forever()

    @server.on("ret")
    def ret() -> wsw.AnonymousChannel:
        return wsw.channel()

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        exists = '{"i":1,"e":{"message":"Anonymous channel \'1\' already exists"},"_":1}'
        await peer.send('{"a":["chan"],"i":1}')  # request 1 is finished, so the id is free
        assert await peer.receive() == exists
        await peer.send('{"a":["ret"],"i":1}')
        assert await peer.receive() == exists
        await peer.expect_silence(1)
        assert server.statistics().open_channels == 1


async def test_collision_with_our_pending_request_id(server, autojump_clock):
    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("question")

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel():
            await trio.sleep_forever()

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["ask"],"i":9}')
        assert await peer.receive() == '{"a":["question"],"i":1}'
        await peer.send('{"a":["chan"],"i":1}')
        assert (
            await peer.receive() == '{"i":1,"e":{"message":"Anonymous channel \'1\' already exists"},"_":1}'
        )
        await peer.expect_silence(1)
        await peer.send('{"i":1,"d":"answer"}')
        assert await peer.receive() == '{"i":9,"d":"answer"}'


async def test_collision_with_a_channel_we_requested(raw_server, autojump_clock):
    client = wsw.Client()

    @client.on("chan")
    def chan() -> wsw.AnonymousChannel:
        return wsw.channel()

    async with raw_server(client) as (client, peer), trio.open_nursery() as nursery:
        got: list[Any] = []

        async def call() -> None:
            got.append(await client.request("mine"))

        nursery.start_soon(call)
        assert await peer.receive() == '{"a":["mine"],"i":1}'
        await peer.send('{"i":1,"h":1}')
        await trio.sleep(1)
        await peer.send('{"a":["chan"],"i":1}')
        assert (
            await peer.receive() == '{"i":1,"e":{"message":"Anonymous channel \'1\' already exists"},"_":1}'
        )
        assert not got[0].closed


# -- stale creation (§9.7) ----------------------------------------------------------------------


async def test_stale_creation(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        # 1: cancelled by us; 2: already answered; 3: a live channel
        with trio.move_on_after(1):
            await client.request("q")
        assert await peer.receive() == '{"a":["q"],"i":1}'
        assert await peer.receive() == f'{{"i":1,"x":{ABORTED}}}'
        results: list[Any] = []

        async def call(name: str) -> None:
            results.append(await client.request(name))

        nursery.start_soon(call, "answered")
        assert await peer.receive() == '{"a":["answered"],"i":2}'
        await peer.send('{"i":2,"d":2}')
        nursery.start_soon(call, "chan")
        assert await peer.receive() == '{"a":["chan"],"i":3}'
        await peer.send('{"i":3,"h":1}')
        await trio.sleep(1)

        await peer.send('{"i":1,"h":1}')
        assert await peer.receive() == f'{{"h":1,"x":{ABORTED}}}'
        await peer.send('{"i":2,"h":"2"}')
        assert await peer.receive() == f'{{"h":2,"x":{ABORTED}}}'
        # a registered channel key, ids we never allocated, invalid ids: ignored
        for frame in (
            '{"i":3,"h":1}',
            '{"i":4,"h":1}',
            '{"i":99,"h":1}',
            '{"i":-1,"h":1}',
            '{"i":0,"h":1}',
            '{"i":1.5,"h":1}',
            '{"i":"1","h":1}',
        ):
            await peer.send(frame)
        await peer.expect_silence(1)
        ch = results[1]
        assert isinstance(ch, wsw.AnonymousChannel)
        assert not ch.closed
        assert client.statistics().open_channels == 1


# -- nesting (§9.1) ----------------------------------------------------------------------------


async def test_nested_channels_on_the_wire(server, autojump_clock):
    @server.on("outer")
    async def outer() -> None:
        async with wsw.open_channel() as ch:

            @ch.on("inner")
            async def inner() -> None:
                async with wsw.open_channel() as nested:
                    await nested.emit("deep", nested.id)

            await ch.emit("outer ready")
            await trio.sleep_forever()

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["outer"],"i":5}')
        assert await peer.receive() == '{"i":5,"h":1}'
        assert await peer.receive() == '{"a":["outer ready"],"h":5}'
        await peer.send('{"a":["inner"],"h":5,"i":6}')
        assert await peer.receive() == '{"i":6,"h":1}'
        assert await peer.receive() == '{"a":["deep",6],"h":6}'
        await peer.send('{"a":["ping"],"h":6}')  # the nested channel closed on exit
        assert await peer.receive() == fail_safe(6)
        await peer.send('{"a":["ping"],"h":5,"i":7}')  # the outer one is still open
        assert (
            await peer.receive()
            == '{"i":7,"e":{"message":"No event listener for \'ping\' on channel \'5\'"},"_":1}'
        )


async def test_nested_channels_end_to_end(server, autojump_clock):
    @server.on("outer")
    def outer() -> wsw.AnonymousChannel:
        ch = wsw.channel()

        @ch.on("inner")
        def inner(n: int) -> wsw.AnonymousChannel:
            nested = wsw.channel()
            nested.on("times", lambda m: n * m)
            return nested

        return ch

    async with open_test_client(server) as client:
        outer_ch = await client.request("outer")
        inner_ch = await outer_ch.request("inner", 6)
        assert isinstance(inner_ch, wsw.AnonymousChannel)
        assert (outer_ch.id, inner_ch.id) == (1, 2)
        assert await inner_ch.request("times", 7) == 42
        assert await outer_ch.request("inner", 2) is not None
        await inner_ch.abort()
        assert not outer_ch.closed


# -- connection end (§12.3) ---------------------------------------------------------------------


async def test_connection_end_closes_all_channels_and_wakes_consumers(server, autojump_clock):
    handler_saw: list[Any] = []

    @server.on("chan")
    async def chan() -> None:
        try:
            async with wsw.open_channel() as ch:
                async for _ in ch:
                    pass
        except BaseException as exc:
            handler_saw.append(type(exc))
            raise

    woke: list[Any] = []

    async def consume(ch: wsw.AnonymousChannel) -> None:
        try:
            async for _ in ch:
                pass
        except wsw.ChannelClosed as exc:
            woke.append((trio.current_time(), exc))

    async with trio.open_nursery() as nursery:
        async with open_test_client(server) as client:
            channels = [await client.request("chan") for _ in range(2)]
            for ch in channels:
                nursery.start_soon(consume, ch)
            await trio.sleep(1)
            assert server.statistics().open_channels == 2
            assert client.statistics().open_channels == 2
        # leaving the block closed the connection
        await trio.sleep(1)
    assert len(woke) == 2
    assert all(t < 10 for t, _ in woke)
    assert all(exc.reason is not None for _, exc in woke)
    assert all(ch.closed for ch in channels)
    assert handler_saw and all(issubclass(t, BaseException) for t in handler_saw)
    with pytest.raises(wsw.ChannelClosed, match=r"^Cannot emit on a closed channel$"):
        await channels[0].emit("x")
    with pytest.raises(wsw.ChannelClosed, match=r"^Cannot send request on a closed channel$"):
        await channels[0].request("x")
    assert server.statistics().open_channels == 0


async def test_peer_drop_closes_handler_channels(server, autojump_clock):
    """§12.3 order: active handlers are cancelled first, then every channel is closed."""
    finished: list[Any] = []
    channels: list[wsw.AnonymousChannel] = []

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            channels.append(ch)
            try:
                await ch.receive()
            except BaseException as exc:
                finished.append(type(exc))
                raise

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        peer.transport.abort()
        await trio.sleep(1)
    assert finished == [trio.Cancelled]
    assert channels[0].closed
    assert channels[0].close_reason is not None
    assert server.statistics().open_channels == 0


# -- races (§8.3) -------------------------------------------------------------------------------


async def test_inbound_cancel_before_announcement_means_no_announcement(server, autojump_clock):
    release = trio.Event()
    errors: list[Any] = []

    @server.on("chan")
    async def chan() -> None:
        with trio.CancelScope(shield=True):
            await release.wait()
        try:
            async with wsw.open_channel():
                errors.append("opened")
        except wsw.WSWrapperError as exc:
            errors.append(exc)
            raise

    @server.on("ret")
    async def ret() -> wsw.AnonymousChannel:
        ch = wsw.channel()
        with trio.CancelScope(shield=True):
            await release.wait()
        return ch

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        await peer.send('{"a":["ret"],"i":2}')
        await trio.sleep(1)
        await peer.send(f'{{"i":1,"x":{ABORTED}}}')
        await peer.send(f'{{"i":2,"x":{ABORTED}}}')
        await trio.sleep(1)
        release.set()
        await peer.expect_silence(2)
        assert len(errors) == 1
        assert isinstance(errors[0], wsw.WSWrapperError)
        assert server.statistics().open_channels == 0
        await peer.send('{"a":["ev"],"h":1}')
        assert await peer.receive() == fail_safe(1)


async def test_announcement_before_inbound_cancel_keeps_the_channel(server, autojump_clock):
    ticks: list[int] = []

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel() as ch:
            ch.on("ping", lambda: "pong")
            for n in range(3):
                await trio.sleep(1)
                ticks.append(n)
                await ch.emit("tick", n)
            await trio.sleep_forever()

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.send(f'{{"i":1,"x":{ABORTED}}}')
        for n in range(3):
            assert await peer.receive() == f'{{"a":["tick",{n}],"h":1}}'
        await peer.send('{"a":["ping"],"h":1,"i":2}')
        assert await peer.receive() == '{"i":2,"d":"pong"}'
        assert ticks == [0, 1, 2]
        assert server.statistics().open_channels == 1


async def test_announce_and_cancel_in_the_same_tick(server, autojump_clock):
    """Whatever wins, the outcome is consistent: either a live channel or nothing at all."""
    release = trio.Event()

    @server.on("chan")
    async def chan() -> None:
        await release.wait()
        async with wsw.open_channel() as ch:
            ch.on("ping", lambda: "pong")
            await trio.sleep_forever()

    async with open_raw_peer(server) as peer:
        for rid in range(1, 11):
            release = trio.Event()
            await peer.send(f'{{"a":["chan"],"i":{rid}}}')
            await trio.sleep(1)
            release.set()
            await peer.send(f'{{"i":{rid},"x":{ABORTED}}}')
            await trio.sleep(1)
            announced = False
            with trio.move_on_after(1):
                assert await peer.receive() == f'{{"i":{rid},"h":1}}'
                announced = True
            await peer.send(f'{{"a":["ping"],"h":{rid},"i":{rid + 100}}}')
            if announced:
                assert await peer.receive() == f'{{"i":{rid + 100},"d":"pong"}}'
            else:
                assert await peer.receive() == fail_safe(rid)
                assert await peer.receive() == does_not_exist(rid + 100, rid)


async def test_a_request_opens_at_most_one_channel(server, autojump_clock):
    errors: list[BaseException] = []

    @server.on("chan")
    async def chan() -> None:
        async with wsw.open_channel():
            try:
                async with wsw.open_channel():
                    pass
            except wsw.ProtocolError as exc:
                errors.append(exc)

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["chan"],"i":1}')
        assert await peer.receive() == '{"i":1,"h":1}'
        await peer.expect_silence(1)
        assert len(errors) == 1


async def test_our_request_on_a_channel_survives_its_closure(raw_server, autojump_clock):
    async with raw_server() as (client, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_answer_with_channel, peer)
        ch = await client.request("chan")
        result: list[Any] = []

        async def ask() -> None:
            result.append(await ch.request("slow"))

        nursery.start_soon(ask)
        assert await peer.receive() == '{"a":["slow"],"h":1,"i":2}'
        await peer.send('{"h":1,"x":"closing"}')
        await trio.sleep(1)
        assert ch.closed
        await peer.send('{"i":2,"d":"answered anyway"}')
        await trio.sleep(1)
        assert result == ["answered anyway"]
        await peer.expect_silence(1)


bound_tests(globals())
