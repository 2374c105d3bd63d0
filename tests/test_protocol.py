"""Synchronous tests of the sans-IO protocol core (``trio_wswrapper._protocol``).

Each section names the PROTOCOL.md rule it checks. Inbound tables map a raw frame to the exact
message object :func:`decode` must return; ``Ignored`` results are compared with their reason so
that every table row also pins the step of §3.1 that dropped it.
"""

from __future__ import annotations

import ast
import json
import math
import pathlib
import re
import subprocess
import sys
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_wswrapper._protocol as proto
from trio_wswrapper._protocol import (
    DEFAULT_ABORT_REASON,
    MAX_ID,
    RESERVED_NAMES,
    Abort,
    Answer,
    Cancel,
    ErrorPayload,
    Ignored,
    Incoming,
    Limits,
    compact_json,
    decode,
    decode_error,
    encode_abort,
    encode_cancel,
    encode_creation,
    encode_event,
    encode_rejection,
    encode_resolution,
    error_from_exception,
    error_from_value,
    is_valid_id,
    render_name,
)

NOT_JSON = Ignored("not valid JSON")
NOT_OBJECT = Ignored("not a JSON object")
FOREIGN = Ignored("ws-wrapper is false")
BAD_H = Ignored("invalid anonymous channel id")
BAD_A = Ignored("malformed a")
NO_ID = Ignored("no valid id")
BAD_UTF8 = Ignored("binary frame is not UTF-8")

INBOUND_TYPES = (Incoming, Cancel, Abort, Answer, Ignored)


def ev(
    name: Any, *args: Any, id: int | None = None, channel: Any = None, anon: int | None = None
) -> Incoming:
    return Incoming(name, args, id, channel, anon)


def err(value: Any, is_error: bool = False) -> ErrorPayload:
    return ErrorPayload(value, is_error)


def msg(text: str) -> ErrorPayload:
    return ErrorPayload({"message": text}, True)


def encoder_error(value: Any) -> str:
    """The text the stdlib JSON encoder gives for ``value`` (it varies across Python versions)."""
    with pytest.raises((TypeError, ValueError)) as info:
        json.dumps(value, allow_nan=False)
    return str(info.value)


def check(frame: str | bytes, expected: object) -> None:
    result = decode(frame)
    assert result == expected
    assert type(result) is type(expected)


# =================================================================================================
# §3.1 classification


# -- step 2: not valid JSON --------------------------------------------------------------------

INVALID_JSON = [
    "",
    " ",
    "\n",
    "{",
    "}",
    '{"a":["x"]',
    "{'a':['x']}",
    '{a:["x"]}',
    '{"a":["x"],}',
    '{"a":["x",]}',
    "nul",
    "True",
    "undefined",
    '{"a":["x"]} x',
    '{"a":["x"]}{"a":["y"]}',
    '{"a":["x"]}\n{"a":["y"]}',
    '{"i":01,"d":1}',
    '{"i":+1,"d":1}',
    '{"i":.5,"d":1}',
    '{"i":1.,"d":1}',
    '{"i":0x10,"d":1}',
    '{"a":["x\u0001"]}',  # raw control character inside a string
    '{"a":["\\x41"]}',  # invalid escape
    '{"a":["x"]} // comment',
    "\x0c{}",  # form feed is not JSON whitespace
    "\u00a0{}",  # nor is NBSP
    '\ufeff{"a":["x"]}',  # nor a BOM
    '{"a":["x"]}\x00',
]


@pytest.mark.parametrize("frame", INVALID_JSON)
def test_step2_invalid_json_is_ignored(frame: str) -> None:
    check(frame, NOT_JSON)


NON_FINITE = [
    "NaN",
    "Infinity",
    "-Infinity",
    '{"a":["x",NaN]}',
    '{"a":["x",Infinity]}',
    '{"a":["x",-Infinity]}',
    '{"i":1,"d":NaN}',
    '{"i":1,"d":Infinity}',
    '{"i":1,"d":-Infinity}',
    '{"i":1,"e":NaN}',
    '{"i":NaN,"x":1}',
    '{"h":Infinity,"x":1}',
    '{"a":["x"],"extra":[NaN]}',
    "[Infinity]",
]


@pytest.mark.parametrize("frame", NON_FINITE)
def test_step2_nan_and_infinity_tokens_make_the_frame_invalid(frame: str) -> None:
    check(frame, NOT_JSON)
    check(frame.encode(), NOT_JSON)


# -- step 3: not an object ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    ["0", "1", "-5", "1.5", "1e3", '"x"', '"{}"', "true", "false", "null", "[]", '[{"a":["x"]}]', ' "a" '],
)
def test_step3_non_objects_are_ignored(frame: str) -> None:
    check(frame, NOT_OBJECT)


# -- step 4: ws-wrapper false ------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        '{"ws-wrapper":false}',
        '{"ws-wrapper":false,"a":["x"]}',
        '{"a":["x"],"i":1,"ws-wrapper":false}',
        '{"ws-wrapper":false,"i":1,"d":2}',
        '{"ws-wrapper":false,"i":1,"e":2}',
        '{"ws-wrapper":false,"i":1,"x":2}',
        '{"ws-wrapper":false,"h":1,"x":2}',
        '{"ws-wrapper":false,"i":1,"h":1}',
        # step 4 comes before step 5 and step 6
        '{"ws-wrapper":false,"h":0,"a":["x"]}',
        '{"ws-wrapper":false,"a":[]}',
        # duplicate keys: the last one wins
        '{"ws-wrapper":true,"ws-wrapper":false,"a":["x"]}',
    ],
)
def test_step4_ws_wrapper_false_is_foreign(frame: str) -> None:
    check(frame, FOREIGN)


@pytest.mark.parametrize("value", ["0", "null", "true", '""', '"false"', "[]", "{}", "0.0", "-0"])
def test_step4_only_json_false_counts(value: str) -> None:
    check(f'{{"ws-wrapper":{value},"a":["x",1],"i":3}}', ev("x", 1, id=3))
    check(f'{{"ws-wrapper":{value},"i":3,"d":4}}', Answer(3, "resolve", 4))
    check(f'{{"ws-wrapper":{value},"i":3,"x":"r"}}', Cancel(3, err("r")))


def test_step4_last_duplicate_can_clear_the_foreign_mark() -> None:
    check('{"ws-wrapper":false,"ws-wrapper":0,"a":["x"]}', ev("x"))


# -- step 5: i -----------------------------------------------------------------------------------

INVALID_I = [
    "0",
    "-0",
    "-1",
    "-9007199254740991",
    "1.5",
    "1.0",
    "5.0",
    "1e3",
    "1E3",
    "1e0",
    '"5"',
    '"1"',
    "true",
    "false",
    "null",
    "[]",
    "[1]",
    "{}",
    str(2**53),
    str(2**64),
    "9007199254740992.0",
]


@pytest.mark.parametrize("i", INVALID_I)
def test_step5_invalid_i_is_treated_as_absent(i: str) -> None:
    # with a: an event, not a request
    check(f'{{"a":["x",1],"i":{i}}}', ev("x", 1))
    check(f'{{"a":["x"],"c":"room","i":{i}}}', ev("x", channel="room"))
    check(f'{{"a":["x"],"h":4,"i":{i}}}', ev("x", anon=4))
    # with x: a cancellation with no id
    check(f'{{"i":{i},"x":"r"}}', Cancel(None, err("r")))
    # an answer without a valid id is ignored (step 9)
    check(f'{{"i":{i},"d":1}}', NO_ID)
    check(f'{{"i":{i},"e":"boom"}}', NO_ID)
    check(f'{{"i":{i},"h":1}}', NO_ID)
    check(f'{{"i":{i}}}', NO_ID)


@pytest.mark.parametrize("i", [1, 2, 42, 2**31, 2**32 + 1, MAX_ID])
def test_step5_valid_i(i: int) -> None:
    check(f'{{"a":["x"],"i":{i}}}', ev("x", id=i))
    check(f'{{"i":{i},"d":1}}', Answer(i, "resolve", 1))
    check(f'{{"i":{i},"x":1}}', Cancel(i, err(1)))


def test_step5_i_absent() -> None:
    check('{"a":["x"]}', ev("x"))
    check('{"x":1}', Cancel(None, err(1)))


