"""Typed handler arguments: the cost of conversion, ours against pydantic v2 and cattrs.

Run: ``python bench/typed_args.py`` (pydantic and cattrs are optional; missing ones are
skipped). Part 1 times converting one message's arguments, as a handler's binder does, for three
payloads: scalars, a small dataclass, a list of 50 dicts. Part 2 times requests pipelined into a
server over the in-memory transport, for a handler without annotations and the same handler
annotated; run it with an older checkout first on PYTHONPATH to compare the untyped path.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

import trio

import trio_wswrapper as wsw
from trio_wswrapper.testing import open_raw_peer

try:
    from trio_wswrapper._typed import make_binder
except ImportError:  # an older checkout: only part 2 runs
    make_binder = None  # type: ignore[assignment]


@dataclasses.dataclass
class Point:
    x: int
    y: int
    label: str = ""


@dataclasses.dataclass
class Item:
    id: int
    name: str
    price: float
    tags: list[str]


SCALARS = (3, "hello", 2.5, True)
POINT = ({"x": 1, "y": 2, "label": "p"},)
ITEMS = ([{"id": i, "name": f"item {i}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(50)],)


def h_scalars(a: int, b: str, c: float, d: bool) -> None: ...
def h_point(p: Point) -> None: ...
def h_items(items: list[Item]) -> None: ...


CASES: list[tuple[str, Callable[..., Any], tuple[Any, ...], Any]] = [
    ("scalars (int, str, float, bool)", h_scalars, SCALARS, tuple[int, str, float, bool]),
    ("small dataclass", h_point, POINT, tuple[Point]),
    ("list of 50 dicts -> list[Item]", h_items, ITEMS, tuple[list[Item]]),
]


def per_call(fn: Callable[[], Any]) -> float:
    """Best-of-5 time of one call, in microseconds."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(5, number)) / number * 1e6


def converters() -> None:
    print("Part 1: converting one message's arguments (microseconds per call, best of 5)")
    libraries: dict[str, Callable[[Any], Callable[[tuple[Any, ...]], Any]]] = {}
    try:
        import pydantic

        def pydantic_lax(tp: Any) -> Callable[[tuple[Any, ...]], Any]:
            return pydantic.TypeAdapter(tp).validate_python

        def pydantic_strict(tp: Any) -> Callable[[tuple[Any, ...]], Any]:
            adapter = pydantic.TypeAdapter(tp)
            return lambda args: adapter.validate_python(args, strict=True)

        libraries[f"pydantic {pydantic.VERSION} (lax)"] = pydantic_lax
        libraries[f"pydantic {pydantic.VERSION} (strict)"] = pydantic_strict
    except ImportError:
        print("  (pydantic not installed: skipped)")
    try:
        import cattrs

        converter = cattrs.Converter()

        def with_cattrs(tp: Any) -> Callable[[tuple[Any, ...]], Any]:
            hook = converter.get_structure_hook(tp)
            return lambda args: hook(args, tp)

        libraries[f"cattrs {importlib.metadata.version('cattrs')}"] = with_cattrs
    except (ImportError, AttributeError):
        print("  (cattrs not installed: skipped)")
    for title, handler, args, tp in CASES:
        print(f"  {title}")
        assert make_binder is not None
        bind = make_binder(handler, "h")
        assert bind is not None
        ours = per_call(lambda bind=bind, args=args: bind(args))  # type: ignore[misc]
        print(f"    {'trio_wswrapper (hand-built)':32} {ours:9.2f} us   1.00x")
        for name, make in libraries.items():
            convert = make(tp)
            try:
                convert(args)
            except Exception as exc:  # pydantic's strict mode wants dataclass instances
                print(f"    {name:32}       n/a   ({type(exc).__name__})")
                continue
            theirs = per_call(lambda convert=convert, args=args: convert(args))  # type: ignore[misc]
            print(f"    {name:32} {theirs:9.2f} us   {theirs / ours:.2f}x")


async def requests(count: int, rounds: int = 5) -> None:
    """Pipelined requests from a raw peer over the in-memory transport: the server's dispatch
    path with little else around it. Best of ``rounds``, per request."""
    server = wsw.Server(heartbeat_interval=None)
    server.on("plain", lambda a, b: a)

    def typed(a: int, b: str) -> int:
        return a

    server.on("typed", typed)
    async with open_raw_peer(server) as peer:
        for name in ("plain", "typed"):
            frames = [f'{{"a":["{name}",{i},"x"],"i":{i}}}' for i in range(1, count + 1)]
            best = float("inf")
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
            print(f"  {name:6} {best / count * 1e6:8.2f} us per request (best of {rounds} x {count})")


def main() -> None:
    print(f"Python {sys.version.split()[0]}, trio_wswrapper from {wsw.__file__}")
    if make_binder is not None:
        converters()
    print("Part 2: requests through the server's dispatch path, unannotated and annotated handler")
    trio.run(requests, 2000)


if __name__ == "__main__":
    main()
