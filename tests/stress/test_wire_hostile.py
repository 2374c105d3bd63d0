"""Hostile WebSocket frames against a live server, while a healthy client keeps working.

Each case sends frames that trio-websocket never produces (fragments, bad UTF-8, oversize,
reserved bits, bad control frames) from a raw client over a real loopback socket. The server
must answer, close with the right code, or drop that one connection, and never stop serving
the healthy client beside it, leak a client, or log an internal error.
"""

from __future__ import annotations

import json

import pytest
import trio
from wsproto.events import CloseConnection

from .common import Healthy, add, error_log, idle, make_server, wait_until
from .rawws import Opcode, RawWebSocket, frame

LIMIT = 1000  # the server's max_message_size in these tests
REQUEST = b'{"a":["echo","hi"],"i":1}'
ANSWER = '{"i":1,"d":"hi"}'

# name -> (bytes to send, expected outcome). Outcomes: "answer" (the request is answered and
# the connection stays open), a close code the server must send, or "drop" (a WebSocket
# protocol violation: RFC 6455 §7.1.7 fails the connection; trio-websocket closes the TCP
# connection, and the close listeners see 1002 or 1007; see DROPPED).
CASES: dict[str, tuple[bytes, str | int]] = {
    "text": (frame(Opcode.TEXT, REQUEST), "answer"),
    "binary frame with UTF-8 JSON": (frame(Opcode.BINARY, REQUEST), "answer"),
    "binary frame with bad UTF-8 is ignored": (
        frame(Opcode.BINARY, b'{"a":["echo","\xff"],"i":1}') + frame(Opcode.TEXT, REQUEST),
        "answer",
    ),
    "fragmented, with a ping between fragments": (
        frame(Opcode.TEXT, REQUEST[:3], fin=False)
        + frame(Opcode.PING, b"p")
        + frame(Opcode.CONTINUATION, REQUEST[3:9], fin=False)
        + frame(Opcode.CONTINUATION, b"", fin=False)
        + frame(Opcode.CONTINUATION, REQUEST[9:]),
        "answer",
    ),
    "fragmented binary": (
        frame(Opcode.BINARY, REQUEST[:10], fin=False) + frame(Opcode.CONTINUATION, REQUEST[10:]),
        "answer",
    ),
    "one byte per fragment": (
        b"".join(
            frame(Opcode.CONTINUATION if i else Opcode.TEXT, REQUEST[i : i + 1], fin=i == len(REQUEST) - 1)
            for i in range(len(REQUEST))
        ),
        "answer",
    ),
    "exactly the size limit": (
        frame(Opcode.TEXT, b'{"a":["echo","' + b"x" * (LIMIT - 25) + b'"],"i":1}'),
        "answer-long",
    ),
    "oversized text": (frame(Opcode.TEXT, b"x" * (LIMIT + 1)), 1009),
    "oversized binary": (frame(Opcode.BINARY, b"x" * (LIMIT * 4)), 1009),
    "oversized across fragments": (
        frame(Opcode.TEXT, b"x" * 600, fin=False) + frame(Opcode.CONTINUATION, b"x" * 600),
        1009,
    ),
    "oversized, then a ping (trio-websocket #184)": (
        frame(Opcode.TEXT, b"x" * (LIMIT + 1)) + frame(Opcode.PING, b"p"),
        1009,
    ),
    "invalid UTF-8 in a text frame": (frame(Opcode.TEXT, b'{"a":["echo","\xff\xfe"],"i":1}'), "drop"),
    "UTF-8 split badly across fragments": (
        frame(Opcode.TEXT, '"é'.encode()[:2], fin=False) + frame(Opcode.CONTINUATION, b'\x41"'),
        "drop",
    ),
    "continuation without a start": (frame(Opcode.CONTINUATION, REQUEST), "drop"),
    "new message inside a fragmented one": (
        frame(Opcode.TEXT, REQUEST[:5], fin=False) + frame(Opcode.TEXT, REQUEST),
        "drop",
    ),
    "reserved bit set": (frame(Opcode.TEXT, REQUEST, rsv=4), "drop"),
    "reserved opcode": (frame(3, REQUEST), "drop"),
    "control frame over 125 bytes": (frame(Opcode.PING, b"p" * 126), "drop"),
    "fragmented control frame": (frame(Opcode.PING, b"p", fin=False), "drop"),
    "close with an invalid code": (frame(Opcode.CLOSE, (5).to_bytes(2, "big")), "drop"),
    "close with a bad UTF-8 reason": (frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"\xff"), "drop"),
    "unmasked frame": (bytes([0x81, len(REQUEST)]) + REQUEST, "drop"),
    # a continuation frame declaring 2**56 bytes: a protocol error, or a message too big,
    # depending on which the transport checks first
    "garbage bytes": (b"\x00\xff" * 64, "drop-or-too-big"),
}


#: The close codes each kind of dropped connection may end with.
DROPPED = {"drop": (1002, 1006, 1007), "drop-or-too-big": (1002, 1006, 1007, 1009)}


@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_frames(case: str, nursery: trio.Nursery) -> None:
    data, outcome = CASES[case]
    server = make_server(max_message_size=LIMIT)
    closes: list[tuple[int, str]] = []
    server.on("close", lambda client, code, reason, user: closes.append((int(code), reason)))
    with error_log() as errors, trio.fail_after(30):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        stop = trio.Event()
        healthy = Healthy()
        await nursery.start(healthy.run, port, stop)
        async with await RawWebSocket.connect(port) as raw:
            await raw.send_raw(data)
            add("hostile frames", "wire cases", 1)
            if outcome == "answer":
                assert await raw.receive() == ANSWER
                await raw.send_text('{"a":["echo",2],"i":2}')
                assert await raw.receive() == '{"i":2,"d":2}'
            elif outcome == "answer-long":
                reply = await raw.receive()
                assert isinstance(reply, str) and json.loads(reply)["d"] == "x" * (LIMIT - 25)
            elif outcome in DROPPED:
                closed = await raw.wait_closed()
                assert closed.code in DROPPED[outcome]
            else:
                closed = await raw.wait_closed()
                assert closed.code == outcome
        await wait_until(lambda: idle(server, clients=1))
        stop.set()
        await wait_until(lambda: idle(server, clients=0))
        assert healthy.replies > 0 and healthy.lost == 0
        if outcome in DROPPED:
            assert closes[0][0] in DROPPED[outcome]
        elif outcome != "answer" and outcome != "answer-long":
            assert closes[0][0] == outcome
        await server.aclose()
    assert not errors.records, [r.getMessage() for r in errors.records]


async def test_half_sent_frame_then_silence_is_cut_by_close(nursery: trio.Nursery) -> None:
    """A peer that stops in the middle of a frame holds nothing once the server shuts down."""
    server = make_server(max_message_size=LIMIT, close_timeout=0.2)
    with trio.fail_after(30):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        async with await RawWebSocket.connect(port) as raw:
            await raw.send_raw(frame(Opcode.TEXT, REQUEST)[:7])
            await wait_until(lambda: len(server.clients) == 1)
            await server.aclose()
            closed = await raw.wait_closed()
            assert isinstance(closed, CloseConnection)
        await wait_until(lambda: idle(server))
