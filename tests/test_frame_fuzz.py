"""Raw frames, well-formed or not, in any encoding of their length: the transport's fast parser
must make of them exactly what wsproto alone makes of them."""

from __future__ import annotations

import struct

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_hot_path import reference, transport_result


def frame(b0: int, masked: bool, enc: int, payload: bytes) -> bytes:
    n = len(payload)
    mbit = 0x80 if masked else 0
    if enc == 0 and n < 126:
        head = bytes((b0, mbit | n))
    elif enc <= 1 and n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if masked:
        mask = b"\x05\x06\x07\x08"
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


frames = st.builds(
    frame,
    st.sampled_from([0x81, 0x82, 0x01, 0x02, 0x80, 0x00, 0x89, 0x8A, 0x88, 0x83, 0x8B, 0xC1, 0x09]),
    st.booleans() | st.just(True),
    st.integers(0, 2),
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=100).map(str.encode),
        st.sampled_from([b"\x03\xe8", b"\x03\xe8ok", b"\x03", b"\x00\x00", b"\x03\xe8\xff"]),
        st.integers(0, 1500).map(lambda n: "€".encode() * n),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(items=st.lists(frames, max_size=6), cuts=st.lists(st.integers(min_value=0), max_size=4))
def test_raw_frames_agree_with_wsproto(items: list[bytes], cuts: list[int]) -> None:
    data = b"".join(items)
    assert trio.run(transport_result, data, cuts) == reference(data)
