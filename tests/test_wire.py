"""Server-side wire tests: exact frames in, exact frames out (PROTOCOL.md §3, §5-§8, §12, §14).

Every test talks to a real :class:`Server` through ``open_raw_peer``, which sends and receives
frames byte for byte. Expected frames are compared as exact text (the key order of §1.1), and
``expect_silence`` asserts that nothing was sent where the protocol demands silence.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import trio_wswrapper as wsw
from trio_wswrapper.testing import RawPeer, open_raw_peer

# Everything here runs in memory, so every test takes ``autojump_clock``: silences, timeouts and
# slow handlers cost no real time and the tests are deterministic.


def frame(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def rejection(rid: int, message: str) -> str:
    return f'{{"i":{rid},"e":{json.dumps({"message": message}, separators=(",", ":"))},"_":1}}'


def fail_safe(h: int) -> str:
    return f'{{"h":{h},"x":{{"message":"Anonymous channel \'{h}\' does not exist"}},"_":1}}'


def encoder_error(value: Any) -> str:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return str(exc)
    raise AssertionError(f"{value!r} is encodable")


async def roundtrip(peer: RawPeer, sent: dict[str, Any] | str, expected: str) -> None:
    await peer.send(sent)
    assert await peer.receive() == expected


async def assert_alive(peer: RawPeer, rid: int = 999) -> None:
    """The connection still answers, and nothing else was queued before the answer."""
    await roundtrip(peer, {"a": ["echo", "alive"], "i": rid}, f'{{"i":{rid},"d":"alive"}}')


@pytest.fixture
def echo_server(server: wsw.Server) -> wsw.Server:
    server.on("echo", lambda x: x)
    return server


# ---------------------------------------------------------------------------------------------
# §3.2 step 2 / §5: reserved names


RESERVED = ["open", "connect", "message", "error", "close", "disconnect"]


async def test_reserved_names_on_root_are_ignored(autojump_clock: MockClock, echo_server: wsw.Server) -> None:
    calls: list[str] = []
    raw: list[str | bytes] = []
    for event in ["open", "connect", "error", "close", "disconnect"]:
        echo_server.on(event, lambda *args, _e=event: calls.append(_e))
    echo_server.on("message", lambda client, payload: raw.append(payload))
    sent = [frame({"a": [name, "x"], **extra}) for name in RESERVED for extra in ({"i": 1}, {})]
    async with open_raw_peer(echo_server) as peer:
        await trio.testing.wait_all_tasks_blocked()
        assert calls == ["open", "connect"]
        for text in sent:
            await peer.send(text)
        await peer.expect_silence()
        await assert_alive(peer)
        assert calls == ["open", "connect"]
    # the message hook saw the raw payloads; that is not a dispatch of the name
    assert raw == [*sent, '{"a":["echo","alive"],"i":999}']
    assert calls == ["open", "connect", "close", "disconnect"]


async def test_reserved_name_with_null_channel_is_root(
    autojump_clock: MockClock, echo_server: wsw.Server
) -> None:
    async with open_raw_peer(echo_server) as peer:
        await peer.send({"a": ["open"], "c": None, "i": 1})
        await peer.send({"a": ["close"], "h": None, "i": 2})
        await peer.expect_silence()
        await assert_alive(peer)


@pytest.mark.parametrize("name", RESERVED)
async def test_reserved_names_dispatched_on_named_channels(
    autojump_clock: MockClock, server: wsw.Server, name: str
) -> None:
    server.of("chat").on(name, lambda x: f"{name}:{x}")
    async with open_raw_peer(server) as peer:
        await roundtrip(peer, {"a": [name, "hi"], "c": "chat", "i": 1}, f'{{"i":1,"d":"{name}:hi"}}')


async def test_reserved_names_do_not_answer_pending_requests(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    """A reserved-name frame carrying our pending id is a request, never a response (§5)."""

    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("question")

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["ask"], "i": 1})
        assert await peer.receive() == '{"a":["question"],"i":1}'
        await peer.send({"a": ["close", "x"], "i": 1})
        await peer.expect_silence()
        await roundtrip(peer, {"i": 1, "d": 42}, '{"i":1,"d":42}')


# ---------------------------------------------------------------------------------------------
# §3.2 step 3: duplicate active id


async def test_duplicate_active_id_is_ignored_and_original_keeps_it(
    autojump_clock: MockClock, echo_server: wsw.Server
) -> None:
    release = trio.Event()
    ran: list[str] = []

    @echo_server.on("block")
    async def block(tag: str) -> str:
        ran.append(tag)
        await release.wait()
        return tag

    async with open_raw_peer(echo_server) as peer:
        await peer.send({"a": ["block", "first"], "i": 1})
        await trio.testing.wait_all_tasks_blocked()
        await peer.send({"a": ["block", "second"], "i": 1})
        await peer.send({"a": ["echo", "dup"], "i": 1})
        await peer.expect_silence()
        assert ran == ["first"]
        release.set()
        assert await peer.receive() == '{"i":1,"d":"first"}'
        await peer.expect_silence()
        # finished: the id is free again
        await roundtrip(peer, {"a": ["echo", "again"], "i": 1}, '{"i":1,"d":"again"}')


async def test_cancel_after_duplicate_cancels_the_original(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    cancelled = trio.Event()

    @server.on("block")
    async def block() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["block"], "i": 3})
        await peer.send({"a": ["block"], "i": 3})
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().running_handlers == 1
        await peer.send({"i": 3, "x": None})
        with trio.fail_after(1):
            await cancelled.wait()
        await peer.expect_silence()


# ---------------------------------------------------------------------------------------------
# §3.2 step 4: unknown anonymous channel


async def test_unknown_anonymous_channel_request_gets_fail_safe_then_rejection(
    autojump_clock: MockClock,
    echo_server: wsw.Server,
) -> None:
    async with open_raw_peer(echo_server) as peer:
        await peer.send({"a": ["echo", 1], "h": 5, "i": 3})
        assert await peer.receive() == fail_safe(5)
        assert await peer.receive() == rejection(3, "Anonymous channel '5' does not exist")
        await peer.expect_silence()


async def test_unknown_anonymous_channel_numeric_string_and_c_ignored(
    autojump_clock: MockClock, echo_server: wsw.Server
) -> None:
    echo_server.of("room").on("echo", lambda x: x)
    async with open_raw_peer(echo_server) as peer:
        await peer.send({"a": ["echo", 1], "h": "12", "c": "room", "i": 4})
        assert await peer.receive() == fail_safe(12)
        assert await peer.receive() == rejection(4, "Anonymous channel '12' does not exist")
        await peer.expect_silence()


async def test_unknown_anonymous_channel_event_gets_only_fail_safe(
    autojump_clock: MockClock, echo_server: wsw.Server
) -> None:
    async with open_raw_peer(echo_server) as peer:
        await peer.send({"a": ["echo", 1], "h": 7})
        assert await peer.receive() == fail_safe(7)
        await peer.expect_silence()
        await assert_alive(peer)


# ---------------------------------------------------------------------------------------------
# §3.2 step 5: unknown named channel


async def test_unknown_named_channel_request_rejected_event_dropped(
    autojump_clock: MockClock, echo_server: wsw.Server
) -> None:
    ran: list[Any] = []
    echo_server.on("ping", ran.append)
    async with open_raw_peer(echo_server) as peer:
        await roundtrip(
            peer, {"a": ["ping", 1], "c": "nope", "i": 1}, rejection(1, "Channel 'nope' does not exist")
        )
        await peer.send({"a": ["ping", 2], "c": "nope"})
        await peer.expect_silence()
        assert ran == []


@pytest.mark.parametrize(
    ("c", "text"),
    [
        ("", "Channel '' does not exist"),
        (5, "Channel '5' does not exist"),
        (True, "Channel 'true' does not exist"),
        (False, "Channel 'false' does not exist"),
        (["room"], """Channel '["room"]' does not exist"""),
        ({"k": 1}, """Channel '{"k":1}' does not exist"""),
        ("Room", "Channel 'Room' does not exist"),
    ],
)
async def test_unknown_named_channel_texts(
    autojump_clock: MockClock, server: wsw.Server, c: Any, text: str
) -> None:
    # channels named "5" and "room" exist: non-string and differently-cased names never match them
    server.of("5").on("ping", lambda: "five")
    server.of("room").on("ping", lambda: "room")
    async with open_raw_peer(server) as peer:
        await roundtrip(peer, {"a": ["ping"], "c": c, "i": 1}, rejection(1, text))
        await peer.send({"a": ["ping"], "c": c})
        await peer.expect_silence()
        await roundtrip(peer, {"a": ["ping"], "c": "5", "i": 2}, '{"i":2,"d":"five"}')


# ---------------------------------------------------------------------------------------------
# §3.2 step 6 / §7.2: missing handlers and non-string names


@pytest.mark.parametrize(
    ("a", "text"),
    [
        (["nope"], "No event listener for 'nope'"),
        ([""], "No event listener for ''"),
        ([5], "No event listener for '5'"),
        ([None], "No event listener for 'null'"),
        ([True], "No event listener for 'true'"),
        ([["echo"]], """No event listener for '["echo"]'"""),
        ([{"n": "echo"}, 1], """No event listener for '{"n":"echo"}'"""),
        ([1.5], "No event listener for '1.5'"),
        (["Echo", 1], "No event listener for 'Echo'"),
    ],
)
async def test_no_listener_on_root(
    autojump_clock: MockClock, echo_server: wsw.Server, a: list[Any], text: str
) -> None:
    echo_server.on("5", lambda: "string five")
    async with open_raw_peer(echo_server) as peer:
        await roundtrip(peer, {"a": a, "i": 9}, rejection(9, text))
        await peer.send({"a": a})
        await peer.expect_silence()


@pytest.mark.parametrize(
    ("a", "text"),
    [
        (["nope"], "No event listener for 'nope' on channel 'room'"),
        ([5], "No event listener for '5' on channel 'room'"),
        (["echo"], "No event listener for 'echo' on channel 'room'"),
    ],
)
async def test_no_listener_on_named_channel(
    autojump_clock: MockClock, echo_server: wsw.Server, a: list[Any], text: str
) -> None:
    echo_server.of("room").on("5", lambda: "string five")
    async with open_raw_peer(echo_server) as peer:
        await roundtrip(peer, {"a": a, "c": "room", "i": 2}, rejection(2, text))
        await peer.send({"a": a, "c": "room"})
        await peer.expect_silence()


async def test_string_name_matches_its_handler(autojump_clock: MockClock, server: wsw.Server) -> None:
    server.on("5", lambda: "string five")
    async with open_raw_peer(server) as peer:
        await roundtrip(peer, {"a": ["5"], "i": 1}, '{"i":1,"d":"string five"}')


# ---------------------------------------------------------------------------------------------
# §3.2 step 7 / §13: concurrency limit


async def test_concurrency_limit_rejects_requests_and_drops_events(autojump_clock: MockClock) -> None:
    server = wsw.Server(max_concurrent_handlers=2, heartbeat_interval=None)
    release = trio.Event()
    counted: list[int] = []

    @server.on("block")
    async def block(tag: Any) -> Any:
        await release.wait()
        return tag

    server.on("count", counted.append)
    server.on("echo", lambda x: x)

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["block", 1], "i": 1})
        await peer.send({"a": ["block", "event"]})  # an event handler counts too
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().running_handlers == 2
        await roundtrip(peer, {"a": ["echo", 1], "i": 2}, rejection(2, "Too many concurrent requests"))
        await peer.send({"a": ["count", 1]})
        await peer.expect_silence()
        assert counted == []
        release.set()
        assert await peer.receive() == '{"i":1,"d":1}'
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().running_handlers == 0
        await peer.send({"a": ["count", 2]})
        await assert_alive(peer)
        assert counted == [2]


async def test_concurrency_limit_checked_after_handler_lookup(autojump_clock: MockClock) -> None:
    """Step 6 before step 7: a request without handler gets its own text even when full."""
    server = wsw.Server(max_concurrent_handlers=1, heartbeat_interval=None)
    server.on("block", trio.sleep_forever)
    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["block"], "i": 1})
        await roundtrip(peer, {"a": ["nope"], "i": 2}, rejection(2, "No event listener for 'nope'"))
        await roundtrip(
            peer, {"a": ["x"], "c": "none", "i": 3}, rejection(3, "Channel 'none' does not exist")
        )
        await roundtrip(peer, {"a": ["block"], "i": 4}, rejection(4, "Too many concurrent requests"))


async def test_rejected_once_handler_is_not_consumed(autojump_clock: MockClock) -> None:
    server = wsw.Server(max_concurrent_handlers=1, heartbeat_interval=None)
    release = trio.Event()
    server.on("block", release.wait)
    server.once("one", lambda: "once")
    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["block"], "i": 1})
        await roundtrip(peer, {"a": ["one"], "i": 2}, rejection(2, "Too many concurrent requests"))
        release.set()
        assert await peer.receive() == '{"i":1,"d":null}'
        await trio.testing.wait_all_tasks_blocked()
        await roundtrip(peer, {"a": ["one"], "i": 3}, '{"i":3,"d":"once"}')
        await roundtrip(peer, {"a": ["one"], "i": 4}, rejection(4, "No event listener for 'one'"))


# ---------------------------------------------------------------------------------------------
# §3.1 / §3.3: silently ignored input never changes state


GARBAGE: list[str | bytes] = [
    "",
    "not json",
    "{",
    "[1,2]",
    "5",
    "null",
    '"str"',
    "true",
    '{"a":["echo",1],"i":1,"ws-wrapper":false}',
    '{"a":["echo",1],"h":"abc","i":2}',
    '{"a":["echo",1],"h":0,"i":2}',
    '{"a":["echo",1],"h":1.5,"i":2}',
    '{"a":["echo",1],"h":true,"i":2}',
    '{"a":["echo",1],"h":"0","i":2}',
    '{"a":["echo",1],"h":[],"i":2}',
    '{"a":[],"i":3}',
    '{"a":"echo","i":3}',
    '{"a":{"0":"echo"},"i":3}',
    '{"a":null,"i":3}',
    '{"a":["echo",NaN],"i":4}',
    '{"a":["echo",Infinity],"i":4}',
    '{"a":["echo",-Infinity],"i":4}',
    '{"i":5,"x":"cancel of unknown id"}',
    '{"i":5,"x":null}',
    '{"h":5,"x":"abort of unknown channel"}',
    '{"i":5,"d":"answer to nothing"}',
    '{"i":5,"e":"rejection of nothing"}',
    '{"i":5}',
    '{"d":1}',
    '{"e":1}',
    '{"i":0,"d":1}',
    "{}",
    b"\xff\xfe\xfd",
    b'{"a":["echo",1],"i":6,"ws-wrapper":false}',
]


async def test_garbage_is_ignored_and_state_is_unchanged(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("question")

    server.on("echo", lambda x: x)
    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["ask"], "i": 9})
        assert await peer.receive() == '{"a":["question"],"i":1}'
        (client,) = server.clients
        before = client.statistics()
        assert (before.pending_requests, before.active_requests, before.running_handlers) == (1, 1, 1)
        for junk in GARBAGE:
            await peer.send(junk)
        # garbage that names our pending id 1 must not resolve it either
        for junk in [
            '{"i":1,"x":"not a response"}',
            '{"i":"1","d":"wrong"}',
            '{"i":1.0,"d":"wrong"}',
            '{"i":true,"d":"wrong"}',
            '{"i":1,"a":[],"d":"wrong"}',
            '{"i":1,"a":"x","d":"wrong"}',
            '{"i":1,"d":"wrong","ws-wrapper":false}',
            '{"i":1,"d":"wrong","h":"x"}',
        ]:
            await peer.send(junk)
        await peer.expect_silence()
        assert client.statistics() == before
        await roundtrip(peer, {"a": ["echo", "ok"], "i": 7}, '{"i":7,"d":"ok"}')
        await roundtrip(peer, {"i": 1, "d": "right"}, '{"i":9,"d":"right"}')
        await peer.expect_silence()
        after = client.statistics()
        assert (after.pending_requests, after.active_requests, after.open_channels) == (0, 0, 0)


@pytest.mark.parametrize("i", [0, -1, 1.5, 1.0, 1e3, "5", True, None, 2**53, [1]])
async def test_invalid_request_id_is_an_event(autojump_clock: MockClock, server: wsw.Server, i: Any) -> None:
    seen: list[Any] = []
    server.on("note", seen.append)
    async with open_raw_peer(server) as peer:
        await peer.send(frame({"a": ["note", "x"], "i": i}))
        await peer.expect_silence()
        assert seen == ["x"]


async def test_largest_valid_id_is_a_request(autojump_clock: MockClock, echo_server: wsw.Server) -> None:
    async with open_raw_peer(echo_server) as peer:
        big = 2**53 - 1
        await roundtrip(peer, f'{{"a":["echo",1],"i":{big}}}', f'{{"i":{big},"d":1}}')


@pytest.mark.parametrize("marker", ["0", "null", "true", '""', "1"])
async def test_ws_wrapper_other_than_false_is_processed(
    autojump_clock: MockClock, echo_server: wsw.Server, marker: str
) -> None:
    async with open_raw_peer(echo_server) as peer:
        await roundtrip(peer, f'{{"a":["echo",1],"i":1,"ws-wrapper":{marker}}}', '{"i":1,"d":1}')


async def test_input_tolerances(autojump_clock: MockClock, echo_server: wsw.Server) -> None:
    """Whitespace around JSON, duplicate keys (last wins), extra keys (§1.2)."""
    async with open_raw_peer(echo_server) as peer:
        await roundtrip(peer, ' {"a":["echo",1],"i":1}\n', '{"i":1,"d":1}')
        await roundtrip(peer, '{"a":["echo",1],"a":["echo",2],"i":2}', '{"i":2,"d":2}')
        await roundtrip(peer, '{"a":["echo",3],"i":3,"zzz":{"q":1},"e":"ignored"}', '{"i":3,"d":3}')
        await roundtrip(peer, '{"a":["echo","\\ud83d"],"i":4}', '{"i":4,"d":"\\ud83d"}')


async def test_binary_frames_are_accepted(autojump_clock: MockClock, echo_server: wsw.Server) -> None:
    async with open_raw_peer(echo_server) as peer:
        await roundtrip(peer, b'{"a":["echo","bin"],"i":1}', '{"i":1,"d":"bin"}')
        await roundtrip(peer, '{"a":["echo","\u00e9"],"i":2}'.encode(), '{"i":2,"d":"\\u00e9"}')
        await peer.send(b'{"a":["echo","\xff"],"i":3}')
        await peer.expect_silence()
        await assert_alive(peer)


# ---------------------------------------------------------------------------------------------
# §6.1 / §6.2 / §6.5: answers


class Unencodable:
    pass


NAN_TEXT = encoder_error(float("nan"))
INF_TEXT = encoder_error(float("inf"))
OBJECT_TEXT = encoder_error(object())


def _raise(exc: BaseException) -> Any:
    raise exc


ANSWERS: list[tuple[str, Any, str]] = [
    ("none", lambda: None, '{"i":1,"d":null}'),
    ("zero", lambda: 0, '{"i":1,"d":0}'),
    ("false", lambda: False, '{"i":1,"d":false}'),
    ("empty string", lambda: "", '{"i":1,"d":""}'),
    ("empty list", list, '{"i":1,"d":[]}'),
    ("empty dict", dict, '{"i":1,"d":{}}'),
    ("tuple", lambda: (1, "a"), '{"i":1,"d":[1,"a"]}'),
    ("nested", lambda: {"k": [1, None, True]}, '{"i":1,"d":{"k":[1,null,true]}}'),
    ("non-ascii", lambda: "é☃", '{"i":1,"d":"\\u00e9\\u2603"}'),
    ("lone surrogate", lambda: "\ud800", '{"i":1,"d":"\\ud800"}'),
    ("big int", lambda: 2**60 + 1, '{"i":1,"d":1152921504606846977}'),
    ("object", object, rejection(1, OBJECT_TEXT)),
    ("custom object", Unencodable, rejection(1, encoder_error(Unencodable()))),
    ("nan", lambda: float("nan"), rejection(1, NAN_TEXT)),
    ("inf", lambda: float("inf"), rejection(1, INF_TEXT)),
    ("nested nan", lambda: {"v": [float("-inf")]}, rejection(1, encoder_error(float("-inf")))),
    ("exception", lambda: _raise(ValueError("boom")), '{"i":1,"e":{"message":"boom"},"_":1}'),
    ("empty exception", lambda: _raise(ValueError()), '{"i":1,"e":{"message":"ValueError"},"_":1}'),
    (
        "empty-string exception",
        lambda: _raise(RuntimeError("")),
        '{"i":1,"e":{"message":"RuntimeError"},"_":1}',
    ),
    ("key error", lambda: _raise(KeyError("k")), '{"i":1,"e":{"message":"\'k\'"},"_":1}'),
    ("remote string", lambda: _raise(wsw.RemoteError("x")), '{"i":1,"e":"x"}'),
    ("remote none", lambda: _raise(wsw.RemoteError(None)), '{"i":1,"e":{"message":"Error"},"_":1}'),
    ("remote default", lambda: _raise(wsw.RemoteError()), '{"i":1,"e":{"message":"Error"},"_":1}'),
    ("remote object", lambda: _raise(wsw.RemoteError({"code": 1})), '{"i":1,"e":{"code":1}}'),
    ("remote zero", lambda: _raise(wsw.RemoteError(0)), '{"i":1,"e":0}'),
    ("remote false", lambda: _raise(wsw.RemoteError(False)), '{"i":1,"e":false}'),
    ("remote list", lambda: _raise(wsw.RemoteError([1, 2])), '{"i":1,"e":[1,2]}'),
    (
        "remote error object",
        lambda: _raise(wsw.RemoteError({"message": "m", "code": 2}, is_error=True)),
        '{"i":1,"e":{"message":"m","code":2},"_":1}',
    ),
    ("remote unencodable", lambda: _raise(wsw.RemoteError(object())), rejection(1, OBJECT_TEXT)),
    ("remote nan", lambda: _raise(wsw.RemoteError(float("nan"))), rejection(1, NAN_TEXT)),
]


@pytest.mark.parametrize(("fn", "expected"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
async def test_sync_handler_answers(
    autojump_clock: MockClock, server: wsw.Server, fn: Any, expected: str
) -> None:
    server.on("it", fn)
    async with open_raw_peer(server) as peer:
        await roundtrip(peer, {"a": ["it"], "i": 1}, expected)
        await peer.expect_silence()


@pytest.mark.parametrize(("fn", "expected"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
async def test_async_handler_answers(
    autojump_clock: MockClock, server: wsw.Server, fn: Any, expected: str
) -> None:
    @server.on("it")
    async def handler() -> Any:
        await trio.sleep(0.01)
        return fn()

    async with open_raw_peer(server) as peer:
        await roundtrip(peer, {"a": ["it"], "i": 1}, expected)
        await peer.expect_silence()


async def test_handler_arguments_are_positional_and_null_is_none(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    server.on("args", lambda *args: [repr(a) for a in args])
    async with open_raw_peer(server) as peer:
        await roundtrip(
            peer,
            '{"a":["args",null,1,"s",[1],{"k":null},true,1.5],"i":1}',
            """{"i":1,"d":["None","1","'s'","[1]","{'k': None}","True","1.5"]}""",
        )


async def test_error_to_json_hook(autojump_clock: MockClock) -> None:
    def to_json(exc: BaseException) -> Any:
        if isinstance(exc, KeyError):
            raise RuntimeError("hook failed")
        if isinstance(exc, LookupError):
            return {"message": 5}
        if isinstance(exc, TypeError):
            return "not a dict"
        if isinstance(exc, ArithmeticError):
            return {"message": "nan", "v": float("nan")}
        return {"message": f"custom {exc}", "name": type(exc).__name__}

    server = wsw.Server(heartbeat_interval=None, error_to_json=to_json)
    server.on(
        "fail",
        lambda kind: _raise(
            {"v": ValueError, "k": KeyError, "i": IndexError, "t": TypeError, "z": ZeroDivisionError}[kind](
                "x"
            )
        ),
    )
    server.on("remote", lambda: _raise(wsw.RemoteError("raw")))
    async with open_raw_peer(server) as peer:
        await roundtrip(
            peer, {"a": ["fail", "v"], "i": 1}, '{"i":1,"e":{"message":"custom x","name":"ValueError"},"_":1}'
        )
        # hook raises, returns no string message, a non-dict or an unencodable dict: default object
        await roundtrip(peer, {"a": ["fail", "k"], "i": 2}, """{"i":2,"e":{"message":"'x'"},"_":1}""")
        await roundtrip(peer, {"a": ["fail", "i"], "i": 3}, '{"i":3,"e":{"message":"x"},"_":1}')
        await roundtrip(peer, {"a": ["fail", "t"], "i": 4}, '{"i":4,"e":{"message":"x"},"_":1}')
        await roundtrip(peer, {"a": ["fail", "z"], "i": 5}, '{"i":5,"e":{"message":"x"},"_":1}')
        # raw rejections bypass the hook
        await roundtrip(peer, {"a": ["remote"], "i": 6}, '{"i":6,"e":"raw"}')


async def test_error_flag_true(autojump_clock: MockClock) -> None:
    server = wsw.Server(heartbeat_interval=None, error_flag=True)
    server.on("fail", lambda: _raise(ValueError("boom")))
    server.on("raw", lambda: _raise(wsw.RemoteError("raw")))
    server.on("none", lambda: _raise(wsw.RemoteError(None)))
    server.on("nan", lambda: float("nan"))
    async with open_raw_peer(server) as peer:
        await roundtrip(peer, {"a": ["fail"], "i": 1}, '{"i":1,"e":{"message":"boom"},"_":true}')
        await roundtrip(peer, {"a": ["raw"], "i": 2}, '{"i":2,"e":"raw"}')
        await roundtrip(peer, {"a": ["none"], "i": 3}, '{"i":3,"e":{"message":"Error"},"_":true}')
        await roundtrip(
            peer, {"a": ["nope"], "i": 4}, '{"i":4,"e":{"message":"No event listener for \'nope\'"},"_":true}'
        )
        await roundtrip(peer, {"a": ["nan"], "i": 5}, f'{{"i":5,"e":{{"message":"{NAN_TEXT}"}},"_":true}}')
        await peer.send({"a": ["x"], "h": 4, "i": 6})
        assert (
            await peer.receive()
            == """{"h":4,"x":{"message":"Anonymous channel '4' does not exist"},"_":true}"""
        )
        assert (
            await peer.receive()
            == """{"i":6,"e":{"message":"Anonymous channel '4' does not exist"},"_":true}"""
        )


@pytest.mark.parametrize(
    ("answer", "forwarded"),
    [
        ('{"i":1,"e":{"message":"deep","code":7},"_":1}', '{"i":9,"e":{"message":"deep","code":7},"_":1}'),
        ('{"i":1,"e":{"message":"go"},"_":true}', '{"i":9,"e":{"message":"go"},"_":1}'),
        ('{"i":1,"e":"str"}', '{"i":9,"e":"str"}'),
        ('{"i":1,"e":{"code":401}}', '{"i":9,"e":{"code":401}}'),
        ('{"i":1,"e":[1],"_":1}', '{"i":9,"e":[1]}'),
        ('{"i":1,"e":0,"_":1}', '{"i":9,"e":0}'),
        ('{"i":1,"e":null}', '{"i":9,"e":{"message":"Error"},"_":1}'),
        ('{"i":1,"e":{"message":"m"},"_":0}', '{"i":9,"e":{"message":"m"}}'),
    ],
)
async def test_forwarded_remote_error_keeps_e_and_flag(
    autojump_clock: MockClock, server: wsw.Server, answer: str, forwarded: str
) -> None:
    @server.on("proxy")
    async def proxy() -> Any:
        return await wsw.current_client().request("inner")

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["proxy"], "i": 9})
        assert await peer.receive() == '{"a":["inner"],"i":1}'
        await roundtrip(peer, answer, forwarded)
        await peer.expect_silence()


@pytest.mark.parametrize(
    ("answer", "resolved"),
    [
        ('{"i":1,"d":{"v":1}}', '{"i":9,"d":{"v":1}}'),
        ('{"i":1}', '{"i":9,"d":null}'),
        ('{"i":1,"d":null}', '{"i":9,"d":null}'),
        ('{"i":1,"d":0,"c":"room"}', '{"i":9,"d":0}'),
    ],
)
async def test_resolutions_from_peer(
    autojump_clock: MockClock, server: wsw.Server, answer: str, resolved: str
) -> None:
    @server.on("proxy")
    async def proxy() -> Any:
        return await wsw.current_client().request("inner")

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["proxy"], "i": 9})
        assert await peer.receive() == '{"a":["inner"],"i":1}'
        await roundtrip(peer, answer, resolved)
        # a duplicate answer for the same id is ignored
        await peer.send(answer)
        await peer.expect_silence()


# ---------------------------------------------------------------------------------------------
# §7.3 / §7.4: arity, failures, one answer per id


async def test_arity_mismatch_is_a_type_error_rejection(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    # Unannotated on purpose: §7.3 applies (typed handlers are in test_typed_args.py).
    def add(a, b):
        return a + b

    async def add_async(a, b):
        return a + b

    def text(fn: Any, *args: Any) -> str:
        try:
            fn(*args)
        except TypeError as exc:
            return str(exc)
        raise AssertionError("no TypeError")

    server.on("add", add)
    server.on("add_async", add_async)
    async with open_raw_peer(server) as peer:
        await roundtrip(peer, {"a": ["add", 1, 2, 3], "i": 1}, rejection(1, text(add, 1, 2, 3)))
        await roundtrip(peer, {"a": ["add", 1], "i": 2}, rejection(2, text(add, 1)))
        await roundtrip(peer, {"a": ["add_async"], "i": 3}, rejection(3, text(add_async)))
        await roundtrip(peer, {"a": ["add", 1, "x"], "i": 4}, rejection(4, text(add, 1, "x")))
        await roundtrip(peer, {"a": ["add", 1, 2], "i": 5}, '{"i":5,"d":3}')
        await roundtrip(peer, {"a": ["add_async", 2, 3], "i": 6}, '{"i":6,"d":5}')
    assert text(add, 1, 2, 3).endswith(".<locals>.add() takes 2 positional arguments but 3 were given")


async def test_event_handler_failure_is_logged_and_connection_continues(
    autojump_clock: MockClock, echo_server: wsw.Server, caplog: pytest.LogCaptureFixture
) -> None:
    @echo_server.on("boom")
    def boom(x):  # unannotated: the arity error below is Python's TypeError (§7.3)
        raise ValueError(x)

    @echo_server.on("boom_async")
    async def boom_async(x: str) -> None:
        await trio.sleep(0)
        raise KeyError(x)

    echo_server.on("value", lambda: "discarded")

    async with open_raw_peer(echo_server) as peer:
        await peer.send({"a": ["boom", "sync!"]})
        await peer.send({"a": ["boom_async", "async!"]})
        await peer.send({"a": ["value"]})
        await peer.send({"a": ["echo", 1]})  # an event: its return value is discarded too
        await peer.send({"a": ["boom", 1, 2]})  # arity error in an event
        await peer.expect_silence()
        await assert_alive(peer)
        assert echo_server.clients[0].connected
    errors = [r.exc_info[1] for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert [type(e) for e in errors] == [ValueError, KeyError, TypeError]
    assert [errors[0].args, errors[1].args] == [("sync!",), ("async!",)]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "handler for event 'boom' failed",
        "handler for event 'boom_async' failed",
        "handler for event 'boom' failed",
    ]


async def test_request_handler_failure_does_not_affect_others(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    release = trio.Event()

    @server.on("slow")
    async def slow() -> str:
        await release.wait()
        return "slow done"

    @server.on("fail")
    async def fail() -> None:
        await trio.sleep(0)
        raise RuntimeError("failed")

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["slow"], "i": 1})
        await roundtrip(peer, {"a": ["fail"], "i": 2}, rejection(2, "failed"))
        release.set()
        assert await peer.receive() == '{"i":1,"d":"slow done"}'
        await peer.expect_silence()


async def test_exactly_one_answer_per_request(autojump_clock: MockClock, server: wsw.Server) -> None:
    """Only one of the server's and the connection's handlers runs, and answers once (§7.1, §7.4)."""
    ran: list[str] = []

    @server.on("open")
    def opened(client: wsw.Client) -> None:
        client.on("it", lambda: ran.append("client") or "client")

    server.on("it", lambda: ran.append("server") or "server")
    server.once("it", lambda: ran.append("server once") or "server once")
    async with open_raw_peer(server) as peer:
        await roundtrip(peer, {"a": ["it"], "i": 1}, '{"i":1,"d":"client"}')
        await peer.expect_silence()
    assert ran == ["client"]


async def test_answers_may_go_out_of_order(autojump_clock: MockClock, server: wsw.Server) -> None:
    @server.on("sleep")
    async def sleep(seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["sleep", 2], "i": 1})
        await peer.send({"a": ["sleep", 1], "i": 2})
        await peer.send({"a": ["sleep", 0], "i": 3})
        assert [await peer.receive() for _ in range(3)] == ['{"i":3,"d":0}', '{"i":2,"d":1}', '{"i":1,"d":2}']


# ---------------------------------------------------------------------------------------------
# §8.2: inbound cancellation


async def test_inbound_cancellation_of_running_handler(
    autojump_clock: MockClock, echo_server: wsw.Server
) -> None:
    seen: list[str] = []
    done = trio.Event()

    @echo_server.on("block")
    async def block() -> str:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            seen.append("cancelled")
            raise
        finally:
            done.set()
        return "never"  # pragma: no cover

    async with open_raw_peer(echo_server) as peer:
        await peer.send({"a": ["block"], "i": 1})
        await trio.testing.wait_all_tasks_blocked()
        assert echo_server.statistics().active_requests == 1
        await peer.send({"i": 1, "x": "user cancelled"})
        with trio.fail_after(1):
            await done.wait()
        assert seen == ["cancelled"]
        await peer.expect_silence()
        await peer.send({"i": 1, "x": {"message": "again"}, "_": 1})
        await peer.expect_silence()
        stats = echo_server.statistics()
        assert (stats.active_requests, stats.running_handlers) == (0, 0)
        await assert_alive(peer, 2)


@pytest.mark.parametrize("outcome", ["return", "raise", "remote"])
async def test_cancelled_handler_sends_nothing_whatever_it_does(
    autojump_clock: MockClock, server: wsw.Server, outcome: str
) -> None:
    finished = trio.Event()

    @server.on("stubborn")
    async def stubborn() -> str:
        try:
            with trio.CancelScope(shield=True):
                await trio.sleep(5)
            await trio.sleep_forever()
        except trio.Cancelled:
            pass
        finally:
            finished.set()
        if outcome == "raise":
            raise ValueError("after cancel")
        if outcome == "remote":
            raise wsw.RemoteError("after cancel")
        return "late"

    server.on("echo", lambda x: x)
    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["stubborn"], "i": 1})
        await trio.testing.wait_all_tasks_blocked()
        await peer.send({"i": 1, "x": None})
        with trio.fail_after(10):
            await finished.wait()
        await peer.expect_silence(1)
        await assert_alive(peer, 2)


async def test_cancellation_after_answer_is_ignored(
    autojump_clock: MockClock, echo_server: wsw.Server
) -> None:
    async with open_raw_peer(echo_server) as peer:
        await roundtrip(peer, {"a": ["echo", 1], "i": 1}, '{"i":1,"d":1}')
        await peer.send({"i": 1, "x": None})
        await peer.expect_silence()
        await assert_alive(peer, 2)


async def test_cancellation_for_unknown_id_does_not_touch_pending_outbound(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("question")

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["ask"], "i": 7})
        assert await peer.receive() == '{"a":["question"],"i":1}'
        (client,) = server.clients
        # id 1 is *our* pending request, not an active inbound one
        await peer.send({"i": 1, "x": None})
        await peer.send({"i": 1, "x": "stop"})
        await peer.send({"i": 12345, "x": "stop"})
        await peer.expect_silence()
        stats = client.statistics()
        assert (stats.pending_requests, stats.active_requests) == (1, 1)
        await roundtrip(peer, {"i": 1, "d": "answer"}, '{"i":7,"d":"answer"}')


async def test_cancellation_uses_only_the_inbound_table(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    """Same number in both tables: the peer's ``x`` cancels the inbound handler only (§4)."""
    cancelled = trio.Event()
    asked: list[Any] = []

    @server.on("ask")
    async def ask() -> Any:
        asked.append(await wsw.current_client().request("question"))

    @server.on("block")
    async def block() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["ask"]})  # an event whose handler makes our request 1
        assert await peer.receive() == '{"a":["question"],"i":1}'
        await peer.send({"a": ["block"], "i": 1})  # the peer's request 1
        await trio.testing.wait_all_tasks_blocked()
        await peer.send({"i": 1, "x": None})
        with trio.fail_after(1):
            await cancelled.wait()
        await peer.expect_silence()
        assert asked == []
        await peer.send({"i": 1, "d": "still pending"})
        await trio.testing.wait_all_tasks_blocked()
        assert asked == ["still pending"]


