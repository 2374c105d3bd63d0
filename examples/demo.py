"""A tour of trio_wswrapper: one server and one client talking over loopback.

Run it with ``python examples/demo.py`` (or ``nox -s demo``). It starts a server on
127.0.0.1 (an ephemeral port unless ``--port`` is given), connects a client, walks through
events, requests, errors, named channels, server-to-client requests, cancellation and
streaming, prints what happens, and exits.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import trio

import trio_wswrapper as wsw

server = wsw.Server()


@server.on("open")
def welcome(client: wsw.Client) -> None:
    print(f"  server: a client connected ({len(server.clients)} now)")


@server.on("add")
def add(a: float, b: float) -> float:
    return a + b


@server.on("divide")
def divide(a: float, b: float) -> float:
    return a / b  # ZeroDivisionError becomes a rejection the client sees


@server.on("whoami")
async def whoami() -> str:
    # Requests go both ways: the server asks the client that sent this request.
    name = await wsw.current_client().request("name")
    return f"you are {name}"


@server.on("slow")
async def slow(seconds: float) -> str:
    try:
        await trio.sleep(seconds)
    except trio.Cancelled:
        print("  server: the client cancelled 'slow'; the handler was cancelled too")
        raise
    return "done"


@server.on("countdown")
async def countdown(n: int) -> AsyncIterator[int]:
    # An async generator handler streams its items over an anonymous channel.
    for i in range(n, 0, -1):
        yield i


server.of("chat").on("say", lambda text: f"chat heard {text!r}")


async def tour(url: str) -> None:
    client = wsw.Client()
    client.on("name", lambda: "the demo client")
    client.on("news", lambda text: print(f"  client: news event: {text}"))
    async with wsw.open_client(url, client=client):
        print("request add(2, 3) ->", await client.request("add", 2, 3))
        try:
            await client.request("divide", 1, 0)
        except wsw.RemoteError as exc:
            print("request divide(1, 0) rejected:", exc.message)
        print("named channel chat.say ->", await client.of("chat").request("say", "hello"))
        print("server-to-client request ->", await client.request("whoami"))
        print("broadcast failures:", await server.emit("news", "hello, everyone"))
        with trio.move_on_after(0.2):
            print("requesting slow(10), giving up after 0.2 s")
            await client.request("slow", 10)
        await trio.sleep(0.05)
        stream = await client.request("countdown", 3)
        print("streamed countdown ->", [value async for value in stream.iterate()])
        print("client statistics:", client.statistics())


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, host, port)
        url = f"ws://{host}:{bound}/"
        print(f"trio_wswrapper demo: server listening on {url}")
        await tour(url)
        await server.aclose()
    print("demo finished")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
