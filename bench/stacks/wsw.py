"""trio_wswrapper, over the transport named by ``--transport``."""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack
from typing import Any

import trio

import trio_wswrapper as wsw
from bench.common import MAX_MESSAGE, SMALL, Timer, finish, main, ready, rss_bytes

WARMUP = 50


def server(args: argparse.Namespace) -> None:
    srv = wsw.Server(heartbeat_interval=None, max_message_size=MAX_MESSAGE)
    srv.on("echo", lambda x: x)
    srv.on("rss", rss_bytes)

    @srv.on("broadcast")
    async def broadcast(n: int) -> int:
        for i in range(n):
            # A client whose send queue is full waits for room, so nobody misses an event.
            for client, exc in await srv.emit("tick", i):
                if isinstance(exc, trio.WouldBlock):
                    await client.emit("tick", i)
        return n

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: srv.serve(
                    "127.0.0.1", args.port, transport=args.transport, task_status=task_status
                )
            )
            ready(port)

    trio.run(run)


def client(args: argparse.Namespace) -> None:
    trio.run(run_client, args)


async def run_client(args: argparse.Namespace) -> None:
    url = f"ws://127.0.0.1:{args.port}/"
    params: dict[str, int] = args.params
    scenario: str = args.scenario

    def connect(client: wsw.Client | None = None) -> Any:
        return wsw.open_client(url, client=client, transport=args.transport, max_message_size=MAX_MESSAGE)

    memory = None
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(connect())
        for _ in range(WARMUP):
            await first.request("echo", SMALL)
        if scenario == "S1":
            with Timer() as timer:
                for _ in range(params["requests"]):
                    await first.request("echo", SMALL)
        elif scenario == "S2":
            each = params["requests"] // params["in_flight"]

            async def worker() -> None:
                for _ in range(each):
                    await first.request("echo", SMALL)

            with Timer() as timer:
                async with trio.open_nursery() as nursery:
                    for _ in range(params["in_flight"]):
                        nursery.start_soon(worker)
            params = {**params, "requests": each * params["in_flight"]}
        elif scenario == "S3":
            events = params["events"]
            done = trio.Event()
            remaining = [params["clients"]]

            def counter() -> wsw.Client:
                client = wsw.Client()
                seen = [0]

                def tick(i: int) -> None:
                    seen[0] += 1
                    if seen[0] == events:
                        remaining[0] -= 1
                        if remaining[0] == 0:
                            done.set()

                client.on("tick", tick)
                return client

            clients = [await stack.enter_async_context(connect(counter())) for _ in range(params["clients"])]
            for c in clients:
                await c.request("echo", SMALL)
            with Timer() as timer:
                await clients[0].request("broadcast", events)
                await done.wait()
        elif scenario == "S4":
            before = await first.request("rss")
            for _ in range(params["connections"]):
                c = await stack.enter_async_context(connect())
                await c.request("echo", SMALL)
            memory = (before, await first.request("rss"))
            timer = Timer()
            timer.elapsed = 0.0
        else:
            payload = "x" * params["size"]
            with Timer() as timer:
                for _ in range(params["requests"]):
                    assert len(await first.request("echo", payload)) == params["size"]
    finish(scenario, params, timer.elapsed, memory)


if __name__ == "__main__":
    main(server, client)
