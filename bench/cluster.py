"""Broadcast events/s delivered across several server processes sharing Redis, vs one process.

For each process count (1 and 3 by default) this starts a redis-server on a free 127.0.0.1
port, that many server processes (``python bench/cluster.py node``, a Server with a
RedisBroadcast), and the same total number of receiving WebSocket connections spread evenly
over them (plain trio-websocket connections that only count frames). Then every process is
asked to broadcast its share of the events, all at once, and the figure is the number of
events received by all connections divided by the time until the last one arrived.

    python bench/cluster.py                   # 3 runs each of 1 and 3 processes, 60 clients, 3000 events
    python bench/cluster.py --quick           # smoke mode: 1 run, 6 clients, 60 events

An emitting process waits while its own clients' send queues are over half full, so that the
figure is what the clients can take; the events a client still misses (from another process,
whose emitter cannot see its queues) are counted and printed, never hidden. Each run is bounded
by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio_wswrapper as wsw  # noqa: E402

SEND_QUEUE = 256


# --- one server process ----------------------------------------------------------------------


async def node(redis_url: str, prefix: str) -> None:
    """Serve ``flood`` and ``status`` on a free port; print ``READY <port>``; run until killed."""
    from trio_wswrapper.redis import RedisBroadcast

    async with RedisBroadcast(redis_url, prefix=prefix) as bus, trio.open_nursery() as nursery:
        server = wsw.Server(broadcast=bus, heartbeat_interval=None, send_queue_size=SEND_QUEUE)

        @server.on("flood")
        async def flood(count: int, text: str) -> None:
            for i in range(count):
                # Pace on this process's own clients: wait while their queues are half full
                # (polled: nothing signals that send queues drained).
                while server.statistics().queued_frames > len(server.clients) * SEND_QUEUE // 2:  # noqa: ASYNC110
                    await trio.sleep(0.001)
                await server.emit("tick", i, text)

        @server.on("status")
        def status() -> dict[str, Any]:
            stats = bus.statistics()
            return {"healthy": bus.healthy, "missed": stats.missed, "failures": stats.publish_failures}

        port = await nursery.start(server.serve, "127.0.0.1", 0)
        print(f"READY {port}", flush=True)


# --- the driver ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], what: str, deadline: float) -> int:
    """The port from the ``READY <port>`` line of ``process``."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffer = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.1)
        if readable:
            chunk = os.read(fd, 4096)
            buffer += chunk
            for line in buffer.splitlines():
                if line.startswith(b"READY "):
                    return int(line.split()[1])
            if not chunk:
                raise RuntimeError(f"{what} exited: {buffer.decode(errors='replace')}")
    raise RuntimeError(f"{what} did not start in time")


def start_redis(directory: Path, deadline: float) -> tuple[subprocess.Popen[bytes], int]:
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return process, port
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise RuntimeError("redis-server did not start in time")


