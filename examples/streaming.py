"""Streaming with anonymous channels: a generator stream and a two-way channel.

Run it with ``python examples/streaming.py``. The server offers:

* ``squares(n)``: an async generator handler. The client consumes it with
  ``channel.iterate()``; a JavaScript ws-wrapper 4 client consumes the same stream with
  ``for await (const v of channel)``.
* ``session()``: a handler that opens the request's channel with ``open_channel()`` and
  serves requests on it until the client closes or aborts it. Each channel is private to
  one request, so per-session state lives in the handler's local variables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

import trio_wswrapper as wsw

server = wsw.Server()


@server.on("squares")
async def squares(n: int) -> AsyncIterator[int]:
    try:
        for i in range(n):
            await trio.sleep(0.01)  # pretend each value takes work
            yield i * i
    finally:
        print(f"  server: squares({n}) finished or was stopped")


@server.on("session")
async def session() -> None:
    total = 0
    done = trio.Event()
    async with wsw.open_channel() as channel:

        @channel.on("add")
        def add(x: int) -> int:
            nonlocal total
            total += x
            return total

        @channel.on("bye")
        def bye() -> str:
            done.set()
            return f"total was {total}"

        await channel.emit("hello", "send me numbers")
        await done.wait()


async def main() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        async with wsw.open_client(f"ws://127.0.0.1:{port}/") as client:
            stream = await client.request("squares", 5)
            print("squares:", [value async for value in stream.iterate()])

            # Breaking out early leaves the producer running until it finishes; aborting the
            # channel stops it at once (its finally block runs).
            stream = await client.request("squares", 1000)
            async for value in stream.iterate():
                if value > 10:
                    break
            await stream.abort("enough")

            async with await client.request("session") as channel:
                name, args = await channel.receive()
                print(f"session greeting: {name} {args}")
                for x in (1, 2, 3):
                    print("  running total:", await channel.request("add", x))
                print("session:", await channel.request("bye"))
        await server.aclose()


if __name__ == "__main__":
    trio.run(main)
