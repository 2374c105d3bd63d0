"""Fuzzing a live server with hypothesis: hostile frame sequences from a raw client.

Each example starts a server on a loopback port, connects a healthy client that keeps making
requests and checks every reply, and a raw client that sends a hypothesis-drawn sequence of
frames: invalid UTF-8 and JSON, deep nesting, huge numbers and strings, NaN and Infinity,
every field with every wrong type, id reuse and overflow, cancellations and aborts for
unknown ids, floods of anonymous channels and handler-holding requests, text and binary
frames. Content never closes a connection (PROTOCOL.md §3), so afterwards the raw client's
own connection must still answer; every frame the server sent it must obey the output rules
of §1.1; and once both clients leave, nothing may remain (clients, requests, handlers,
channels, tasks).
"""

from __future__ import annotations

import json
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .common import Healthy, add, error_log, idle, make_server, scale, task_count, wait_until
from .rawws import RawWebSocket

LIMIT = 64 * 1024
SENTINEL = 10**9  # larger than every id the strategies draw
KEYS = ("a", "c", "i", "d", "e", "_", "x", "h", "ws-wrapper")
NAMES = ("echo", "add", "sleep", "fail", "stream", "chan", "ask", "start", "next", "bye", "nope")
RESERVED = ("open", "connect", "message", "error", "close", "disconnect")

# -- strategies ----------------------------------------------------------------------------------

ids = st.one_of(
    st.integers(1, 40),
    st.sampled_from([0, -1, 2**53 - 1, 2**53, 2**63, 2**64 + 1, -(2**53)]),
    st.sampled_from([1.0, 1.5, 1e3, "1", "5", "0", "abc", True, False, None, [], {}]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
names = st.one_of(st.sampled_from(NAMES + RESERVED + ("",)), st.text(max_size=8), scalars)
args = st.lists(json_values, max_size=3)
field_values: dict[str, Any] = {
    "a": st.one_of(st.builds(lambda n, rest: [n, *rest], names, args), json_values),
    "c": st.one_of(st.sampled_from(["room", "", "nope", None]), json_values),
    "i": st.one_of(ids, json_values),
    "d": json_values,
    "e": json_values,
    "_": json_values,
    "x": json_values,
    "h": st.one_of(ids, json_values),
    "ws-wrapper": st.one_of(st.sampled_from([False, 0, None, True, ""]), json_values),
}


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """An object with any subset of the protocol's keys, each holding anything."""
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=6))
    message = {key: draw(field_values[key]) for key in keys}
    if draw(st.booleans()):
        message[draw(st.text(max_size=4))] = draw(json_values)
    return message


def dumps(value: Any) -> str:
    # allow_nan: NaN and Infinity tokens are part of what the server must survive
    return json.dumps(value, separators=(",", ":"), allow_nan=True)


def corrupt(text: str, cut: int, junk: str) -> str:
    cut = cut % (len(text) + 1)
    return text[:cut] + junk + text[cut:]


# Hypothesis draws small specs; ``build`` turns each into the frames it stands for, so that
# big frames never appear in hypothesis's own reports.
Spec = tuple[Any, ...]

specs: st.SearchStrategy[Spec] = st.one_of(
    st.tuples(st.just("message"), messages()),
    st.tuples(st.just("message"), messages()),
    st.tuples(st.just("message"), messages()),
    st.tuples(st.just("corrupt"), messages(), st.integers(0, 100), st.text(max_size=3)),
    st.tuples(st.just("text"), st.text(max_size=50)),
    st.tuples(st.just("value"), json_values),
    # every frame stays under LIMIT: content, not size, is under test here
    st.tuples(st.just("nested lists"), st.integers(1, 30_000)),
    st.tuples(st.just("nested objects"), st.integers(1, 10_000)),
    st.tuples(st.just("huge integer"), st.integers(1, 30_000)),
    st.tuples(st.just("integer at the digit limit"), st.integers(4290, 4310)),
    st.tuples(st.just("huge string"), st.integers(1, 60_000)),
    st.tuples(st.just("constant"), st.sampled_from(["NaN", "Infinity", "-Infinity"])),
    st.tuples(
        st.just("flood"),
        st.sampled_from(["echo", "sleep", "chan", "stream", "ask"]),
        st.integers(1, 40),
        st.integers(1, 40),
        st.sampled_from([3, "x", None]),
    ),
    st.tuples(st.just("cancel"), ids, json_values),
    st.tuples(st.just("abort"), ids, json_values),
    st.tuples(st.just("channel traffic"), ids, names, args),
)