# -- step 5: h -----------------------------------------------------------------------------------

VALID_H = [
    ("1", 1),
    ("5", 5),
    ("42", 42),
    (str(MAX_ID), MAX_ID),
    ('"5"', 5),
    ('"1"', 1),
    ('"05"', 5),
    ('"0000000000000000000000000000007"', 7),
    (f'"{MAX_ID}"', MAX_ID),
]


@pytest.mark.parametrize(("h", "anon"), VALID_H)
def test_step5_valid_h(h: str, anon: int) -> None:
    check(f'{{"a":["x",1],"h":{h}}}', ev("x", 1, anon=anon))
    check(f'{{"a":["x"],"h":{h},"i":9}}', ev("x", id=9, anon=anon))
    check(f'{{"h":{h},"x":"bye"}}', Abort(anon, err("bye")))
    check(f'{{"i":9,"h":{h}}}', Answer(9, "channel"))


INVALID_H = [
    "0",
    "-0",
    "-1",
    "-5",
    '"0"',
    '"00"',
    '"-1"',
    '"+5"',
    '" 5"',
    '"5 "',
    '""',
    '"abc"',
    '"5a"',
    '"1.5"',
    '"1e3"',
    '"0x5"',
    '"\\u0665"',  # ARABIC-INDIC DIGIT FIVE: a digit, but not ASCII
    '"\\uff15"',  # FULLWIDTH DIGIT FIVE
    '"\\u00b2"',  # SUPERSCRIPT TWO
    "1.5",
    "1.0",
    "1e3",
    "true",
    "false",
    "[]",
    "[5]",
    "{}",
    '{"h":5}',
    str(2**53),
    str(2**64),
    f'"{2**53}"',
    '"' + "1" * 5000 + '"',  # beyond int()'s digit limit: must not raise
    '"' + "0" * 5000 + '"',
]


@pytest.mark.parametrize("h", INVALID_H)
def test_step5_invalid_h_ignores_the_whole_frame(h: str) -> None:
    for frame in [
        f'{{"a":["x"],"h":{h}}}',
        f'{{"a":["x"],"h":{h},"i":3}}',
        f'{{"a":["x"],"c":"room","h":{h}}}',
        f'{{"a":[],"h":{h}}}',  # step 5 comes before step 6
        f'{{"h":{h},"x":"r"}}',
        f'{{"h":{h},"x":"r","i":3}}',
        f'{{"i":3,"h":{h}}}',
        f'{{"i":3,"h":{h},"d":1}}',
        f'{{"i":3,"h":{h},"e":1}}',
        f'{{"h":{h}}}',
    ]:
        check(frame, BAD_H)


def test_step5_h_null_is_absent() -> None:
    check('{"a":["x"],"h":null}', ev("x"))
    check('{"a":["x"],"c":"room","h":null}', ev("x", channel="room"))
    check('{"h":null,"x":"r","i":3}', Cancel(3, err("r")))
    check('{"i":3,"h":null}', Answer(3, "resolve"))
    check('{"h":null}', NO_ID)


# -- step 6: a -----------------------------------------------------------------------------------


@pytest.mark.parametrize("a", ["[]", '"x"', '""', "{}", '{"0":"x"}', "null", "0", "1", "true", "false"])
def test_step6_malformed_a_is_ignored(a: str) -> None:
    check(f'{{"a":{a}}}', BAD_A)
    check(f'{{"a":{a},"i":3}}', BAD_A)
    # a frame carrying a is never an answer, cancellation or abort
    check(f'{{"a":{a},"i":3,"d":1}}', BAD_A)
    check(f'{{"a":{a},"i":3,"e":1}}', BAD_A)
    check(f'{{"a":{a},"i":3,"x":1}}', BAD_A)
    check(f'{{"a":{a},"h":3,"x":1}}', BAD_A)
    check(f'{{"a":{a},"i":3,"h":1}}', BAD_A)


def test_step6_a_wins_over_x_e_d() -> None:
    check('{"a":["n",1],"i":3,"x":"r","e":1,"d":2,"_":1}', ev("n", 1, id=3))
    check('{"a":["n"],"h":3,"x":"r"}', ev("n", anon=3))
    check('{"a":["n"],"x":null}', ev("n"))
    check('{"a":["n"],"i":3,"h":1}', ev("n", id=3, anon=1))


def test_step6_event_and_request_fields() -> None:
    check('{"a":["chat","bob","hi"]}', ev("chat", "bob", "hi"))
    check('{"a":["chat","hi"],"c":"room"}', ev("chat", "hi", channel="room"))
    check('{"a":["add",1,2],"i":7}', ev("add", 1, 2, id=7))
    check('{"a":["mul",2,3],"c":"math","i":8}', ev("mul", 2, 3, channel="math", id=8))
    check('{"a":["data",1],"h":9}', ev("data", 1, anon=9))
    check('{"a":["more"],"h":9,"i":10}', ev("more", id=10, anon=9))
    check(
        '{"a":["x",null,true,false,0,-1.5,"s",[1,[2]],{"k":{"l":null}}]}',
        ev("x", None, True, False, 0, -1.5, "s", [1, [2]], {"k": {"l": None}}),
    )
    # the name is a[0] whatever its type (§3.2 step 6: a non-string never matches a handler)
    check('{"a":[5]}', ev(5))
    check('{"a":[null,1]}', ev(None, 1))
    check('{"a":[["open"]]}', ev(["open"]))
    check('{"a":[""]}', ev(""))


# -- step 7: abort -------------------------------------------------------------------------------


def test_step7_x_with_h_is_an_abort() -> None:
    check('{"h":9,"x":"bye"}', Abort(9, err("bye")))
    check('{"h":9,"x":{"message":"Request aborted"},"_":1}', Abort(9, msg("Request aborted")))
    check('{"h":9,"x":{"message":"m"},"_":true}', Abort(9, msg("m")))
    check('{"h":"9","x":null}', Abort(9, err(None)))
    check('{"h":9,"x":1,"e":2,"d":3}', Abort(9, err(1)))
    # h wins over i: the abort concerns the channel, not a request
    check('{"h":9,"i":4,"x":"r"}', Abort(9, err("r")))


# -- step 8: cancellation ------------------------------------------------------------------------


def test_step8_x_without_h_is_a_cancellation() -> None:
    check('{"i":7,"x":"user cancelled"}', Cancel(7, err("user cancelled")))
    check('{"i":7,"x":{"message":"Request aborted"},"_":1}', Cancel(7, msg("Request aborted")))
    check('{"i":7,"x":null}', Cancel(7, err(None)))
    check('{"x":null}', Cancel(None, err(None)))
    check('{"i":7,"x":1}', Cancel(7, err(1)))  # JS 4.0.0
    check('{"i":7,"x":"r","e":"boom","d":1}', Cancel(7, err("r")))
    check('{"i":7,"x":{"code":1},"_":0}', Cancel(7, err({"code": 1})))


# -- step 9: no id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    ["{}", '{"d":1}', '{"e":"boom"}', '{"e":null}', '{"h":5}', '{"c":"room"}', '{"_":1}', '{"i":-1,"h":1}'],
)
def test_step9_no_id_is_ignored(frame: str) -> None:
    check(frame, NO_ID)


