"""Codecs: is a faster JSON library worth an optional extra?

Run: ``python bench/codec.py`` (orjson and msgspec are optional; missing ones are skipped).
Part 1 times the protocol layer alone: encoding three typical frames with ``_protocol``'s
encoders and classifying them with ``decode``, for the default codec and for codecs built on
orjson and msgspec. Part 2 times requests pipelined into a server over the in-memory transport,
so the codec's share of a whole request is visible.
"""

from __future__ import annotations

import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

import trio

import trio_wswrapper as wsw
from trio_wswrapper import _protocol as proto
from trio_wswrapper.testing import open_raw_peer

SMALL = ("chat", ["room 1", "hello there"])
OBJECT = ("update", [{"id": 17, "name": "widget", "price": 9.5, "tags": ["a", "b"], "ok": True}])
ITEMS = [{"id": i, "name": f"item {i}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(50)]


def candidates() -> dict[str, wsw.Codec | None]:
    codecs: dict[str, wsw.Codec | None] = {"json (default)": None}
    try:
        codecs["OrjsonCodec (fast extra)"] = wsw.OrjsonCodec()
    except ImportError:
        print("  (orjson not installed: skipped)")
    try:
        import msgspec

        encoder, decoder = msgspec.json.Encoder(), msgspec.json.Decoder()

        class MsgspecCodec:
            def encode(self, obj: Any) -> str:
                return encoder.encode(obj).decode()

            def decode(self, data: str | bytes) -> Any:
                return decoder.decode(data)

        codecs[f"msgspec {msgspec.__version__} (sketch)"] = MsgspecCodec()
    except ImportError:
        print("  (msgspec not installed: skipped)")
    return codecs


def per_call(fn: Callable[[], Any]) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(5, number)) / number * 1e6


def protocol_layer(codecs: dict[str, wsw.Codec | None]) -> None:
    print("Part 1: protocol layer, encode + decode of one frame (microseconds, best of 5)")
    cases: list[tuple[str, Callable[[Any], str]]] = [
        ("event, two strings", lambda c: proto.encode_event(*SMALL, codec=c)),
        ("request, one object", lambda c: proto.encode_event(*OBJECT, id=12, codec=c)),
        ("resolution, 50 objects", lambda c: proto.encode_resolution(12, ITEMS, codec=c)),
    ]
    for title, encode in cases:
        print(f"  {title} ({len(encode(None))} characters)")
        base_enc = base_dec = 0.0
        for name, codec in codecs.items():
            frame = encode(codec)
            enc = per_call(lambda codec=codec, encode=encode: encode(codec))  # type: ignore[misc]
            dec = per_call(lambda frame=frame, codec=codec: proto.decode(frame, codec))  # type: ignore[misc]
            if codec is None:
                base_enc, base_dec = enc, dec
            print(
                f"    {name:26} encode {enc:7.2f} us ({enc / base_enc:4.2f}x)"
                f"   decode {dec:7.2f} us ({dec / base_dec:4.2f}x)"
            )


async def end_to_end(codecs: dict[str, wsw.Codec | None], count: int = 1000, rounds: int = 5) -> None:
    print("Part 2: requests pipelined into a server, per request (best of 5)")
    for title, args in (("echo two strings", SMALL[1]), ("echo 50 objects", [ITEMS])):
        print(f"  {title}")
        base = 0.0
        for name, codec in codecs.items():
            server = wsw.Server(heartbeat_interval=None, codec=codec)
            server.on("echo", lambda *a: a)
            frames = [proto.encode_event("echo", args, id=i) for i in range(1, count + 1)]
            best = float("inf")
            async with open_raw_peer(server) as peer:
                for _ in range(rounds):
                    start = time.perf_counter()
                    async with trio.open_nursery() as nursery:

                        async def send_all(frames: list[str]) -> None:
                            for frame in frames:
                                await peer.send(frame)

                        nursery.start_soon(send_all, frames)
                        for _ in range(count):
                            await peer.receive()
                    best = min(best, time.perf_counter() - start)
            us = best / count * 1e6
            base = base or us
            print(f"    {name:26} {us:8.2f} us per request ({us / base:4.2f}x)")


def main() -> None:
    print(f"Python {sys.version.split()[0]}")
    codecs = candidates()
    protocol_layer(codecs)
    trio.run(end_to_end, codecs)


if __name__ == "__main__":
    main()
