"""Edge cases of the fast paths that a review found broken: text limits counted in characters,
handler context isolation, answers the codec cannot encode, non-minimal frame lengths, and a
silent peer at the handshake."""

from __future__ import annotations

import contextvars
import logging
import struct
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import trio_wswrapper as wsw
from trio_wswrapper import _protocol as proto

from .bounded import bound_tests
from .test_hot_path import LIMIT, client_frame_bytes, connected, reference, transport_result

TIMEOUT = 10


@pytest.fixture(params=["memory", "loopback"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


# -- inline plain handlers must behave as handlers run in their own task ----------------------

VAR: contextvars.ContextVar[int] = contextvars.ContextVar("VAR", default=0)


async def test_inline_handler_contextvar_changes_do_not_leak(server: wsw.Server, kind: str) -> None:
    # A handler task runs in a copy of the reader's context, so what a handler sets is its own.
    # An inline plain handler runs in the reader's context itself: its changes must not
    # reach the next handler (inline or task) of the connection.
    def bump() -> int:
        VAR.set(VAR.get() + 1)
        return VAR.get()

    async def abump() -> int:
        VAR.set(VAR.get() + 1)
        return VAR.get()

    server.on("bump", bump)
    server.on("abump", abump)
    with trio.fail_after(TIMEOUT):
        async with connected(server, kind) as client:
            assert [await client.request("abump") for _ in range(3)] == [1, 1, 1]
            assert [await client.request("bump") for _ in range(3)] == [1, 1, 1]
            assert await client.request("abump") == 1


class FussyCodec(proto.JsonCodec):
    """A codec (say, one over ujson) that refuses some values with its own exception type."""

    def encode(self, obj: Any) -> str:
        if isinstance(obj, dict) and obj.get("d") == "unencodable":
            raise OverflowError("value out of range")
        return super().encode(obj)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
async def test_answer_that_cannot_be_encoded_is_rejected_not_fatal(asynchronous: bool) -> None:
    server = wsw.Server(heartbeat_interval=None, codec=FussyCodec())
    if asynchronous:

        async def handler() -> str:
            return "unencodable"

    else:

        def handler() -> str:  # type: ignore[misc]
            return "unencodable"

    server.on("bad", handler)
    server.on("ok", lambda: "fine")
    with trio.fail_after(TIMEOUT):
        async with connected(server, "loopback") as client:
            with pytest.raises(wsw.RemoteError, match="out of range"):
                await client.request("bad")
            # the connection survives
            assert await client.request("ok") == "fine"


# -- the fast frame parser against wsproto: length encodings -----------------------------------


def _masked_text(payload: bytes, header_len: int) -> bytes:
    """A masked, final text frame whose length uses ``header_len`` (7, 16 or 64 bits),
    whether or not that is the minimal encoding (RFC 6455 §5.2 requires the minimal one)."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if header_len == 7:
        head = bytes((0x81, 0x80 | n))
    elif header_len == 16:
        head = bytes((0x81, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x81, 0x80 | 127)) + struct.pack("!Q", n)
    return head + mask + masked


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_masked_text(b"hello", 16), id="16-bit length for 5 bytes"),
        pytest.param(_masked_text(b"hello", 64), id="64-bit length for 5 bytes"),
        pytest.param(_masked_text(b"x" * 300, 64), id="64-bit length for 300 bytes"),
        pytest.param(
            bytes((0x81, 0x80 | 127)) + struct.pack("!Q", (1 << 63) | 5) + b"\x01\x02\x03\x04" + b"hello",
            id="64-bit length with the high bit set",
        ),
    ],
)
async def test_fast_parser_refuses_non_minimal_lengths_like_wsproto(data: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        ours = await transport_result(data + client_frame_bytes("text", b"after"), [])
    assert ours == reference(data + client_frame_bytes("text", b"after"))
    assert ours[1] == 1002


# -- max_message_size counts characters for text (PROTOCOL.md: "in characters for text") -----


@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
async def test_text_size_limit_counts_characters_not_bytes(fragmented: bool) -> None:
    text = "€" * (LIMIT - 10)  # within the limit in characters, three times over it in bytes
    payload = text.encode()
    if fragmented:
        half = len(payload) // 2 // 3 * 3
        data = client_frame_bytes("text", payload[:half], fin=False) + client_frame_bytes(
            "text", payload[half:], opcode=0
        )
    else:
        data = client_frame_bytes("text", payload)
    data += client_frame_bytes("text", b"after")
    with trio.fail_after(TIMEOUT):
        ours = await transport_result(data, [])
    assert ours == ([text, "after"], 1006)
    assert ours == reference(data)


async def test_text_size_limit_still_refuses_too_many_characters() -> None:
    data = client_frame_bytes("text", b"a" * (LIMIT + 1))
    with trio.fail_after(TIMEOUT):
        assert await transport_result(data, []) == ([], 1009)
    data = client_frame_bytes("text", ("é" * (LIMIT + 1)).encode())
    with trio.fail_after(TIMEOUT):
        assert await transport_result(data, []) == ([], 1009)


# -- a handshake that times out is dropped quietly -------------------------------------------


@pytest.mark.parametrize("transport", ["wsproto", "trio-websocket"])
async def test_silent_peer_is_dropped_without_an_error(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = wsw.Server(heartbeat_interval=None, connect_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve, "127.0.0.1", 0, transport=transport))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                # say nothing: the server gives up after connect_timeout and closes
                assert await stream.receive_some(100) == b""
            nursery.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage() + repr(errors[0].exc_info)


bound_tests(globals())