# -- step 10/11: answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"i":7,"d":3}', Answer(7, "resolve", 3)),
        ('{"i":8,"d":null}', Answer(8, "resolve", None)),
        ('{"i":8}', Answer(8, "resolve", None)),
        ('{"i":8,"d":0}', Answer(8, "resolve", 0)),
        ('{"i":8,"d":false}', Answer(8, "resolve", False)),
        ('{"i":8,"d":""}', Answer(8, "resolve", "")),
        ('{"i":8,"d":[1,{"a":[]}]}', Answer(8, "resolve", [1, {"a": []}])),
        ('{"i":8,"d":1,"_":1}', Answer(8, "resolve", 1)),
        ('{"i":8,"d":1,"c":"room"}', Answer(8, "resolve", 1)),
        ('{"i":7,"e":"boom"}', Answer(7, "reject", error=err("boom"))),
        ('{"i":7,"e":null}', Answer(7, "reject", error=err(None))),
        ('{"i":7,"e":{"message":"boom"},"_":1}', Answer(7, "reject", error=msg("boom"))),
        ('{"i":7,"e":{"message":"boom"},"_":true}', Answer(7, "reject", error=msg("boom"))),
        ('{"i":7,"e":{"code":401}}', Answer(7, "reject", error=err({"code": 401}))),
        # e wins over d and h
        ('{"i":7,"e":"boom","d":1}', Answer(7, "reject", error=err("boom"))),
        ('{"i":7,"e":"boom","h":1}', Answer(7, "reject", error=err("boom"))),
        ('{"i":7,"h":1,"d":2,"e":0}', Answer(7, "reject", error=err(0))),
        # channel creation, even with d
        ('{"i":9,"h":1}', Answer(9, "channel")),
        ('{"i":9,"h":9}', Answer(9, "channel")),
        ('{"i":9,"h":"1"}', Answer(9, "channel")),
        ('{"i":9,"h":1,"d":5}', Answer(9, "channel")),
        ('{"i":9,"h":1,"c":"room"}', Answer(9, "channel")),
    ],
)
def test_step10_answers(frame: str, expected: Answer) -> None:
    check(frame, expected)
    result = decode(frame)
    assert isinstance(result, Answer)
    assert (result.id, result.kind, result.value, result.error) == (
        expected.id,
        expected.kind,
        expected.value,
        expected.error,
    )


# -- input rules (§1.2) --------------------------------------------------------------------------


@pytest.mark.parametrize("ws", [" ", "\n", "\r\n", "\t", " \t\r\n "])
def test_leading_and_trailing_whitespace(ws: str) -> None:
    check(f'{ws}{{"a":["x"]}}', ev("x"))
    check(f'{{"a":["x"]}}{ws}', ev("x"))
    check(f'{ws}{{"i":1,"d":2}}{ws}', Answer(1, "resolve", 2))
    check(f'{{{ws}"a"{ws}:{ws}[{ws}"x"{ws},{ws}1{ws}]{ws},{ws}"i"{ws}:{ws}2{ws}}}', ev("x", 1, id=2))


def test_go_coder_newline() -> None:
    check('{"i":3,"e":{"message":"oops"},"_":true}\n', Answer(3, "reject", error=msg("oops")))


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b'{"a":["x",1]}', ev("x", 1)),
        (bytearray(b'{"a":["x"],"i":2}'), ev("x", id=2)),
        (memoryview(b'{"i":2,"d":3}'), Answer(2, "resolve", 3)),
        ('{"a":["\u00e9\u65e5\U0001f600"]}'.encode(), ev("\u00e9\u65e5\U0001f600")),
        (b' {"h":5,"x":"r"}\n', Abort(5, err("r"))),
        (b"", NOT_JSON),
        (b"xx", NOT_JSON),
        (b'{"a":["x",NaN]}', NOT_JSON),
        (b'\xef\xbb\xbf{"a":["x"]}', NOT_JSON),  # UTF-8 BOM
        (b"[1]", NOT_OBJECT),
        (b'{"ws-wrapper":false}', FOREIGN),
        (b"\xff", BAD_UTF8),
        (b"\xc3", BAD_UTF8),  # truncated sequence
        (b'{"a":["\xff"]}', BAD_UTF8),
        (b'{"a":["\xc0\xaf"]}', BAD_UTF8),  # overlong encoding
        (b'{"a":["\xed\xa0\x80"]}', BAD_UTF8),  # encoded surrogate
        (b'{"a":["x"]}\x80', BAD_UTF8),
        ('{"a":["é"]}'.encode("latin-1"), BAD_UTF8),
        ('{"a":["x"]}'.encode("utf-16"), BAD_UTF8),
    ],
)
def test_binary_frames(frame: bytes, expected: object) -> None:
    check(frame, expected)


def test_escaped_lone_surrogates_are_accepted() -> None:
    check('{"a":["\\ud800","\\udfff"]}', ev("\ud800", "\udfff"))


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"a":["x"],"a":["y"]}', ev("y")),
        ('{"a":["x"],"a":null}', BAD_A),
        ('{"a":null,"a":["x"]}', ev("x")),
        ('{"i":1,"i":2,"d":3}', Answer(2, "resolve", 3)),
        ('{"i":2,"i":"x","d":3}', NO_ID),
        ('{"i":2,"d":3,"d":4}', Answer(2, "resolve", 4)),
        ('{"h":0,"h":5,"x":1}', Abort(5, err(1))),
        ('{"h":5,"h":0,"x":1}', BAD_H),
        ('{"i":2,"e":{"message":"m"},"_":1,"_":0}', Answer(2, "reject", error=err({"message": "m"}))),
        ('{"a":["x"],"c":"one","c":"two"}', ev("x", channel="two")),
    ],
)
def test_duplicate_keys_last_wins(frame: str, expected: object) -> None:
    check(frame, expected)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"a":["x"],"z":1,"foo":{"bar":[]},"A":2}', ev("x")),
        ('{"i":1,"d":2,"extra":null,"I":5}', Answer(1, "resolve", 2)),
        ('{"i":1,"x":"r","y":1}', Cancel(1, err("r"))),
        ('{"z":1}', NO_ID),
    ],
)
def test_extra_keys_are_ignored(frame: str, expected: object) -> None:
    check(frame, expected)


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deeply_nested_json_never_raises(depth: int) -> None:
    check("[" * depth + "]" * depth, NOT_JSON)
    check('{"a":["x",' + "[" * depth + "]" * depth + "]}", NOT_JSON)
    check('{"i":1,"d":' + '{"k":' * depth + "1" + "}" * depth + "}", NOT_JSON)
    check(("[" * depth).encode(), NOT_JSON)


def test_moderately_nested_json_is_decoded() -> None:
    nested: Any = 1
    for _ in range(100):
        nested = [nested]
    check('{"a":["x",' + json.dumps(nested) + "]}", ev("x", nested))


def _int_digit_limit() -> int:
    getter = getattr(sys, "get_int_max_str_digits", None)
    return getter() if getter is not None else 0


def test_huge_integer_strings_never_raise() -> None:
    # Beyond Python's int() digit limit, integers are read as floats, as JavaScript reads them.
    digits = "9" * 5000
    limited = 0 < _int_digit_limit() < len(digits)
    big = float("inf") if limited else int(digits)
    check('{"a":["x",' + digits + "]}", ev("x", big))
    check('{"a":["x",' + digits + '],"i":2}', ev("x", big, id=2))
    check('{"i":' + digits + ',"d":1}', NO_ID)
    check('{"a":["x"],"h":' + digits + "}", BAD_H)
    check('{"a":["x"],"h":"' + digits + '"}', BAD_H)
    check(
        '{"i":1,"e":{"message":"m","n":' + digits + '},"_":1}',
        Answer(1, "reject", error=ErrorPayload({"message": "m", "n": big}, True)),
    )


def test_big_integers_within_the_digit_limit_are_exact() -> None:
    big = int("9" * 1000)
    check('{"a":["x",' + str(big) + "]}", ev("x", big))
    check('{"i":1,"d":-' + str(big) + "}", Answer(1, "resolve", -big))


def test_out_of_range_floats_decode_without_raising() -> None:
    result = decode('{"i":1,"d":1e400}')
    assert isinstance(result, Answer)
    assert result.kind == "resolve"
    assert math.isinf(result.value)
    assert result.value > 0
    check('{"i":1,"d":1e-400}', Answer(1, "resolve", 0.0))


# =================================================================================================
# §3.2 events and requests: target and reserved names