def build(spec: Spec) -> list[str]:
    kind, *p = spec
    if kind == "message":
        return [dumps(p[0])]
    if kind == "corrupt":
        return [corrupt(dumps(p[0]), p[1], p[2])]
    if kind == "text":
        return [p[0]]
    if kind == "value":
        return [dumps(p[0])]
    if kind == "nested lists":
        return ["[" * p[0] + "]" * p[0]]
    if kind == "nested objects":
        return ['{"a":' * p[0] + "1" + "}" * p[0]]
    if kind == "huge integer":
        return ['{"a":["echo",' + "9" * p[0] + '],"i":1}']
    if kind == "integer at the digit limit":
        return ['{"a":["add",' + "7" * p[0] + ',1],"i":2}', '{"a":["echo",-' + "7" * p[0] + '],"i":3}']
    if kind == "huge string":
        return ['{"a":["echo","' + "s" * p[0] + '"],"i":3}']
    if kind == "constant":
        return [f'{{"a":["echo",{p[0]}],"i":4}}', f'{{"i":1,"d":{p[0]}}}']
    if kind == "flood":
        name, first, count, arg = p
        return [dumps({"a": [name, arg], "i": first + k}) for k in range(count)]
    if kind == "cancel":
        return [dumps({"i": p[0], "x": p[1]})]
    if kind == "abort":
        return [dumps({"h": p[0], "x": p[1]})]
    assert kind == "channel traffic"
    return [dumps({"a": [p[1], *p[2]], "h": p[0], "i": 7}), dumps({"a": [p[1], *p[2]], "h": p[0]})]


frames = st.lists(
    st.tuples(specs, st.sampled_from(["text", "text", "text", "binary", "bad-binary"])), max_size=12
)


# -- oracle ----------------------------------------------------------------------------------------

ALLOWED = set(KEYS) - {"ws-wrapper"}


def _no_constants(token: str) -> Any:
    raise AssertionError(f"the server sent {token}")


def check_output(text: str | bytes) -> Any:
    """A frame the server sent obeys PROTOCOL.md §1.1: compact ASCII JSON, known keys, no NaN."""
    assert isinstance(text, str), "the server sent a binary frame"
    assert text.isascii()
    message = json.loads(text, parse_constant=_no_constants)
    assert type(message) is dict and message and set(message) <= ALLOWED, text
    assert json.dumps(message, separators=(",", ":")) == text
    for key in ("i", "h"):
        if key in message:
            assert type(message[key]) is int and 1 <= message[key] <= 2**53 - 1
    assert message.get("_", 1) == 1 and message.get("c", "x") not in ("", None)
    return message


async def sentinel(raw: RawWebSocket, n: int) -> int:
    """Make a request on the hostile connection and wait for its answer; count frames read."""
    rid = SENTINEL + n
    await raw.send_text(dumps({"a": ["echo", n], "i": rid}))
    received = 0
    while True:
        reply = await raw.receive()
        assert isinstance(reply, (str, bytes)), f"the server closed the connection: {reply!r}"
        received += 1
        message = check_output(reply)
        if message.get("i") == rid:
            # a hostile connection can fill its own handler slots; that must not stop reading
            assert message in (
                {"i": rid, "d": n},
                {"i": rid, "e": {"message": "Too many concurrent requests"}, "_": 1},
            )
            return received


# -- the test --------------------------------------------------------------------------------------


@settings(
    max_examples=scale(40, 1500),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frames=frames, reset=st.booleans())
async def test_fuzz_live_server(frames: list[tuple[Spec, str]], reset: bool) -> None:
    server = make_server(max_message_size=LIMIT, max_concurrent_handlers=16, channel_buffer_size=8)
    with error_log() as errors, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            baseline = task_count()
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            stop = trio.Event()
            healthy = Healthy()
            await nursery.start(healthy.run, port, stop)
            async with await RawWebSocket.connect(port) as raw:
                sent = 0
                for spec, how in frames:
                    for text in build(spec):
                        if how == "text":
                            await raw.send_text(text)
                        elif how == "binary":
                            await raw.send_bytes(text.encode())
                        else:
                            await raw.send_bytes(text.encode() + b"\xff")
                        sent += 1
                # The reader is still classifying in order: the sentinel's answer proves it, and
                # everything sent before it was looked at.
                received = await sentinel(raw, sent)
                for client in server.clients:  # the limits hold per connection
                    stats = client.statistics()
                    assert stats.running_handlers <= 16 and stats.open_channels <= 16
                del client
                if reset:
                    raw.reset()
                else:
                    await raw.aclose()
            await wait_until(lambda: idle(server, clients=1))
            stop.set()
            await wait_until(lambda: idle(server))
            assert healthy.replies > 0 and healthy.lost == 0
            await server.aclose()
            nursery.cancel_scope.cancel()
        assert task_count() == baseline
    assert not errors.records, [r.getMessage() for r in errors.records]
    add("fuzz", "examples", 1)
    add("fuzz", "frames fuzzed", sent + 1)
    add("fuzz", "server frames checked", received)
    add("fuzz", "healthy replies", healthy.replies)
    add("fuzz", "healthy replies lost", healthy.lost)
