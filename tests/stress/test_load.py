"""Load: many concurrent clients on loopback, requests and broadcasts, then no leftovers.

The clients run in a child process (load_clients.py) so that this process's memory is the
server's. Each client makes echo requests and checks the replies while the server broadcasts
``tick`` events and asks every client ``whoami``. Counts are asserted (replies lost or
mismatched, broadcasts dropped, and after the clients leave: clients, requests, handlers,
channels, tasks and live objects back to the baseline); resident memory is only reported.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from .common import (
    add,
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


async def test_many_clients(nursery: trio.Nursery) -> None:
    clients, requests, broadcasts = scale(100, 1000), scale(10, 30), scale(20, 100)
    raise_open_file_limit(clients + 200)
    server = make_server(heartbeat_interval=30)
    with error_log() as errors, trio.fail_after(scale(120, 900)):
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        baseline_tasks = task_count()
        baseline_objects = live_objects(*leak_types())
        rss = {"before": rss_kib()}
        finished = trio.Event()
        child: dict[str, Any] = {}

        async def run_clients() -> None:
            argv = [sys.executable, "-m", "tests.stress.load_clients", str(port), str(clients)]
            argv += [str(requests), str(broadcasts)]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            child["process"] = await trio.run_process(
                argv, capture_stdout=True, check=False, cwd=ROOT, env=env
            )
            finished.set()

        nursery.start_soon(run_clients)
        await wait_until(lambda: len(server.clients) == clients or finished.is_set(), timeout=scale(60, 600))
        assert len(server.clients) == clients, child
        rss["connected"] = rss_kib()
        tasks_connected = task_count()

        dropped = await server.emit("go")
        for seq in range(broadcasts):
            dropped += await server.emit("tick", seq)
            await trio.sleep(0.005)  # pacing only; nothing is asserted about time
        answers: dict[int, Any] = {}

        async def ask(client: Any) -> None:
            answers[id(client)] = await client.request("whoami")

        async def ask_all() -> None:
            async with trio.open_nursery() as asking:
                for client in server.clients:
                    asking.start_soon(ask, client)

        await ask_all()  # in a function, so that no local variable keeps a client alive
        rss["during"] = rss_kib()
        dropped += await server.emit("done")
        await finished.wait()
        process = child["process"]
        result = json.loads(process.stdout)
        await wait_until(lambda: idle(server))
        after_tasks = task_count()
        after_objects = live_objects(*leak_types())
        rss["after"] = rss_kib()
        await server.aclose()

    lost = result["requests"] - result["replies"]
    record(
        "load",
        clients=clients,
        requests=result["requests"],
        replies=result["replies"],
        replies_lost=lost,
        replies_mismatched=result["mismatched"],
        broadcasts=broadcasts * clients,
        broadcasts_dropped=len(dropped),
        server_requests=len(answers),
        server_tasks_with_clients=tasks_connected - baseline_tasks,
        server_rss_kib=rss,
        client_process_rss_kib=result["rss_kib"],
    )
    add("load", "runs", 1)
    assert process.returncode == 0, result
    assert result["connected"] == clients and result["ticks_complete"] == clients
    assert lost == 0 and result["mismatched"] == 0 and not result["errors"]
    assert dropped == []
    assert sorted(answers.values()) == list(range(clients))
    assert after_tasks == baseline_tasks
    assert after_objects == baseline_objects
    assert not errors.records, [r.getMessage() for r in errors.records]