async def drive(ports: list[int], clients: int, events: int, text: str, timeout: float) -> dict[str, Any]:
    """Connect the receivers, ask every process for its share of events, time the delivery."""
    received = [0] * clients
    done = trio.Event()
    remaining = clients
    last_arrival = 0.0

    async def receive(index: int, ws: trio_websocket.WebSocketConnection) -> None:
        nonlocal remaining, last_arrival
        while received[index] < events:
            try:
                await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return  # closed after the run, with events missed
            received[index] += 1
            last_arrival = time.perf_counter()
        remaining -= 1
        if remaining == 0:
            done.set()

    shares = [events // len(ports) + (i < events % len(ports)) for i in range(len(ports))]
    async with trio.open_nursery() as nursery:
        sockets = []
        for i in range(clients):
            port = ports[i % len(ports)]
            sockets.append(await trio_websocket.connect_websocket_url(nursery, f"ws://127.0.0.1:{port}/"))
        controls = [
            await trio_websocket.connect_websocket_url(nursery, f"ws://127.0.0.1:{p}/") for p in ports
        ]

        async def request(ws: trio_websocket.WebSocketConnection, i: int, name: str, *args: Any) -> Any:
            await ws.send_message(json.dumps({"i": i, "a": [name, *args]}))
            while True:
                answer = json.loads(await ws.get_message())
                if answer.get("i") == i:
                    if "e" in answer:
                        raise RuntimeError(answer["e"])
                    return answer.get("d")

        for ws in controls:
            status = await request(ws, 1, "status")
            if not status["healthy"]:
                raise RuntimeError("a server process is not connected to Redis")
        for i, ws in enumerate(sockets):
            nursery.start_soon(receive, i, ws)
        with trio.move_on_after(timeout) as deadline:
            start = time.perf_counter()
            async with trio.open_nursery() as floods:
                for ws, share in zip(controls, shares, strict=True):
                    floods.start_soon(request, ws, 2, "flood", share, text)
            # Whatever is missed never arrives: stop once every receiver is done or idle.
            while not done.is_set():
                seen = sum(received)
                with trio.move_on_after(1.0):
                    await done.wait()
                if sum(received) == seen:
                    break
        missed = 0
        for ws in controls:
            missed += (await request(ws, 3, "status"))["missed"]
        for ws in [*sockets, *controls]:
            await ws.aclose()
        nursery.cancel_scope.cancel()
    if deadline.cancelled_caught:
        raise RuntimeError(f"the run did not finish within {timeout} s")
    total = sum(received)
    if total == 0:
        raise RuntimeError("no event arrived")
    elapsed = last_arrival - start
    return {"events/s": total / elapsed, "received": total, "expected": clients * events, "missed": missed}


def run(processes: int, clients: int, events: int, size: int, timeout: float) -> dict[str, Any]:
    """One measurement with ``processes`` server processes sharing a fresh redis-server."""
    deadline = time.monotonic() + timeout
    prefix = f"bench-{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    children: list[subprocess.Popen[Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        redis, redis_port = start_redis(Path(directory), deadline)
        children.append(redis)
        try:
            ports = []
            for _ in range(processes):
                child = subprocess.Popen(
                    [sys.executable, __file__, "node", "--redis", f"redis://127.0.0.1:{redis_port}/0",
                     "--prefix", prefix],
                    stdout=subprocess.PIPE, env=env,
                )  # fmt: skip
                children.append(child)
                ports.append(wait_ready(child, "a server process", deadline))
            return trio.run(drive, ports, clients, events, "x" * size, max(1.0, deadline - time.monotonic()))
        finally:
            for child in reversed(children):
                child.kill()
                child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", choices=["node"], help="internal: run one server process")
    parser.add_argument("--redis", help="internal: the Redis URL of a server process")
    parser.add_argument("--prefix", help="internal: the Redis channel prefix of a server process")
    parser.add_argument("--quick", action="store_true", help="1 run, small counts (smoke mode)")
    parser.add_argument("--processes", default="1,3", help="process counts to compare")
    parser.add_argument("--clients", type=int, help="receiving connections in total (default 60)")
    parser.add_argument("--events", type=int, help="broadcast events in total (default 3000)")
    parser.add_argument("--size", type=int, default=16, help="characters of text in each event")
    parser.add_argument("--repeats", type=int, help="runs per process count (default 3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.role == "node":
        trio.run(node, args.redis, args.prefix)
        return
    clients = args.clients or (6 if args.quick else 60)
    events = args.events or (60 if args.quick else 3000)
    repeats = args.repeats or (1 if args.quick else 3)
    counts = [int(n) for n in args.processes.split(",")]
    print(f"# {clients} receiving connections, {events} broadcast events of {args.size} characters")
    results: dict[str, Any] = {}
    for processes in counts:
        runs = [run(processes, clients, events, args.size, args.timeout) for _ in range(repeats)]
        rates = [r["events/s"] for r in runs]
        median = statistics.median(rates)
        results[str(processes)] = {"median": median, "runs": runs}
        missed = sum(r["expected"] - r["received"] for r in runs)
        print(
            f"{processes} process{'es' if processes > 1 else ''}: {median:,.0f} events/s delivered "
            f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}; events missed: {missed})",
            flush=True,
        )
    if len(counts) > 1:
        base = results[str(counts[0])]["median"]
        for processes in counts[1:]:
            ratio = results[str(processes)]["median"] / base
            print(f"{processes} ÷ {counts[0]} processes: {ratio:.2f}×")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
