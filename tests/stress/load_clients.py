"""The client side of the load test, run in its own process (see test_load.py).

``python -m tests.stress.load_clients PORT CLIENTS REQUESTS BROADCASTS`` connects CLIENTS
clients to 127.0.0.1:PORT. Each waits for the server's ``go`` broadcast, makes REQUESTS echo
requests and checks every reply, answers the server's ``whoami`` request, and collects the
BROADCASTS ``tick`` broadcasts until ``done``. It prints one JSON line of results and exits
non-zero if any reply was lost or wrong.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import trio

import trio_wswrapper as wsw

from .common import raise_open_file_limit, rss_kib


async def one_client(
    index: int, port: int, requests: int, connect_slots: trio.Semaphore, results: dict[str, Any]
) -> None:
    client = wsw.Client()
    ticks: list[int] = []
    go = trio.Event()
    done = trio.Event()
    client.on("go", go.set)
    client.on("tick", ticks.append)
    client.on("done", done.set)
    client.on("whoami", lambda: index)
    async with contextlib.AsyncExitStack() as stack:
        async with connect_slots:
            url = f"ws://127.0.0.1:{port}/"
            await stack.enter_async_context(wsw.open_client(url, client=client, connect_timeout=60))
        results["connected"] += 1
        await go.wait()
        for k in range(requests):
            payload = [index, k, "x" * (k % 13)]
            results["requests"] += 1
            try:
                reply = await client.request("echo", payload)
            except Exception as exc:  # lost: the connection failed under us
                results["errors"].append(repr(exc))
                continue
            if reply == payload:
                results["replies"] += 1
            else:
                results["mismatched"] += 1
        await done.wait()
        results["ticks"].append(ticks)


async def main(port: int, clients: int, requests: int) -> dict[str, Any]:
    results: dict[str, Any] = {
        "connected": 0,
        "requests": 0,
        "replies": 0,
        "mismatched": 0,
        "errors": [],
        "ticks": [],
    }
    connect_slots = trio.Semaphore(100)  # stay within the listen backlog
    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(one_client, index, port, requests, connect_slots, results)
    results["rss_kib"] = rss_kib()
    return results


if __name__ == "__main__":
    port, clients, requests, broadcasts = map(int, sys.argv[1:5])
    raise_open_file_limit(clients + 100)
    results = trio.run(main, port, clients, requests)
    expected = list(range(broadcasts))
    results["ticks_complete"] = sum(ticks == expected for ticks in results.pop("ticks"))
    results["errors"] = results["errors"][:10]
    print(json.dumps(results))
    ok = results["replies"] == clients * requests and results["ticks_complete"] == clients
    sys.exit(0 if ok else 1)