@pytest.mark.parametrize(
    ("frame", "channel", "anon"),
    [
        ('{"a":["x"]}', None, None),
        ('{"a":["x"],"c":null}', None, None),
        ('{"a":["x"],"c":"room"}', "room", None),
        ('{"a":["x"],"c":""}', "", None),
        ('{"a":["x"],"c":5}', 5, None),
        ('{"a":["x"],"c":"5"}', "5", None),
        ('{"a":["x"],"c":false}', False, None),
        ('{"a":["x"],"c":0}', 0, None),
        ('{"a":["x"],"c":[]}', [], None),
        ('{"a":["x"],"c":{"n":1}}', {"n": 1}, None),
        # h set: c is ignored
        ('{"a":["x"],"c":"room","h":5}', None, 5),
        ('{"a":["x"],"h":5,"c":"room"}', None, 5),
        ('{"a":["x"],"c":5,"h":"5"}', None, 5),
        ('{"a":["x"],"c":null,"h":5}', None, 5),
        ('{"a":["x"],"c":"room","h":null}', "room", None),
    ],
)
def test_target(frame: str, channel: object, anon: int | None) -> None:
    check(frame, ev("x", channel=channel, anon=anon))


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_names_only_on_root(name: str) -> None:
    for frame, reserved in [
        (f'{{"a":["{name}"]}}', True),
        (f'{{"a":["{name}",1],"i":4}}', True),
        (f'{{"a":["{name}"],"c":null}}', True),
        (f'{{"a":["{name}"],"h":null}}', True),
        (f'{{"a":["{name}"],"c":"chat"}}', False),
        (f'{{"a":["{name}"],"c":""}}', False),
        (f'{{"a":["{name}"],"c":false}}', False),
        (f'{{"a":["{name}"],"h":5}}', False),
        (f'{{"a":["{name}"],"h":5,"i":6}}', False),
        (f'{{"a":["{name}"],"c":"chat","h":5}}', False),
    ]:
        result = decode(frame)
        assert isinstance(result, Incoming)
        assert result.is_reserved is reserved, frame


@pytest.mark.parametrize(
    "name", ['"Open"', '"OPEN"', '"opened"', '" open"', '"connect "', '""', '"x"', "5", "null", '["open"]']
)
def test_other_names_are_not_reserved(name: str) -> None:
    result = decode(f'{{"a":[{name}]}}')
    assert isinstance(result, Incoming)
    assert result.is_reserved is False


def test_reserved_names_constant() -> None:
    assert frozenset({"open", "connect", "message", "error", "close", "disconnect"}) == RESERVED_NAMES


# =================================================================================================
# §1.1 output rules and §2 golden frames


GOLDEN = [
    # §2
    (lambda: encode_event("chat", ["bob", "hi"]), '{"a":["chat","bob","hi"]}'),
    (lambda: encode_event("chat", ["hi"], channel="room"), '{"a":["chat","hi"],"c":"room"}'),
    (lambda: encode_event("add", [1, 2], id=7), '{"a":["add",1,2],"i":7}'),
    (lambda: encode_event("mul", [2, 3], channel="math", id=8), '{"a":["mul",2,3],"c":"math","i":8}'),
    (lambda: encode_resolution(7, 3), '{"i":7,"d":3}'),
    (lambda: encode_resolution(8, None), '{"i":8,"d":null}'),
    (lambda: encode_rejection(7, msg("boom")), '{"i":7,"e":{"message":"boom"},"_":1}'),
    (lambda: encode_rejection(7, error_from_value("boom")), '{"i":7,"e":"boom"}'),
    (lambda: encode_rejection(7, error_from_value({"code": 401})), '{"i":7,"e":{"code":401}}'),
    (lambda: encode_cancel(7), '{"i":7,"x":{"message":"Request aborted"},"_":1}'),
    (lambda: encode_cancel(7, error_from_value("user cancelled")), '{"i":7,"x":"user cancelled"}'),
    (lambda: encode_creation(9), '{"i":9,"h":1}'),
    (lambda: encode_event("data", [1], anon=9), '{"a":["data",1],"h":9}'),
    (lambda: encode_event("more", [], anon=9, id=10), '{"a":["more"],"h":9,"i":10}'),
    (lambda: encode_resolution(10, "ok"), '{"i":10,"d":"ok"}'),
    (lambda: encode_abort(9), '{"h":9,"x":{"message":"Request aborted"},"_":1}'),
    (lambda: encode_abort(9, error_from_value("bye")), '{"h":9,"x":"bye"}'),
    # §9.1
    (lambda: encode_creation(5), '{"i":5,"h":1}'),
    (lambda: encode_event("add", [1, 2], anon=5, id=6), '{"a":["add",1,2],"h":5,"i":6}'),
    (lambda: encode_resolution(6, 3), '{"i":6,"d":3}'),
    (lambda: encode_cancel(6, None), '{"i":6,"x":{"message":"Request aborted"},"_":1}'),
    (lambda: encode_abort(5, None), '{"h":5,"x":{"message":"Request aborted"},"_":1}'),
    (
        lambda: encode_abort(5, msg(proto.unknown_anon_text(5))),
        '{"h":5,"x":{"message":"Anonymous channel \'5\' does not exist"},"_":1}',
    ),
    (
        lambda: encode_rejection(6, msg(proto.unknown_anon_text(5))),
        '{"i":6,"e":{"message":"Anonymous channel \'5\' does not exist"},"_":1}',
    ),
    # §10.1
    (lambda: encode_event("stream", [3, 5], id=1), '{"a":["stream",3,5],"i":1}'),
    (lambda: encode_creation(1), '{"i":1,"h":1}'),
    (lambda: encode_event("start", [], anon=1), '{"a":["start"],"h":1}'),
    (
        lambda: encode_event("next", [{"value": 3, "done": False}], anon=1),
        '{"a":["next",{"value":3,"done":false}],"h":1}',
    ),
    (lambda: encode_event("next", [{"done": True}], anon=1), '{"a":["next",{"done":true}],"h":1}'),
    (
        lambda: encode_abort(1, error_from_exception(RuntimeError("gen blew up"))),
        '{"h":1,"x":{"message":"gen blew up"},"_":1}',
    ),
    # §9.4, §13, §3.2, §7.2 reply frames
    (
        lambda: encode_abort(3, msg(proto.overflow_text(3))),
        '{"h":3,"x":{"message":"Anonymous channel \'3\' buffer overflow; consumer is too slow"},"_":1}',
    ),
    (
        lambda: encode_rejection(4, msg(proto.TOO_MANY_REQUESTS)),
        '{"i":4,"e":{"message":"Too many concurrent requests"},"_":1}',
    ),
    (
        lambda: encode_rejection(4, msg(proto.unknown_channel_text("C"))),
        '{"i":4,"e":{"message":"Channel \'C\' does not exist"},"_":1}',
    ),
    (
        lambda: encode_rejection(4, msg(proto.no_listener_text("N", "C"))),
        '{"i":4,"e":{"message":"No event listener for \'N\' on channel \'C\'"},"_":1}',
    ),
    # an anonymous id takes the place of c
    (lambda: encode_event("x", [], channel="room", anon=3), '{"a":["x"],"h":3}'),
    (lambda: encode_event("x", [], channel=None, anon=None, id=None), '{"a":["x"]}'),
    (lambda: encode_event("x", [None]), '{"a":["x",null]}'),
    (lambda: encode_creation(MAX_ID), '{"i":9007199254740991,"h":1}'),
]


@pytest.mark.parametrize(("make", "expected"), GOLDEN)
def test_golden_frames(make: Any, expected: str) -> None:
    frame = make()
    assert frame == expected
    # and what we send is what we would accept
    assert not isinstance(decode(frame), Ignored)


def test_golden_frames_decode_back() -> None:
    check(encode_event("chat", ["hi"], channel="room"), ev("chat", "hi", channel="room"))
    check(encode_creation(9), Answer(9, "channel"))
    check(encode_abort(9), Abort(9, DEFAULT_ABORT_REASON))
    check(encode_cancel(7), Cancel(7, DEFAULT_ABORT_REASON))


def test_output_is_compact() -> None:
    assert (
        encode_event("x", [{"a": [1, 2], "b": {"c": None}}, "a b", [], {}], channel="r r", id=3)
        == '{"a":["x",{"a":[1,2],"b":{"c":null}},"a b",[],{}],"c":"r r","i":3}'
    )
    assert encode_resolution(1, {"k": [1, {"l": "v"}]}) == '{"i":1,"d":{"k":[1,{"l":"v"}]}}'
    assert encode_rejection(1, error_from_value({"a": [1, 2]})) == '{"i":1,"e":{"a":[1,2]}}'
    assert compact_json({"a": [1, 2], "b": "c d"}) == '{"a":[1,2],"b":"c d"}'


