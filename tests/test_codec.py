"""Pluggable codecs: the default's exact output, the dict path for custom codecs, OrjsonCodec."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

import trio_wswrapper as wsw
from tests.bounded import bound_tests
from trio_wswrapper import _protocol as proto
from trio_wswrapper.testing import open_raw_peer, open_test_client

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


class DictPath:
    """A codec with the default's JSON rules that still forces the encoders' dict path."""

    def encode(self, obj: Any) -> str:
        return proto.compact_json(obj)

    def decode(self, data: str | bytes) -> Any:
        return json.loads(data)


class Prefixed:
    """Not JSON on the wire at all: proves the codec owns both directions."""

    def encode(self, obj: Any) -> str:
        return "J" + proto.compact_json(obj)

    def decode(self, data: str | bytes) -> Any:
        text = data.decode() if isinstance(data, bytes) else data
        if not text.startswith("J"):
            raise ValueError("not prefixed")
        return json.loads(text[1:])


def all_frames(codec: wsw.Codec | None, value: Any) -> list[str]:
    error = proto.ErrorPayload(value, True)
    raw = proto.ErrorPayload(value, False)
    return [
        proto.encode_event("e", [value], codec=codec),
        proto.encode_event("e", [value, 1], channel="room", id=3, codec=codec),
        proto.encode_event("e", [], anon=4, id=5, codec=codec),
        proto.encode_resolution(7, value, codec=codec),
        proto.encode_rejection(8, error, codec=codec),
        proto.encode_rejection(8, raw, error_flag=True, codec=codec),
        proto.encode_rejection(8, proto.ErrorPayload(None), codec=codec),
        proto.encode_cancel(9, error, error_flag=True, codec=codec),
        proto.encode_cancel(9, None, codec=codec),
        proto.encode_abort(10, raw, codec=codec),
        proto.encode_abort(10, None, codec=codec),
        proto.encode_creation(11, codec=codec),
    ]


def test_json_codec_is_the_default_and_takes_the_direct_path() -> None:
    assert wsw.Options().codec == wsw.JsonCodec()
    assert wsw.Server().options.codec == wsw.JsonCodec()
    assert proto.custom_codec(wsw.JsonCodec()) is None
    assert proto.custom_codec(None) is None
    custom = DictPath()
    assert proto.custom_codec(custom) is custom
    codec = wsw.JsonCodec()
    assert codec.encode({"a": ["x", 1.5, "é"]}) == '{"a":["x",1.5,"\\u00e9"]}'
    with pytest.raises(ValueError):
        codec.encode(math.nan)
    assert codec.decode(b'{"i":1}') == {"i": 1}
    assert codec.decode("1" * 5000) == float("1" * 5000)  # beyond the int digit limit
    with pytest.raises(ValueError):
        codec.decode("NaN")


@given(json_values)
def test_dict_path_frames_equal_the_direct_frames(value: Any) -> None:
    assert all_frames(DictPath(), value) == all_frames(None, value)
    assert all_frames(wsw.JsonCodec(), value) == all_frames(None, value)


@given(json_values)
def test_custom_decode_classifies_like_the_default(value: Any) -> None:
    for frame in all_frames(None, value):
        assert proto.decode(frame, DictPath()) == proto.decode(frame)
        assert proto.decode("J" + frame, Prefixed()) == proto.decode(frame)


def test_custom_codec_failures() -> None:
    assert proto.decode('{"i":1,"d":2}', Prefixed()) == proto.Ignored("not valid JSON")
    assert proto.decode(b"J[1]", Prefixed()) == proto.Ignored("not a JSON object")
    bad = proto.ErrorPayload({"message": "x", "obj": object()}, True)
    assert proto.encode_rejection(1, bad, codec=Prefixed()) == (
        'J{"i":1,"e":{"message":"Object of type object is not JSON serializable"},"_":1}'
    )
    assert proto.encode_abort(2, bad, codec=Prefixed()) == (
        'J{"h":2,"x":{"message":"Object of type object is not JSON serializable"},"_":1}'
    )
    with pytest.raises(TypeError):
        proto.encode_resolution(1, object(), codec=Prefixed())


def test_codec_option_is_validated() -> None:
    with pytest.raises(TypeError, match="codec must have encode"):
        wsw.Server(codec=object())  # type: ignore[arg-type]


async def test_custom_codec_end_to_end(autojump_clock: MockClock) -> None:
    server = wsw.Server(heartbeat_interval=None, codec=Prefixed())
    server.on("echo", lambda x: x)

    @server.on("fail")
    def fail() -> None:
        raise ValueError("boom")

    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("twice", 21)

    async with open_raw_peer(server) as peer:
        await peer.send('J{"a":["echo",{"k":[1]}],"i":1}')
        assert await peer.receive() == 'J{"i":1,"d":{"k":[1]}}'
        await peer.send('{"a":["echo",1],"i":2}')  # not in the codec's format: ignored
        await peer.send('J{"a":["fail"],"i":3}')
        assert await peer.receive() == 'J{"i":3,"e":{"message":"boom"},"_":1}'
        await peer.send('J{"a":["missing"],"i":4}')
        assert await peer.receive() == 'J{"i":4,"e":{"message":"No event listener for \'missing\'"},"_":1}'

    client = wsw.Client(options=wsw.Options(codec=Prefixed()))
    client.on("twice", lambda n: n * 2)
    async with open_test_client(server, client=client):
        assert await client.request("echo", "é") == "é"
        assert await client.request("ask") == 42
        await server.emit("news", 1)
        with pytest.raises(wsw.RemoteError, match="boom"):
            await client.request("fail")


async def test_open_client_takes_codec_and_handler_context() -> None:
    # Over loopback, so that open_client's own keyword options are the ones used.
    server = wsw.Server(heartbeat_interval=None, codec=Prefixed())
    seen: list[str] = []

    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("name")

    def tagged(info: wsw.MessageInfo) -> Any:
        seen.append(info.name)
        return contextlib.nullcontext()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}/"
            async with wsw.open_client(url, codec=Prefixed(), handler_context=tagged) as client:
                assert isinstance(client._options.codec, Prefixed)
                client.on("name", lambda: "py")
                assert await client.request("ask") == "py"
            nursery.cancel_scope.cancel()
    assert seen == ["name"]


# ---------------------------------------------------------------------------------------------
# OrjsonCodec (the ``fast`` extra)

orjson = pytest.importorskip("orjson")


# orjson reads integers outside [-2**63, 2**64) as floats, a documented difference that
# test_orjson_differences_and_fallbacks checks; here every integer is one it reads exactly.
json_values_64 = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values_64)
def test_orjson_frames_mean_the_same_as_the_default(value: Any) -> None:
    codec = wsw.OrjsonCodec()
    for ours, default in zip(all_frames(codec, value), all_frames(None, value), strict=True):
        assert json.loads(ours) == json.loads(default)
        assert proto.decode(ours, codec) == proto.decode(default)


def test_orjson_differences_and_fallbacks() -> None:
    codec = wsw.OrjsonCodec()
    assert repr(codec) == "OrjsonCodec()"
    # UTF-8 instead of escapes; NaN/Infinity as null, as JavaScript's JSON.stringify does.
    assert codec.encode(["é", math.nan, math.inf]) == '["é",null,null]'
    # What orjson refuses falls back to the default codec, byte for byte.
    for value in ([2**64], {1: "a"}, ["\ud800"]):
        assert codec.encode(value) == proto.compact_json(value)
    with pytest.raises(TypeError):
        codec.encode(object())
    assert codec.decode('"\\ud800"') == "\ud800"
    assert codec.decode("1e999") == math.inf
    assert codec.decode(b'{"i":1}') == {"i": 1}
    assert codec.decode("123456789012345678901234567890") == 1.2345678901234568e29
    with pytest.raises(ValueError):
        codec.decode("NaN")
    assert proto.decode("{", codec) == proto.Ignored("not valid JSON")


async def test_orjson_codec_end_to_end(autojump_clock: MockClock) -> None:
    server = wsw.Server(heartbeat_interval=None, codec=wsw.OrjsonCodec())
    server.on("echo", lambda x: x)
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["echo","\\u00e9"],"i":1}')
        assert await peer.receive() == '{"i":1,"d":"é"}'
        await peer.send('{"a":["echo",1e999],"i":2}')  # decoded by the fallback, as infinity
        assert await peer.receive() == '{"i":2,"d":null}'
        await peer.send('{"a":["echo",18446744073709551616],"i":3}')  # beyond 64 bits: a float
        assert await peer.receive() == '{"i":3,"d":1.8446744073709552e+19}'
    client = wsw.Client(options=wsw.Options(codec=wsw.OrjsonCodec()))
    async with open_test_client(server, client=client):
        items = [{"id": i, "tags": ["a"]} for i in range(50)]
        assert await client.request("echo", items) == items


bound_tests(globals())
