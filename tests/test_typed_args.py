"""Typed handler arguments: conversion, validation and the exact rejection texts.

Conversion rules are tested synchronously through ``Handler.prepare``; the wire behaviour
(exact rejection frames, dropped events) through ``open_raw_peer``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NewType, Optional, TypedDict, Union

import attrs
import pytest
import trio
from trio.testing import MockClock
from typing_extensions import NotRequired, Required

import trio_wswrapper as wsw
from tests.bounded import bound_tests
from trio_wswrapper._handlers import Handler
from trio_wswrapper.testing import open_raw_peer, open_test_client


def rejection(rid: int, message: str) -> str:
    return f'{{"i":{rid},"e":{json.dumps({"message": message}, separators=(",", ":"))},"_":1}}'


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node] = dataclasses.field(default_factory=list)


@attrs.define
class Box:
    corner: Point
    tags: list[str] = attrs.Factory(list)
    _secret: int = 0


@attrs.define
class Positive:
    n: int = attrs.field()

    @n.validator
    def _check(self, attribute: Any, value: int) -> None:
        if value <= 0:
            raise ValueError("n must be positive")


class Movie(TypedDict):
    title: str
    year: NotRequired[int]


class Partial(TypedDict, total=False):
    a: int
    b: Required[str]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


UserId = NewType("UserId", int)


def bind(fn: Any, *args: Any) -> list[Any] | tuple[Any, ...]:
    handler = Handler.prepare(fn, "h")
    assert handler.bind is not None
    return handler.bind(args)


def error(fn: Any, *args: Any) -> str:
    with pytest.raises(wsw.ArgumentError) as info:
        bind(fn, *args)
    assert isinstance(info.value, TypeError)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Registration


def test_unannotated_handlers_get_no_binder() -> None:
    assert Handler.prepare(lambda a, b: a, "h").bind is None

    def only_return(a, b) -> int:  # type: ignore[no-untyped-def]
        return 0

    assert Handler.prepare(only_return, "h").bind is None
    assert Handler.prepare(print, "h").bind is None  # no signature: untouched


def test_keyword_only_parameter_without_default_is_refused() -> None:
    def h(a: int, *, b: int) -> None: ...

    with pytest.raises(TypeError, match="keyword-only parameter 'b' has no default"):
        Handler.prepare(h, "h")

    def ok(a: int, *, b: int = 1, **extra: Any) -> tuple[int, int]:
        return a, b

    assert bind(ok, 1) == [1]


@pytest.mark.parametrize(
    ("annotation", "text"),
    [
        (set[int], "unsupported annotation set[int]"),
        (dict[int, str], "unsupported annotation dict[int, str]: JSON object keys are strings"),
        (bytes, "unsupported annotation bytes"),
    ],
)
def test_unsupported_annotations_fail_at_registration(annotation: Any, text: str) -> None:
    def h(a: Any) -> None: ...

    h.__annotations__["a"] = annotation
    with pytest.raises(TypeError) as info:
        Handler.prepare(h, "h")
    assert str(info.value) == f"handler 'h', parameter 'a': {text}"


def test_unresolvable_annotation_fails_at_registration() -> None:
    def h(a: Undefined) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="cannot resolve its annotations"):
        Handler.prepare(h, "h")


def test_record_with_unsupported_field_names_the_field() -> None:
    @dataclasses.dataclass
    class Bad:
        data: bytes

    def h(b: Bad) -> None: ...

    h.__annotations__["b"] = Bad
    with pytest.raises(TypeError, match="field 'data' of Bad: unsupported annotation bytes"):
        Handler.prepare(h, "h")


# ---------------------------------------------------------------------------------------------
# Scalars


def test_int() -> None:
    def h(n: int) -> None: ...

    assert bind(h, 3) == [3]
    converted = bind(h, 3.0)
    assert converted == [3] and type(converted[0]) is int
    assert error(h, 3.5) == "Invalid argument 'n': expected int, got float"
    assert error(h, True) == "Invalid argument 'n': expected int, got bool"
    assert error(h, "3") == "Invalid argument 'n': expected int, got str"
    assert error(h, None) == "Invalid argument 'n': expected int, got None"
    assert error(h, float("inf")) == "Invalid argument 'n': expected int, got float"


def test_float_str_bool_none() -> None:
    def h(f: float, s: str, b: bool, n: None) -> None: ...

    assert bind(h, 1.5, "s", False, None) == [1.5, "s", False, None]
    kept = bind(h, 2, "s", True, None)
    assert type(kept[0]) is int  # an int is a float (typing's rule); passed unchanged
    assert error(h, True, "s", True, None) == "Invalid argument 'f': expected float, got bool"
    assert error(h, 1.0, 1, True, None) == "Invalid argument 's': expected str, got int"
    assert error(h, 1.0, "s", 1, None) == "Invalid argument 'b': expected bool, got int"
    assert error(h, 1.0, "s", True, 0) == "Invalid argument 'n': expected None, got int"


def test_any_and_object_pass_anything() -> None:
    def h(a: Any, b: object) -> None: ...

    value = {"nested": [1, None]}
    assert bind(h, value, [1]) == (value, [1])


def test_literal_enum_newtype_annotated() -> None:
    def h(mode: Literal["r", "w", 1], color: Color, user: UserId, n: Annotated[int, "doc"]) -> None: ...

    assert bind(h, "r", "red", 7, 1) == ["r", Color.RED, 7, 1]
    assert bind(h, 1, "green", 7, 1)[0] == 1
    assert error(h, True, "red", 7, 1) == "Invalid argument 'mode': expected one of 'r', 'w', 1, got True"
    assert error(h, "x", "red", 7, 1) == "Invalid argument 'mode': expected one of 'r', 'w', 1, got 'x'"
    assert (
        error(h, "r", "blue", 7, 1) == "Invalid argument 'color': expected one of 'red', 'green', got 'blue'"
    )
    assert (
        error(h, "r", ["red"], 7, 1) == "Invalid argument 'color': expected one of 'red', 'green', got list"
    )
    assert error(h, "r", "red", "7", 1) == "Invalid argument 'user': expected int, got str"
    assert error(h, "r", "red", 7, 1.5) == "Invalid argument 'n': expected int, got float"


def test_optional_and_unions() -> None:
    def h(a: int | None, b: Optional[str], c: Union[int, str], d: float | int, e: Any | int) -> None: ...  # noqa: UP007, UP045

    assert bind(h, None, None, "x", 3, [1]) == [None, None, "x", 3, [1]]
    assert bind(h, 3.0, "s", 2, 2.5, None)[0] == 3
    assert type(bind(h, 1, "s", 1, 3, 1)[3]) is int  # the exact JSON type wins
    assert error(h, "x", None, 1, 1, 1) == "Invalid argument 'a': expected int, got str"
    assert error(h, None, 1, 1, 1, 1) == "Invalid argument 'b': expected str, got int"
    assert error(h, None, None, [1], 1, 1) == "Invalid argument 'c': expected int | str, got list"
    assert error(h, None, None, 1, "1", 1) == "Invalid argument 'd': expected float | int, got str"


# ---------------------------------------------------------------------------------------------
# Containers


def test_lists_tuples_and_dicts() -> None:
    def h(
        a: list[int],
        b: Sequence[str],
        c: tuple[int, str],
        d: tuple[float, ...],
        e: dict[str, int],
        f: Mapping[str, list[int]],
        g: list[Any],
        h: dict,  # type: ignore[type-arg]
        i: list,  # type: ignore[type-arg]
        j: tuple[()],
    ) -> None: ...

    good = ([1, 2.0], ["x"], [1, "y"], [1.5, 2], {"k": 1}, {"k": [1]}, [None], {}, [], [])
    assert bind(h, *good) == [[1, 2], ["x"], (1, "y"), (1.5, 2), {"k": 1}, {"k": [1]}, [None], {}, [], ()]
    ints = [1, 2, 3]
    assert bind(h, ints, *good[1:])[0] is ints  # already right: not copied

    def bad(index: int, value: Any) -> str:
        args = list(good)
        args[index] = value
        return error(h, *args)

    assert bad(0, [1, "2"]) == "Invalid argument 'a': item 1: expected int, got str"
    assert bad(0, {"a": 1}) == "Invalid argument 'a': expected list, got dict"
    assert bad(1, "xy") == "Invalid argument 'b': expected list, got str"
    assert bad(2, [1]) == "Invalid argument 'c': expected 2 items, got 1"
    assert bad(2, [1, 2]) == "Invalid argument 'c': item 1: expected str, got int"
    assert bad(3, [1, "x"]) == "Invalid argument 'd': item 1: expected float, got str"
    assert bad(4, {"k": "v"}) == "Invalid argument 'e': key 'k': expected int, got str"
    assert bad(5, {"k": [1, None]}) == "Invalid argument 'f': key 'k': item 1: expected int, got None"
    assert bad(6, (1,)) == "Invalid argument 'g': expected list, got tuple"
    assert bad(7, []) == "Invalid argument 'h': expected dict, got list"
    assert bad(8, {}) == "Invalid argument 'i': expected list, got dict"
    assert bad(9, [1]) == "Invalid argument 'j': expected 0 items, got 1"


# ---------------------------------------------------------------------------------------------
# Records


def test_dataclass() -> None:
    def h(point: Point) -> None: ...

    assert bind(h, {"x": 1, "y": 2}) == [Point(1, 2)]
    assert bind(h, {"x": 1.0}) == [Point(1, 0)]
    assert error(h, {"x": "1"}) == "Invalid argument 'point': field 'x': expected int, got str"
    assert error(h, {"y": 1}) == "Invalid argument 'point': missing field 'x'"
    assert error(h, {"x": 1, "z": 1}) == "Invalid argument 'point': unexpected field 'z'"
    assert error(h, [1, 2]) == "Invalid argument 'point': expected Point object, got list"


def test_recursive_dataclass() -> None:
    def h(tree: Node) -> None: ...

    tree = {"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}
    assert bind(h, tree) == [Node(1, [Node(2, [Node(3)])])]
    tree["children"][0]["children"][0]["value"] = "3"  # type: ignore[index]
    assert error(h, tree) == (
        "Invalid argument 'tree': field 'children': item 0: field 'children': item 0: "
        "field 'value': expected int, got str"
    )


def test_attrs_class_with_private_field_and_validator() -> None:
    def h(box: Box, p: Positive) -> None: ...

    converted = bind(h, {"corner": {"x": 1}, "tags": ["a"], "_secret": 2}, {"n": 1})
    assert converted == [Box(Point(1), ["a"], 2), Positive(1)]
    assert error(h, {"corner": {"x": 1}, "tags": [1]}, {"n": 1}) == (
        "Invalid argument 'box': field 'tags': item 0: expected str, got int"
    )
    assert (
        error(h, {"corner": {"x": 1}}, {"n": 0})
        == "Invalid argument 'p': invalid Positive: n must be positive"
    )


def test_typeddicts_total_and_not() -> None:
    def h(movie: Movie, partial: Partial) -> None: ...

    assert bind(h, {"title": "T"}, {"b": "x"}) == [{"title": "T"}, {"b": "x"}]
    assert bind(h, {"title": "T", "year": 1999.0}, {"a": 1, "b": "x"})[0] == {"title": "T", "year": 1999}
    assert error(h, {"year": 1}, {"b": "x"}) == "Invalid argument 'movie': missing field 'title'"
    assert error(h, {"title": "T"}, {"a": 1}) == "Invalid argument 'partial': missing field 'b'"
    assert error(h, {"title": "T", "x": 1}, {"b": ""}) == "Invalid argument 'movie': unexpected field 'x'"


# ---------------------------------------------------------------------------------------------
# Counts, defaults, *args


def test_argument_counts() -> None:
    def one(a: int) -> None: ...

    def two(a: int, b: int) -> None: ...

    def ranged(a: int, b: int = 0) -> None: ...

    def none() -> int:
        return 0

    def star(a: int, *rest: int) -> None: ...

    def mixed(a, b: int):  # type: ignore[no-untyped-def]  # one annotation is enough
        ...

    assert error(one) == "Handler 'h' takes 1 argument, got 0"
    assert error(two, 1, 2, 3) == "Handler 'h' takes 2 arguments, got 3"
    assert error(ranged, 1, 2, 3) == "Handler 'h' takes 1 to 2 arguments, got 3"
    assert bind(ranged, 1) == [1]
    assert error(star) == "Handler 'h' takes at least 1 argument, got 0"
    assert bind(star, 1, 2, 3.0) == [1, 2, 3]
    assert error(star, 1, 2, "3") == "Invalid argument 'rest[1]': expected int, got str"
    assert error(mixed, "a") == "Handler 'h' takes 2 arguments, got 1"
    assert bind(mixed, "anything", 2) == ["anything", 2]
    assert Handler.prepare(none, "h").bind is None  # no parameter annotated: §7.3 applies


def test_methods_and_partials() -> None:
    import functools

    class Service:
        def add(self, a: int, b: int) -> int:
            return a + b

    assert bind(Service().add, 1, 2.0) == [1, 2]
    assert bind(functools.partial(Service().add, 1), 2) == [2]


# ---------------------------------------------------------------------------------------------
# On the wire


async def test_request_rejections_on_the_wire(autojump_clock: MockClock, server: wsw.Server) -> None:
    @server.on("add")
    def add(a: int, b: int) -> int:
        return a + b

    @server.of("geo").on("move")
    async def move(point: Point, dx: int = 1) -> dict[str, int]:
        await trio.sleep(0)
        return {"x": point.x + dx, "y": point.y}

    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["add",1,2.0],"i":1}')
        assert await peer.receive() == '{"i":1,"d":3}'
        await peer.send('{"a":["add",1,2,3],"i":2}')
        assert await peer.receive() == rejection(2, "Handler 'add' takes 2 arguments, got 3")
        await peer.send('{"a":["add",1,"2"],"i":3}')
        assert await peer.receive() == rejection(3, "Invalid argument 'b': expected int, got str")
        await peer.send('{"a":["move",{"x":1,"y":2}],"c":"geo","i":4}')
        assert await peer.receive() == '{"i":4,"d":{"x":2,"y":2}}'
        await peer.send('{"a":["move",{"x":"1"}],"c":"geo","i":5}')
        assert await peer.receive() == rejection(
            5, "Invalid argument 'point': field 'x': expected int, got str"
        )


async def test_error_to_json_sees_argument_errors(autojump_clock: MockClock) -> None:
    def to_json(exc: BaseException) -> Any:
        return {"message": str(exc), "kind": type(exc).__name__}

    server = wsw.Server(heartbeat_interval=None, error_to_json=to_json)
    server.on("one", lambda: None)

    def h(n: int) -> int:
        return n

    server.on("typed", h)
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["typed","x"],"i":1}')
        assert await peer.receive() == (
            '{"i":1,"e":{"message":"Invalid argument \'n\': expected int, got str",'
            '"kind":"ArgumentError"},"_":1}'
        )


async def test_bad_event_is_dropped_and_logged(
    autojump_clock: MockClock, server: wsw.Server, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Point] = []

    @server.on("point")
    def point(p: Point) -> None:
        seen.append(p)

    server.on("echo", lambda x: x)
    async with open_raw_peer(server) as peer:
        await peer.send('{"a":["point",{"x":"no"}]}')
        await peer.send('{"a":["point"]}')
        await peer.send('{"a":["point",{"x":4}]}')
        await peer.send('{"a":["echo","alive"],"i":9}')
        assert await peer.receive() == '{"i":9,"d":"alive"}'
        await peer.expect_silence()
    assert seen == [Point(4)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "dropped event 'point': Invalid argument 'p': field 'x': expected int, got str" in w for w in warnings
    )
    assert any("dropped event 'point': Handler 'point' takes 1 argument, got 0" in w for w in warnings)


async def test_streaming_handler_arguments_are_converted(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    @server.on("count")
    async def count(n: int, step: int = 1) -> Any:
        for i in range(0, n, step):
            yield i

    async with open_test_client(server) as client:
        stream = await client.request("count", 4.0, 2)
        assert [value async for value in stream.iterate()] == [0, 2]
        with pytest.raises(wsw.RemoteError) as info:
            await client.request("count", "4")
        assert info.value.message == "Invalid argument 'n': expected int, got str"


async def test_client_handlers_and_anonymous_channels_convert_too(
    autojump_clock: MockClock, server: wsw.Server
) -> None:
    @server.on("ask")
    async def ask() -> Any:
        return await wsw.current_client().request("double", 2.0)

    @server.on("chan")
    async def chan() -> Any:
        ch = wsw.channel()

        @ch.on("sum")
        def total(values: list[int]) -> int:
            return sum(values)

        return ch

    async with open_test_client(server) as client:

        @client.on("double")
        def double(n: int) -> Any:
            assert type(n) is int
            return n * 2

        assert await client.request("ask") == 4
        ch = await client.request("chan")
        async with ch:
            assert await ch.request("sum", [1, 2.0]) == 3
            with pytest.raises(
                wsw.RemoteError, match=r"Invalid argument 'values': item 0: expected int, got str"
            ):
                await ch.request("sum", ["1"])


bound_tests(globals())