def test_output_is_ascii_only() -> None:
    assert (
        encode_event("\u00e9", ["\u65e5\u672c", "\ud800", "\udfff", "\U0001f600", "\n\t\x00"])
        == '{"a":["\\u00e9","\\u65e5\\u672c","\\ud800","\\udfff","\\ud83d\\ude00","\\n\\t\\u0000"]}'
    )
    assert encode_event("x", [], channel="\u00e7\ud800") == '{"a":["x"],"c":"\\u00e7\\ud800"}'
    assert encode_resolution(1, {"\u00e9": "\ud800"}) == '{"i":1,"d":{"\\u00e9":"\\ud800"}}'
    assert encode_rejection(1, msg("\u00e9\udc00")) == '{"i":1,"e":{"message":"\\u00e9\\udc00"},"_":1}'
    assert encode_cancel(1, error_from_value("\u00e9")) == '{"i":1,"x":"\\u00e9"}'
    assert encode_abort(1, error_from_value("\ud800")) == '{"h":1,"x":"\\ud800"}'
    assert compact_json("\u00e9") == '"\\u00e9"'


def test_big_integers_are_written_exactly() -> None:
    assert encode_resolution(1, 2**64) == '{"i":1,"d":18446744073709551616}'
    assert encode_event("x", [-(2**60), 2**53]) == '{"a":["x",-1152921504606846976,9007199254740992]}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_raise(bad: float) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(encoder_error(bad)) + "$"):
        encode_event("x", [bad])
    with pytest.raises(ValueError):
        encode_event("x", [{"v": [1, bad]}], id=3)
    with pytest.raises(ValueError):
        encode_event("x", [bad], channel="r")
    with pytest.raises(ValueError):
        encode_event("x", [bad], anon=2, id=3)
    with pytest.raises(ValueError, match="^" + re.escape(encoder_error(bad)) + "$"):
        encode_resolution(1, bad)
    with pytest.raises(ValueError):
        encode_resolution(1, {"k": [bad]})
    with pytest.raises(ValueError):
        compact_json(bad)


def test_unencodable_types_raise() -> None:
    with pytest.raises(TypeError, match=r"^Object of type object is not JSON serializable$"):
        encode_resolution(1, object())
    with pytest.raises(TypeError, match=r"^Object of type set is not JSON serializable$"):
        encode_event("x", [{1, 2}])
    with pytest.raises(TypeError, match=r"^Object of type bytes is not JSON serializable$"):
        encode_event("x", [b"raw"], id=1)


def test_error_flag_true() -> None:
    assert encode_rejection(1, msg("m"), error_flag=True) == '{"i":1,"e":{"message":"m"},"_":true}'
    assert encode_cancel(2, error_flag=True) == '{"i":2,"x":{"message":"Request aborted"},"_":true}'
    assert encode_abort(3, error_flag=True) == '{"h":3,"x":{"message":"Request aborted"},"_":true}'
    assert (
        encode_abort(3, error_from_exception(ValueError("v")), error_flag=True)
        == '{"h":3,"x":{"message":"v"},"_":true}'
    )
    # raw values never carry the flag
    assert encode_rejection(1, error_from_value("raw"), error_flag=True) == '{"i":1,"e":"raw"}'
    assert encode_cancel(2, error_from_value({"c": 1}), error_flag=True) == '{"i":2,"x":{"c":1}}'
    assert encode_abort(3, error_from_value(0), error_flag=True) == '{"h":3,"x":0}'
    check(encode_rejection(1, msg("m"), error_flag=True), Answer(1, "reject", error=msg("m")))


def test_c_only_when_named() -> None:
    assert "c" not in json.loads(encode_event("x", []))
    assert "c" not in json.loads(encode_event("x", [], id=1))
    assert "c" not in json.loads(encode_event("x", [], anon=2))
    assert json.loads(encode_event("x", [], channel="n"))["c"] == "n"


ALL_FRAMES = [
    encode_event("x", [None], id=1),
    encode_event("x", [], channel="c"),
    encode_event("x", [], anon=1, id=2),
    encode_resolution(1, None),
    encode_rejection(1, error_from_value(None)),
    encode_rejection(1, ErrorPayload(None)),
    encode_rejection(1, ErrorPayload(None, True)),
    encode_rejection(1, error_from_value("raw")),
    encode_rejection(1, error_from_value({"message": "m"}, True)),
    encode_rejection(1, error_from_exception(ValueError())),
    encode_rejection(1, ErrorPayload(object())),
    encode_cancel(1),
    encode_cancel(1, None),
    encode_cancel(1, ErrorPayload(None)),
    encode_cancel(1, ErrorPayload(None, True)),
    encode_cancel(1, error_from_value("r")),
    encode_cancel(1, ErrorPayload(math.nan)),
    encode_abort(1),
    encode_abort(1, ErrorPayload(None)),
    encode_abort(1, error_from_value([1])),
    encode_abort(1, ErrorPayload(object(), True)),
    encode_creation(1),
]


@pytest.mark.parametrize("frame", ALL_FRAMES)
def test_output_invariants(frame: str) -> None:
    obj = json.loads(frame)  # valid JSON ...
    assert frame == json.dumps(obj, separators=(",", ":"))  # ... compact and ASCII
    assert set(obj) <= {"a", "c", "i", "d", "e", "_", "x", "h"}
    assert obj.get("_", 1) == 1
    assert type(obj.get("_", 1)) is int
    for key in ("c", "e", "x", "i", "h"):
        assert obj.get(key, "absent") is not None, key
    for key in ("i", "h"):
        if key in obj:
            assert is_valid_id(obj[key])
    if "_" in obj:
        assert isinstance(obj.get("e", obj.get("x")), dict)


def test_key_order() -> None:
    def keys(frame: str) -> list[str]:
        return list(json.loads(frame))

    assert keys(encode_event("x", [], channel="c", id=1)) == ["a", "c", "i"]
    assert keys(encode_event("x", [], anon=2, id=1)) == ["a", "h", "i"]
    assert keys(encode_resolution(1, 2)) == ["i", "d"]
    assert keys(encode_rejection(1, msg("m"))) == ["i", "e", "_"]
    assert keys(encode_cancel(1)) == ["i", "x", "_"]
    assert keys(encode_abort(1)) == ["h", "x", "_"]
    assert keys(encode_creation(1)) == ["i", "h"]


# =================================================================================================
# §6 error encoding


def test_error_from_exception_default() -> None:
    assert error_from_exception(ValueError("boom")) == msg("boom")
    assert error_from_exception(ValueError()) == msg("ValueError")
    assert error_from_exception(ValueError("")) == msg("ValueError")
    assert error_from_exception(KeyError("k")) == msg("'k'")
    assert error_from_exception(ValueError("a", 2)) == msg("('a', 2)")
    assert error_from_exception(RuntimeError("\u00e9")) == msg("\u00e9")

    class CustomError(Exception):
        pass

    assert error_from_exception(CustomError()) == msg("CustomError")
    assert error_from_exception(CustomError("x"), None) == msg("x")


def test_error_from_exception_with_failing_str() -> None:
    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    assert error_from_exception(BadStr()) == msg("BadStr")


def test_error_from_exception_sends_no_other_keys() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        assert encode_rejection(3, error_from_exception(exc)) == '{"i":3,"e":{"message":"boom"},"_":1}'


def test_error_to_json_hook_is_used_when_valid() -> None:
    seen: list[BaseException] = []
    exc = ValueError("boom")

    def hook(e: BaseException) -> Any:
        seen.append(e)
        return {"message": "custom", "code": 3, "name": "ValueError"}

    payload = error_from_exception(exc, hook)
    assert payload == ErrorPayload({"message": "custom", "code": 3, "name": "ValueError"}, True)
    assert seen == [exc]
    assert seen[0] is exc
    assert (
        encode_rejection(1, payload) == '{"i":1,"e":{"message":"custom","code":3,"name":"ValueError"},"_":1}'
    )
    assert error_from_exception(exc, lambda e: {"message": ""}) == ErrorPayload({"message": ""}, True)


def _raising_hook(exc: BaseException) -> Any:
    raise RuntimeError("hook failed")


