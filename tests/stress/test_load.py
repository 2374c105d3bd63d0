"""Load: many concurrent clients on loopback, requests and broadcasts, then no leftovers.

The clients run in a child process (load_clients.py) so that this process's memory is the
server's. Each client makes echo requests and checks the replies while the server broadcasts
``tick`` events and asks every client ``whoami``. Counts are asserted (replies lost or
mismatched, broadcasts dropped, and after the clients leave: clients, requests, handlers,
channels, tasks and live objects back to the baseline); resident memory is only reported,
after each of several rounds, so that growth from round to round would show.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

import trio_wswrapper as wsw

from .common import (
    error_log,
    idle,
    leak_types,
    live_objects,
    make_server,
    raise_open_file_limit,
    record,
    rss_kib,
    scale,
    task_count,
    wait_until,
)

ROOT = Path(__file__).parents[2]


async def one_round(
    server: wsw.Server, port: int, clients: int, requests: int, broadcasts: int
) -> dict[str, Any]:
    """Run the client process once against ``server``; return what both sides counted."""
    finished = trio.Event()
    child: dict[str, Any] = {}
    figures: dict[str, Any] = {}

    async def run_clients() -> None:
        argv = [sys.executable, "-m", "tests.stress.load_clients", str(port), str(clients)]
        argv += [str(requests), str(broadcasts)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child["process"] = await trio.run_process(argv, capture_stdout=True, check=False, cwd=ROOT, env=env)
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_clients)
        await wait_until(lambda: len(server.clients) == clients or finished.is_set(), timeout=scale(60, 600))
        assert len(server.clients) == clients, child
        figures["rss connected"] = rss_kib()
        figures["tasks"] = task_count()

        dropped = await server.emit("go")
        for seq in range(broadcasts):
            dropped += await server.emit("tick", seq)
            await trio.sleep(0.005)  # pacing only; nothing is asserted about time
        answers: list[Any] = []

        async def ask(client: wsw.Client) -> None:
            answers.append(await client.request("whoami"))

        async with trio.open_nursery() as asking:
            for client in server.clients:
                asking.start_soon(ask, client)
        del client  # no local variable may keep a client alive for the leak check
        figures["rss during"] = rss_kib()
        dropped += await server.emit("done")
        await finished.wait()
    process = child["process"]
    result = json.loads(process.stdout)
    result["returncode"] = process.returncode
    result["broadcasts dropped"] = len(dropped)
    result["whoami"] = sorted(answers) == list(range(clients))
    result.update(figures)
    return result


async def test_many_clients(nursery: trio.Nursery) -> None:
    clients, requests, broadcasts = scale(100, 1000), scale(10, 30), scale(20, 100)
    rounds = scale(1, 3)
    raise_open_file_limit(clients + 200)
    server = make_server(heartbeat_interval=30)
    totals = {"requests": 0, "replies": 0, "mismatched": 0, "broadcasts dropped": 0}
    rss: dict[str, int] = {}
    with error_log() as errors, trio.fail_after(scale(120, 1200)):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        baseline_tasks = task_count()
        baseline_objects = live_objects(*leak_types())
        rss["before"] = rss_kib()
        for n in range(1, rounds + 1):
            result = await one_round(server, port, clients, requests, broadcasts)
            assert result["returncode"] == 0, result
            assert result["connected"] == clients and result["ticks_complete"] == clients
            assert result["replies"] == result["requests"] == clients * requests
            assert result["mismatched"] == 0 and not result["errors"]
            assert result["broadcasts dropped"] == 0 and result["whoami"]
            for key in totals:
                totals[key] += result[key]
            await wait_until(lambda: idle(server))
            assert task_count() == baseline_tasks
            assert live_objects(*leak_types()) == baseline_objects
            rss[f"round {n} connected"] = result["rss connected"]
            rss[f"round {n} during"] = result["rss during"]
            rss[f"round {n} after"] = rss_kib()
        await server.aclose()
    record(
        "load",
        clients=clients,
        rounds=rounds,
        requests=totals["requests"],
        replies_lost=totals["requests"] - totals["replies"],
        replies_mismatched=totals["mismatched"],
        broadcasts_received=rounds * broadcasts * clients,
        broadcasts_dropped=totals["broadcasts dropped"],
        server_requests=rounds * clients,
        server_tasks_per_client=(result["tasks"] - baseline_tasks) / clients,
        server_rss_kib=rss,
        client_process_rss_kib=result["rss_kib"],
    )
    assert not errors.records, [r.getMessage() for r in errors.records]
