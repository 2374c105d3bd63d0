"""What every stack's server and client share: the command line, the scenarios, the output.

A server prints ``READY <port>`` once it listens on 127.0.0.1 and then serves until killed.
A client runs one scenario against it and prints one JSON line: ``{"value": ..., "unit": ...}``.
Every stack's server answers the same calls:

* ``echo(x)`` → ``x`` (S1, S2, S5);
* ``broadcast(n)`` → sends the event ``tick`` ``n`` times to every connected client, then
  answers ``n`` (S3);
* ``rss()`` → the server process's resident set size in bytes, from ``VmRSS`` in
  ``/proc/self/status`` (S4).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

#: name → (description, unit, higher is better)
SCENARIOS: dict[str, tuple[str, str, bool]] = {
    "S1": ("sequential RPC", "round trips/s", True),
    "S2": ("64 requests in flight", "req/s", True),
    "S3": ("clients × broadcasts", "events/s", True),
    "S4": ("server memory per idle connection", "KiB", False),
    "S5": ("1 MB echo", "round trips/s", True),
}

#: Per scenario: (full counts, --quick counts).
COUNTS: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "S1": ({"requests": 5000}, {"requests": 200}),
    "S2": ({"requests": 20000, "in_flight": 64}, {"requests": 640, "in_flight": 64}),
    "S3": ({"clients": 100, "events": 500}, {"clients": 10, "events": 20}),
    "S4": ({"connections": 500}, {"connections": 50}),
    "S5": ({"requests": 50, "size": 1_000_000}, {"requests": 3, "size": 1_000_000}),
}

SMALL = "hello"
MAX_MESSAGE = 4 * 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process (``VmRSS`` from ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--params", default="{}", help="the scenario's counts, as JSON")
    parser.add_argument("--transport", default=None, help="trio_wswrapper's transport")
    return parser.parse_args(argv)


def ready(port: int) -> None:
    print(f"READY {port}", flush=True)


def report(value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"value": value, "unit": unit, **extra}), flush=True)


class Timer:
    """Wall-clock time of a block (``time.perf_counter``)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start


def finish(scenario: str, params: dict[str, int], elapsed: float, memory: tuple[int, int] | None) -> None:
    """Turn a scenario's measurement into its figure and print it."""
    unit = SCENARIOS[scenario][1]
    if scenario == "S4":
        assert memory is not None
        before, after = memory
        report((after - before) / params["connections"] / 1024, unit, before=before, after=after)
    elif scenario == "S3":
        report(params["clients"] * params["events"] / elapsed, unit, elapsed=elapsed)
    else:
        report(params["requests"] / elapsed, unit, elapsed=elapsed)


def main(server: Callable[[argparse.Namespace], None], client: Callable[[argparse.Namespace], None]) -> None:
    """Run the server or the client part of a stack, as the command line says."""
    args = parse_args()
    args.params = json.loads(args.params)
    if args.role == "server":
        server(args)
    else:
        client(args)
    sys.exit(0)