@pytest.mark.parametrize(
    "hook",
    [
        _raising_hook,
        lambda e: None,
        lambda e: "custom",
        lambda e: ["message", "custom"],
        lambda e: {},
        lambda e: {"code": 3},
        lambda e: {"message": None},
        lambda e: {"message": 5},
        lambda e: {"message": {"text": "m"}},
        lambda e: {"message": "m", "extra": math.nan},
        lambda e: {"message": "m", "extra": object()},
        lambda e: {"message": "m", ("tuple", "key"): 1},
    ],
)
def test_error_to_json_hook_falls_back(hook: Any) -> None:
    assert error_from_exception(ValueError("boom"), hook) == msg("boom")
    assert error_from_exception(ValueError(), hook) == msg("ValueError")


def test_error_from_value() -> None:
    assert error_from_value("x") == ErrorPayload("x", False)
    assert error_from_value({"code": 42}) == ErrorPayload({"code": 42}, False)
    assert error_from_value({"message": "m"}, True) == ErrorPayload({"message": "m"}, True)
    assert error_from_value("m", True) == ErrorPayload("m", False)
    assert error_from_value(["m"], True) == ErrorPayload(["m"], False)
    assert error_from_value(None) == ErrorPayload({"message": "Error"}, True)
    assert error_from_value(None, True) == ErrorPayload({"message": "Error"}, True)
    for falsy in (0, False, "", [], {}):
        assert error_from_value(falsy) == ErrorPayload(falsy, False)


@pytest.mark.parametrize(
    ("value", "frame"),
    [
        ("boom", '{"i":1,"e":"boom"}'),
        (0, '{"i":1,"e":0}'),
        (False, '{"i":1,"e":false}'),
        ("", '{"i":1,"e":""}'),
        ([1, "a"], '{"i":1,"e":[1,"a"]}'),
        ({}, '{"i":1,"e":{}}'),
        ({"message": "not flagged"}, '{"i":1,"e":{"message":"not flagged"}}'),
        (1.5, '{"i":1,"e":1.5}'),
        (None, '{"i":1,"e":{"message":"Error"},"_":1}'),
    ],
)
def test_raw_rejection_values(value: Any, frame: str) -> None:
    assert encode_rejection(1, error_from_value(value)) == frame


def test_none_rejection_is_never_null() -> None:
    # §6.2, §6.5, §1.1 rule 5: "e":null is never sent
    assert encode_rejection(1, ErrorPayload(None)) == '{"i":1,"e":{"message":"Error"},"_":1}'
    assert (
        encode_rejection(1, ErrorPayload(None), error_flag=True) == '{"i":1,"e":{"message":"Error"},"_":true}'
    )


def test_none_reason_is_the_default() -> None:
    # §6.3, §6.5: "x":null is never sent
    default = '{"i":1,"x":{"message":"Request aborted"},"_":1}'
    assert encode_cancel(1) == default
    assert encode_cancel(1, None) == default
    assert encode_cancel(1, ErrorPayload(None)) == default
    assert encode_abort(2, ErrorPayload(None, True)) == '{"h":2,"x":{"message":"Request aborted"},"_":1}'


def test_is_error_requires_an_object() -> None:
    # §1.1: "_" only next to an error object; §6.4: is_error only for objects
    assert ErrorPayload("x", True).is_error is False
    assert ErrorPayload([1], True).is_error is False
    assert ErrorPayload(0, True).is_error is False
    assert ErrorPayload({}, True).is_error is True
    assert ErrorPayload({"m": 1}).is_error is False
    assert ErrorPayload("x", True).message == "x"
    assert encode_rejection(1, ErrorPayload("x", True)) == '{"i":1,"e":"x"}'
    assert encode_cancel(1, ErrorPayload(["x"], True)) == '{"i":1,"x":["x"]}'
    assert encode_abort(1, ErrorPayload(5, True), error_flag=True) == '{"h":1,"x":5}'


def test_default_abort_reason() -> None:
    assert ErrorPayload({"message": "Request aborted"}, True) == DEFAULT_ABORT_REASON
    assert DEFAULT_ABORT_REASON.message == "Request aborted"


def test_section_6_3_examples() -> None:
    assert encode_cancel(1, error_from_value("user cancelled")) == '{"i":1,"x":"user cancelled"}'
    assert (
        encode_cancel(2, error_from_exception(Exception("user error")))
        == '{"i":2,"x":{"message":"user error"},"_":1}'
    )
    assert encode_cancel(3, error_from_value({"code": 42})) == '{"i":3,"x":{"code":42}}'
    assert encode_abort(4, error_from_value("user cancelled")) == '{"h":4,"x":"user cancelled"}'
    assert encode_abort(5, error_from_value(7)) == '{"h":5,"x":7}'


def test_section_6_1_unencodable_result_example() -> None:
    with pytest.raises(TypeError) as info:
        encode_resolution(5, object())
    assert (
        encode_rejection(5, msg(str(info.value)))
        == '{"i":5,"e":{"message":"Object of type object is not JSON serializable"},"_":1}'
    )


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (object(), "Object of type object is not JSON serializable"),
        (math.nan, encoder_error(math.nan)),
        (math.inf, encoder_error(math.inf)),
        ({"message": "m", "obj": object()}, "Object of type object is not JSON serializable"),
        ([1, {b"k"}], "Object of type set is not JSON serializable"),
        (_circular(), "Circular reference detected"),
    ],
)
def test_unencodable_e_and_x_are_replaced(value: Any, text: str) -> None:
    body = json.dumps({"message": text}, separators=(",", ":"))
    for is_error in (False, True):
        payload = ErrorPayload(value, is_error)
        assert encode_rejection(1, payload) == f'{{"i":1,"e":{body},"_":1}}'
        assert encode_rejection(1, payload, error_flag=True) == f'{{"i":1,"e":{body},"_":true}}'
        assert encode_cancel(2, payload) == f'{{"i":2,"x":{body},"_":1}}'
        assert encode_abort(3, payload) == f'{{"h":3,"x":{body},"_":1}}'
        assert encode_abort(3, payload, error_flag=True) == f'{{"h":3,"x":{body},"_":true}}'


# -- §6.4 decoding ----------------------------------------------------------------------------

DECODE_ERROR_TABLE = [
    # (value, flag, is_error, message)
    ({"message": "oops"}, 1, True, "oops"),
    ({"message": "oops"}, True, True, "oops"),
    ({"message": "oops"}, "x", True, "oops"),
    ({"message": "oops"}, "0", True, "oops"),
    ({"message": "oops"}, 2, True, "oops"),
    ({"message": "oops"}, -1, True, "oops"),
    ({"message": "oops"}, 0.5, True, "oops"),
    ({"message": "oops"}, [], True, "oops"),
    ({"message": "oops"}, {}, True, "oops"),
    ({"message": "oops"}, 0, False, '{"message":"oops"}'),
    ({"message": "oops"}, 0.0, False, '{"message":"oops"}'),
    ({"message": "oops"}, None, False, '{"message":"oops"}'),
    ({"message": "oops"}, "", False, '{"message":"oops"}'),
    ({"message": "oops"}, False, False, '{"message":"oops"}'),
    ({}, 1, True, ""),
    ({"code": 42}, 1, True, ""),
    ({"message": ""}, 1, True, ""),
    ({"message": 5}, 1, True, "5"),
    ({"message": None}, 1, True, "null"),
    ({"message": True}, 1, True, "true"),
    ({"message": {"a": 1}}, 1, True, '{"a":1}'),
    ({"message": ["a", 1]}, 1, True, '["a",1]'),
    ({"message": "\u00e9", "stack": "s"}, 1, True, "\u00e9"),
    ("oops", 1, False, "oops"),
    ("oops", None, False, "oops"),
    ("", None, False, ""),
    (["a"], 1, False, '["a"]'),
    ([{"message": "m"}], True, False, '[{"message":"m"}]'),
    (None, None, False, "null"),
    (None, 1, False, "null"),
    ({"code": 42}, None, False, '{"code":42}'),
    ({"code": 42}, 0, False, '{"code":42}'),
    (42, None, False, "42"),
    (42, 1, False, "42"),
    (-1.5, None, False, "-1.5"),
    (True, None, False, "true"),
    (False, 1, False, "false"),
    (0, None, False, "0"),
]


