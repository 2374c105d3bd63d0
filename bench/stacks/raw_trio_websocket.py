"""The reference: the thinnest ws-wrapper server and client written directly on trio-websocket.

stdlib ``json``, a dict of handlers called inline by the connection's reader, no queues,
channels, cancellation or limits beyond trio-websocket's own: the floor a ws-wrapper
implementation on trio-websocket can reach.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import trio
import trio_websocket

from bench.common import MAX_MESSAGE, SMALL, Timer, finish, main, ready, rss_bytes

WARMUP = 50


def server(args: argparse.Namespace) -> None:
    connections: set[trio_websocket.WebSocketConnection] = set()

    async def broadcast(n: int) -> int:
        for i in range(n):
            frame = json.dumps({"a": ["tick", i]})
            for ws in list(connections):
                try:
                    await ws.send_message(frame)
                except trio_websocket.ConnectionClosed:
                    connections.discard(ws)
        return n

    handlers: dict[str, Callable[..., Any]] = {"echo": lambda x: x, "rss": rss_bytes, "broadcast": broadcast}

    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        connections.add(ws)
        try:
            while True:
                msg = json.loads(await ws.get_message())
                name, *call_args = msg["a"]
                result = handlers[name](*call_args)
                if hasattr(result, "__await__"):
                    result = await result
                if "i" in msg:
                    await ws.send_message(json.dumps({"i": msg["i"], "d": result}))
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            connections.discard(ws)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: trio_websocket.serve_websocket(
                    handle,
                    "127.0.0.1",
                    args.port,
                    None,
                    max_message_size=MAX_MESSAGE,
                    task_status=task_status,
                )
            )
            ready(port.port)

    trio.run(run)


class RawClient:
    """Requests matched to answers by id; a reader task wakes each waiting requester."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, on_event: Callable[[list[Any]], None]) -> None:
        self.ws = ws
        self.on_event = on_event
        self.next_id = 0
        self.waiting: dict[int, tuple[trio.Event, list[Any]]] = {}

    async def request(self, name: str, *args: Any) -> Any:
        self.next_id += 1
        rid = self.next_id
        slot: tuple[trio.Event, list[Any]] = (trio.Event(), [])
        self.waiting[rid] = slot
        await self.ws.send_message(json.dumps({"a": [name, *args], "i": rid}))
        await slot[0].wait()
        return slot[1][0]

    async def read(self) -> None:
        try:
            while True:
                msg = json.loads(await self.ws.get_message())
                if "i" in msg:
                    event, result = self.waiting.pop(msg["i"])
                    result.append(msg.get("d"))
                    event.set()
                else:
                    self.on_event(msg["a"])
        except trio_websocket.ConnectionClosed:
            pass


def client(args: argparse.Namespace) -> None:
    trio.run(run_client, args)


async def run_client(args: argparse.Namespace) -> None:
    url = f"ws://127.0.0.1:{args.port}/"
    params: dict[str, int] = args.params
    scenario: str = args.scenario
    memory = None
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:

        async def connect(on_event: Callable[[list[Any]], None] = lambda a: None) -> RawClient:
            ws = await stack.enter_async_context(
                trio_websocket.open_websocket_url(url, max_message_size=MAX_MESSAGE)
            )
            raw = RawClient(ws, on_event)
            nursery.start_soon(raw.read)
            return raw

        first = await connect()
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
                async with trio.open_nursery() as workers:
                    for _ in range(params["in_flight"]):
                        workers.start_soon(worker)
            params = {**params, "requests": each * params["in_flight"]}
        elif scenario == "S3":
            events = params["events"]
            done = trio.Event()
            remaining = [params["clients"]]

            def counter() -> Callable[[list[Any]], None]:
                seen = [0]

                def on_event(a: list[Any]) -> None:
                    seen[0] += 1
                    if seen[0] == events:
                        remaining[0] -= 1
                        if remaining[0] == 0:
                            done.set()

                return on_event

            clients = [await connect(counter()) for _ in range(params["clients"])]
            for c in clients:
                await c.request("echo", SMALL)
            with Timer() as timer:
                await clients[0].request("broadcast", events)
                await done.wait()
        elif scenario == "S4":
            before = await first.request("rss")
            for _ in range(params["connections"]):
                c = await connect()
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
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    main(server, client)