# ---------------------------------------------------------------------------------------------
# §12.1: lifecycle hooks on the wire side


async def test_open_listener_runs_before_first_frame(autojump_clock: MockClock, server: wsw.Server) -> None:
    @server.on("open")
    async def opened(client: wsw.Client) -> None:
        await trio.sleep(1)
        client.on("late", lambda: "registered in open")
        await client.emit("hello", 1)

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["late"], "i": 1})  # sent before the open listener finished
        assert await peer.receive() == '{"a":["hello",1]}'
        assert await peer.receive() == '{"i":1,"d":"registered in open"}'


async def test_open_listener_failure_closes_with_1011(autojump_clock: MockClock, server: wsw.Server) -> None:
    closed: list[tuple[Any, ...]] = []

    @server.on("connect")
    def opened(client: wsw.Client) -> None:
        raise RuntimeError("nope")

    server.on("close", lambda *args: closed.append(args[1:]))
    server.on("echo", lambda x: x)
    async with open_raw_peer(server) as peer:
        with pytest.raises(wsw.TransportClosed) as info:
            await peer.receive()
        assert (info.value.code, info.value.reason) == (1011, "internal error")
    assert closed == [(1011, "internal error", False)]


async def test_message_hook_sees_every_raw_payload(
    autojump_clock: MockClock, echo_server: wsw.Server
) -> None:
    seen: list[tuple[Any, ...]] = []
    echo_server.on("message", lambda client, payload: seen.append((client, payload)))
    sent: list[str | bytes] = ["garbage", b"\xff", b'{"a":["echo",1],"i":1}', '{"a":["message"],"i":2}', "[]"]
    async with open_raw_peer(echo_server) as peer:
        for payload in sent:
            await peer.send(payload)
        assert await peer.receive() == '{"i":1,"d":1}'
        await peer.expect_silence()
        (client,) = echo_server.clients
    assert seen == [(client, payload) for payload in sent]
    assert type(seen[2][1]) is bytes