@pytest.mark.parametrize(("value", "flag", "is_error", "message"), DECODE_ERROR_TABLE)
def test_decode_error_table(value: Any, flag: Any, is_error: bool, message: str) -> None:
    payload = decode_error(value, flag)
    assert payload.value == value
    assert payload.is_error is is_error
    assert payload.message == message
    # the same through decode, for e and for x
    body = json.dumps(value, separators=(",", ":"))
    fl = "" if flag is None else ',"_":' + json.dumps(flag, separators=(",", ":"))
    check(f'{{"i":7,"e":{body}{fl}}}', Answer(7, "reject", error=ErrorPayload(value, is_error)))
    check(f'{{"i":7,"x":{body}{fl}}}', Cancel(7, ErrorPayload(value, is_error)))
    check(f'{{"h":7,"x":{body}{fl}}}', Abort(7, ErrorPayload(value, is_error)))
    answer = decode(f'{{"i":7,"e":{body}{fl}}}')
    assert isinstance(answer, Answer)
    assert answer.error is not None
    assert answer.error.message == message


def test_flag_null_is_falsy() -> None:
    check('{"i":1,"e":{"message":"m"},"_":null}', Answer(1, "reject", error=err({"message": "m"})))


def test_strings_and_error_objects_share_the_message() -> None:
    # §6.4: JS 3/4 raw string, Go <=1.3 string, Go >=1.4 error object
    for frame, is_error in [
        ('{"i":1,"e":"oops"}', False),
        ('{"i":1,"e":{"message":"oops"},"_":true}', True),
        ('{"i":1,"e":{"message":"oops"},"_":1}', True),
    ]:
        answer = decode(frame)
        assert isinstance(answer, Answer)
        assert answer.error is not None
        assert (answer.error.message, answer.error.is_error) == ("oops", is_error)


# =================================================================================================
# §7.2 and other texts


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("add",), "No event listener for 'add'"),
        (("add", "math"), "No event listener for 'add' on channel 'math'"),
        (("add", None, 5), "No event listener for 'add' on channel '5'"),
        (("add", "math", 5), "No event listener for 'add' on channel '5'"),
        (("",), "No event listener for ''"),
        (("a'b",), "No event listener for 'a'b'"),
        ((5,), "No event listener for '5'"),
        ((None,), "No event listener for 'null'"),
        ((True,), "No event listener for 'true'"),
        ((1.5,), "No event listener for '1.5'"),
        (([1, "x"],), "No event listener for '[1,\"x\"]'"),
        (({"a": 1},), "No event listener for '{\"a\":1}'"),
        (("x", 5), "No event listener for 'x' on channel '5'"),
        (("x", ""), "No event listener for 'x' on channel ''"),
        (("x", False), "No event listener for 'x' on channel 'false'"),
        ((5, "c", 9007199254740991), "No event listener for '5' on channel '9007199254740991'"),
        ((None, None, 3), "No event listener for 'null' on channel '3'"),
        ((False, "c"), "No event listener for 'false' on channel 'c'"),
    ],
)
def test_no_listener_text(args: tuple[Any, ...], text: str) -> None:
    assert proto.no_listener_text(*args) == text


@pytest.mark.parametrize(
    ("channel", "text"),
    [
        ("room", "Channel 'room' does not exist"),
        ("", "Channel '' does not exist"),
        ("5", "Channel '5' does not exist"),
        (5, "Channel '5' does not exist"),
        (True, "Channel 'true' does not exist"),
        (False, "Channel 'false' does not exist"),
        (0, "Channel '0' does not exist"),
        ([1], "Channel '[1]' does not exist"),
        ({"a": "b"}, 'Channel \'{"a":"b"}\' does not exist'),
    ],
)
def test_unknown_channel_text(channel: Any, text: str) -> None:
    assert proto.unknown_channel_text(channel) == text


def test_texts_from_decoded_frames() -> None:
    named = decode('{"a":["x"],"c":5,"i":1}')
    assert isinstance(named, Incoming)
    assert proto.unknown_channel_text(named.channel) == "Channel '5' does not exist"
    numeric = decode('{"a":[5],"i":1}')
    assert isinstance(numeric, Incoming)
    assert proto.no_listener_text(numeric.name, numeric.channel, numeric.anon) == "No event listener for '5'"
    anon = decode('{"a":["n"],"h":"12","i":1}')
    assert isinstance(anon, Incoming)
    assert (
        proto.no_listener_text(anon.name, anon.channel, anon.anon)
        == "No event listener for 'n' on channel '12'"
    )
    null_name = decode('{"a":[null],"c":"room","i":1}')
    assert isinstance(null_name, Incoming)
    assert (
        proto.no_listener_text(null_name.name, null_name.channel, null_name.anon)
        == "No event listener for 'null' on channel 'room'"
    )


def test_channel_texts() -> None:
    assert proto.unknown_anon_text(5) == "Anonymous channel '5' does not exist"
    assert proto.anon_exists_text(5) == "Anonymous channel '5' already exists"
    assert proto.overflow_text(3) == "Anonymous channel '3' buffer overflow; consumer is too slow"


def test_constant_texts() -> None:
    assert proto.TOO_MANY_REQUESTS == "Too many concurrent requests"
    assert proto.REQUEST_TIMED_OUT == "Request timed out"
    assert proto.ANON_UNSUPPORTED == "Anonymous channels are not supported by this peer"
    assert proto.NOT_ITERABLE == "iterableHandler: handler must return a sync or async iterable"
    assert proto.ITERATION_CLOSED == "channel closed before iteration completed"
    assert proto.EMIT_CLOSED == "Cannot emit on a closed channel"
    assert proto.REQUEST_CLOSED == "Cannot send request on a closed channel"
    assert DEFAULT_ABORT_REASON.value == {"message": "Request aborted"}
    assert proto.message_payload("t") == ErrorPayload({"message": "t"}, True)


def test_render_name() -> None:
    assert render_name("a\"b'") == "a\"b'"
    assert render_name("") == ""
    assert render_name(None) == "null"
    assert render_name(False) == "false"
    assert render_name([1, {"k": None}]) == '[1,{"k":null}]'


def test_is_valid_id() -> None:
    assert MAX_ID == 9007199254740991
    for value in (1, 2, MAX_ID):
        assert is_valid_id(value) is True
    for value in (0, -1, MAX_ID + 1, 2**64, True, False, 1.0, "1", None, [1]):
        assert is_valid_id(value) is False


# =================================================================================================
# §5 names


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_check_event_name_reserved(name: str) -> None:
    with pytest.raises(ValueError, match=f"^'{name}' is a reserved event name on the root channel$"):
        proto.check_event_name(name, root=True)
    assert proto.check_event_name(name, root=False) == name


@pytest.mark.parametrize("root", [True, False])
def test_check_event_name(root: bool) -> None:
    for name in ("x", "Open", "opened", " ", "\u00e9"):
        assert proto.check_event_name(name, root=root) == name
    with pytest.raises(ValueError, match=r"^event name must not be empty$"):
        proto.check_event_name("", root=root)
    for bad, type_name in ((5, "int"), (None, "NoneType"), (b"x", "bytes"), (["x"], "list")):
        with pytest.raises(TypeError, match=f"^event name must be a string, not {type_name}$"):
            proto.check_event_name(bad, root=root)


def test_check_channel_name() -> None:
    for name in ("room", "5", "open", " "):
        assert proto.check_channel_name(name) == name
    with pytest.raises(ValueError, match=r"^channel name must not be empty$"):
        proto.check_channel_name("")
    for bad, type_name in ((5, "int"), (None, "NoneType"), (b"room", "bytes")):
        with pytest.raises(TypeError, match=f"^channel name must be a string, not {type_name}$"):
            proto.check_channel_name(bad)


# =================================================================================================
# §13 limits


def test_limits_defaults() -> None:
    limits = Limits()
    assert [f.name for f in attrs.fields(Limits)] == [
        "max_message_size",
        "max_concurrent_handlers",
        "channel_buffer_size",
        "send_queue_size",
    ]
    assert attrs.astuple(limits) == (1048576, 256, 256, 256)
    assert limits == Limits(1048576, 256, 256, 256)


def test_limits_are_frozen() -> None:
    limits = Limits()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        limits.max_message_size = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "field", ["max_message_size", "max_concurrent_handlers", "channel_buffer_size", "send_queue_size"]
)
def test_limits_validation(field: str) -> None:
    assert getattr(Limits(**{field: 1}), field) == 1
    assert getattr(Limits(**{field: 10**9}), field) == 10**9
    for bad in (0, -1, True, False, 1.0, "5", None):
        with pytest.raises(
            ValueError, match="^" + re.escape(f"{field} must be a positive integer, not {bad!r}")
        ):
            Limits(**{field: bad})


# =================================================================================================
# Properties (hypothesis)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers() | finite_floats | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=25,
)
valid_ids = st.integers(min_value=1, max_value=MAX_ID)
id_like = st.one_of(
    valid_ids,
    st.integers(),
    st.sampled_from(
        [0, -1, MAX_ID, MAX_ID + 1, 1.0, 1.5, True, False, None, "5", "0", "05", "", "abc", [], {}]
    ),
    st.from_regex(r"\A[0-9]{1,20}\Z"),
)
protocol_keys = st.sampled_from(["a", "c", "i", "d", "e", "x", "h", "_", "ws-wrapper", "z"])
frames = st.dictionaries(
    protocol_keys,
    st.one_of(json_values, id_like, st.lists(json_values, min_size=1, max_size=4)),
    max_size=8,
)


def reference_decode(obj: Any) -> object:
    """An independent transcription of PROTOCOL.md §3.1 steps 3-12 (without connection state)."""
    if not isinstance(obj, dict):
        return NOT_OBJECT
    if "ws-wrapper" in obj and obj["ws-wrapper"] is False:
        return FOREIGN
    i = obj.get("i")
    rid = i if isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**53 else None
    h = obj.get("h")
    if h is None:
        anon = None
    elif isinstance(h, int) and not isinstance(h, bool) and 0 < h < 2**53:
        anon = h
    elif isinstance(h, str) and re.fullmatch(r"0*[0-9]{1,16}", h) and 0 < int(h) < 2**53:
        anon = int(h)
    else:
        return BAD_H
    if "a" in obj:
        a = obj["a"]
        if not isinstance(a, list) or len(a) == 0:
            return BAD_A
        if anon is not None:
            return Incoming(a[0], tuple(a[1:]), rid, None, anon)
        return Incoming(a[0], tuple(a[1:]), rid, obj.get("c"), None)
    if "x" in obj:
        flag = obj.get("_")
        truthy = flag not in (None, False, 0, "") or isinstance(flag, (list, dict))
        reason = ErrorPayload(obj["x"], truthy and isinstance(obj["x"], dict))
        return Abort(anon, reason) if anon is not None else Cancel(rid, reason)
    if rid is None:
        return NO_ID
    if "e" in obj:
        flag = obj.get("_")
        truthy = flag not in (None, False, 0, "") or isinstance(flag, (list, dict))
        return Answer(rid, "reject", error=ErrorPayload(obj["e"], truthy and isinstance(obj["e"], dict)))
    if anon is not None:
        return Answer(rid, "channel")
    return Answer(rid, "resolve", obj.get("d"))


@given(st.text())
def test_decode_never_raises_on_text(frame: str) -> None:
    assert isinstance(decode(frame), INBOUND_TYPES)


@given(st.binary())
def test_decode_never_raises_on_bytes(frame: bytes) -> None:
    assert isinstance(decode(frame), INBOUND_TYPES)


@given(json_values)
def test_decode_never_raises_on_json_values(value: Any) -> None:
    text = json.dumps(value)
    result = decode(text)
    assert result == reference_decode(json.loads(text))
    assert decode(text.encode()) == result


@settings(max_examples=500)
@given(frames)
def test_decode_matches_the_reference_on_protocol_shaped_objects(obj: dict[str, Any]) -> None:
    text = json.dumps(obj)
    assert decode(text) == reference_decode(json.loads(text))


@given(frames, st.sampled_from(["", " ", "\n", "\r\n\t "]))
def test_decode_tolerates_surrounding_whitespace(obj: dict[str, Any], ws: str) -> None:
    text = json.dumps(obj)
    assert decode(ws + text + ws) == decode(text)


locations = st.one_of(
    st.just((None, None)),
    st.tuples(st.text(min_size=1), st.none()),
    st.tuples(st.none(), valid_ids),
)


@given(st.text(min_size=1), st.lists(json_values, max_size=5), locations, st.none() | valid_ids)
def test_event_and_request_round_trip(
    name: str, args: list[Any], location: tuple[str | None, int | None], rid: int | None
) -> None:
    channel, anon = location
    frame = encode_event(name, args, channel=channel, anon=anon, id=rid)
    assert frame.isascii()
    expected_keys = ["a"] + (["c"] if channel is not None else []) + (["h"] if anon is not None else [])
    assert list(json.loads(frame)) == expected_keys + (["i"] if rid is not None else [])
    result = decode(frame)
    assert result == Incoming(name, tuple(args), rid, channel, anon)
    assert isinstance(result, Incoming)
    assert result.is_reserved is (channel is None and anon is None and name in RESERVED_NAMES)


@given(valid_ids, json_values)
def test_resolution_round_trip(rid: int, value: Any) -> None:
    frame = encode_resolution(rid, value)
    assert frame.isascii()
    assert decode(frame) == Answer(rid, "resolve", value)


error_payloads = st.one_of(
    json_values.map(error_from_value),
    st.dictionaries(st.text(), json_values, max_size=4).map(lambda d: error_from_value(d, True)),
    st.text().map(lambda t: error_from_exception(RuntimeError(t))),
    st.builds(ErrorPayload, json_values, st.booleans()),
)


def sent(payload: ErrorPayload | None, default: ErrorPayload) -> ErrorPayload:
    return default if payload is None or payload.value is None else payload


@given(valid_ids, error_payloads, st.booleans())
def test_rejection_round_trip(rid: int, payload: ErrorPayload, error_flag: bool) -> None:
    frame = encode_rejection(rid, payload, error_flag=error_flag)
    assert frame.isascii()
    expected = sent(payload, ErrorPayload({"message": "Error"}, True))
    assert decode(frame) == Answer(rid, "reject", error=expected)
    flag = json.loads(frame).get("_", "absent")
    if not expected.is_error:
        assert flag == "absent"
    elif error_flag:
        assert flag is True
    else:
        assert type(flag) is int
        assert flag == 1


@given(valid_ids, st.none() | error_payloads, st.booleans())
def test_cancel_round_trip(rid: int, reason: ErrorPayload | None, error_flag: bool) -> None:
    frame = encode_cancel(rid, reason, error_flag=error_flag)
    assert frame.isascii()
    assert decode(frame) == Cancel(rid, sent(reason, DEFAULT_ABORT_REASON))


@given(valid_ids, st.none() | error_payloads, st.booleans())
def test_abort_round_trip(anon: int, reason: ErrorPayload | None, error_flag: bool) -> None:
    frame = encode_abort(anon, reason, error_flag=error_flag)
    assert frame.isascii()
    assert decode(frame) == Abort(anon, sent(reason, DEFAULT_ABORT_REASON))


@given(valid_ids)
def test_creation_round_trip(rid: int) -> None:
    assert decode(encode_creation(rid)) == Answer(rid, "channel")


# =================================================================================================
# Purity: the sans-IO core never imports trio (DESIGN.md §1)

PROTOCOL_FILE = pathlib.Path(proto.__file__)


def test_protocol_imports_only_the_stdlib_and_attrs() -> None:
    tree = ast.parse(PROTOCOL_FILE.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would pull in the package"
            imported.add(node.module or "")
    assert imported <= {"__future__", "json", "collections.abc", "typing", "attrs"}


def test_importing_protocol_does_not_import_trio() -> None:
    # The package __init__ re-exports the trio-based API, so the submodule is imported under a
    # bare stand-in for the package: exactly what _protocol itself pulls in is then visible.
    code = f"""
import sys, types
pkg = types.ModuleType("trio_wswrapper")
pkg.__path__ = [{str(PROTOCOL_FILE.parent)!r}]
sys.modules["trio_wswrapper"] = pkg
import trio_wswrapper._protocol as p
assert type(p.decode('{{"a":["x"]}}')).__name__ == "Incoming"
print(sorted(m for m in sys.modules if m.split(".")[0] in {{"trio", "trio_websocket", "trio_wswrapper"}}))
"""
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "['trio_wswrapper', 'trio_wswrapper._protocol']"