async def test_message_hook_runs_before_dispatch(autojump_clock: MockClock, echo_server: wsw.Server) -> None:
    order: list[str] = []

    @echo_server.on("message")
    def message(client: wsw.Client, payload: str) -> None:
        order.append(f"message {payload}")

    echo_server.on("note", lambda x: order.append(f"note {x}"))
    async with open_raw_peer(echo_server) as peer:
        await peer.send({"a": ["note", 1]})
        await assert_alive(peer)
    # the hook ran for the frame before the frame's handler did (handlers run in their own task)
    assert order.index('message {"a":["note",1]}') < order.index("note 1")


async def test_close_listener_for_peer_close_and_drop(autojump_clock: MockClock, server: wsw.Server) -> None:
    events: list[tuple[Any, ...]] = []
    server.on("error", lambda client, exc: events.append(("error", type(exc), getattr(exc, "code", None))))
    server.on("close", lambda client, *args: events.append(("close", *args)))
    server.on("disconnect", lambda client, *args: events.append(("disconnect", *args)))

    async with open_raw_peer(server) as peer:
        await peer.transport.aclose(4321, "bye")
    assert events == [("close", 4321, "bye", False), ("disconnect", 4321, "bye", False)]
    events.clear()

    async with open_raw_peer(server) as peer:
        peer.transport.abort()
    assert events == [
        ("error", wsw.ConnectionClosed, 1006),
        ("close", 1006, "", False),
        ("disconnect", 1006, "", False),
    ]


# ---------------------------------------------------------------------------------------------
# §14.2: peer_compat="v3"


async def test_v3_never_sends_cancellations(autojump_clock: MockClock) -> None:
    server = wsw.Server(heartbeat_interval=None, peer_compat="v3")
    outcome: list[str] = []

    @server.on("ask")
    async def ask(how: str) -> None:
        client = wsw.current_client()
        if how == "timeout":
            try:
                await client.request("q", timeout=1)
            except wsw.RequestTimeout:
                outcome.append("timeout")
        else:
            with trio.move_on_after(1):
                await client.request("q")
            outcome.append("cancelled")

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["ask", "timeout"]})
        assert await peer.receive() == '{"a":["q"],"i":1}'
        await peer.send({"a": ["ask", "scope"]})
        assert await peer.receive() == '{"a":["q"],"i":2}'
        await peer.expect_silence(5)
        assert sorted(outcome) == ["cancelled", "timeout"]
        # the fail-safe abort is suppressed too; the rejection still comes
        await roundtrip(
            peer, {"a": ["x"], "h": 3, "i": 4}, rejection(4, "Anonymous channel '3' does not exist")
        )
        await peer.send({"a": ["x"], "h": 3})
        await peer.expect_silence()


async def test_v4_sends_cancellation_for_comparison(autojump_clock: MockClock, server: wsw.Server) -> None:
    @server.on("ask")
    async def ask() -> None:
        with pytest.raises(wsw.RequestTimeout):
            await wsw.current_client().request("q", timeout=1)

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["ask"]})
        assert await peer.receive() == '{"a":["q"],"i":1}'
        assert await peer.receive() == '{"i":1,"x":{"message":"Request aborted"},"_":1}'
        await peer.expect_silence()


async def test_v3_set_per_client_in_open_listener(autojump_clock: MockClock, server: wsw.Server) -> None:
    @server.on("open")
    def opened(client: wsw.Client) -> None:
        client.peer_compat = "v3"

    @server.on("ask")
    async def ask() -> None:
        with trio.move_on_after(1):
            await wsw.current_client().request("q")

    async with open_raw_peer(server) as peer:
        await peer.send({"a": ["ask"]})
        assert await peer.receive() == '{"a":["q"],"i":1}'
        await peer.expect_silence(5)
