"""Run the benchmark scenarios for every stack and print a table of medians.

Each run starts the stack's server and then its client as separate processes
(``sys.executable -m bench.stacks.<module>``) on 127.0.0.1 with an ephemeral port; the client
prints one JSON line with the figure. Every run is bounded by ``--timeout``; a run that fails
or times out is shown in the table as such, never dropped silently.

    python bench/run.py                 # 7 repeats of S1–S5 for every stack
    python bench/run.py --quick         # 1 repeat with small counts (the CI smoke mode)
    python bench/run.py --stacks raw-trio-websocket,wsw-wsproto --scenarios S1,S2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import COUNTS, SCENARIOS  # noqa: E402

#: stack name → (module under bench.stacks, extra command-line arguments)
STACKS: dict[str, tuple[str, list[str]]] = {
    "wsw-wsproto": ("wsw", ["--transport", "wsproto"]),
    "wsw-trio-websocket": ("wsw", ["--transport", "trio-websocket"]),
    "wsw-websockets": ("wsw", ["--transport", "websockets"]),
    "raw-trio-websocket": ("raw_trio_websocket", []),
    "python-socketio": ("python_socketio", []),
}
#: The stacks the ratios are taken against.
REFERENCES = ("raw-trio-websocket", "python-socketio")
#: What each stack needs installed beyond trio_wswrapper's own dependencies.
NEEDS = {"wsw-websockets": "websockets", "python-socketio": "socketio"}


@dataclass
class Cell:
    """The runs of one stack in one scenario."""

    values: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def text(self, higher_is_better: bool) -> str:
        if not self.values:
            return "FAILED: " + (self.failures[0] if self.failures else "no run")
        median = statistics.median(self.values)
        out = _fmt(median)
        if len(self.values) > 1:
            out += f" ({_fmt(min(self.values))}–{_fmt(max(self.values))})"
        if self.failures:
            out += f" [{len(self.failures)} failed]"
        return out

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def _fmt(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_error(stderr: str) -> str:
    """The first line naming an exception in a traceback (the root cause), else the tail."""
    for line in stderr.splitlines():
        text = line.strip(" |+-")
        skip = text.startswith(("File ", "ExceptionGroup", "BaseExceptionGroup", "Traceback"))
        if not skip and ":" in text and ("Error" in text or "Exception:" in text):
            return text[:300]
    return stderr.strip()[-300:]


def run_once(stack: str, scenario: str, params: dict[str, int], timeout: float) -> float:
    """One server process and one client process; the client's figure, or an exception."""
    module, extra = STACKS[stack]
    command = [sys.executable, "-m", f"bench.stacks.{module}"]
    deadline = time.monotonic() + timeout
    server = subprocess.Popen(
        [*command, "server", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = server.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            _stop(server)
            err = server.stderr.read() if server.stderr else ""
            raise RuntimeError(f"server did not start: {(line + err).strip()[-300:] or 'timed out'}")
        port = int(line.split()[1])
        try:
            done = subprocess.run(
                [
                    *command,
                    "client",
                    "--port",
                    str(port),
                    "--scenario",
                    scenario,
                    "--params",
                    json.dumps(params),
                    *extra,
                ],
                capture_output=True,
                text=True,
                env=_env(),
                cwd=ROOT,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {timeout:.0f} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"client exited {done.returncode}: {_last_error(done.stderr)}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return float(result["value"])
    finally:
        _stop(server)


def installed(stack: str) -> str | None:
    """Why ``stack`` cannot run here, or None."""
    module = NEEDS.get(stack)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return f"{module} not installed (pip install -e '.[bench]')"
    return None


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, {platform.system()}"


def table(results: dict[str, dict[str, Cell]], stacks: list[str], scenarios: list[str]) -> str:
    """Markdown table: medians (min–max) per stack and scenario, then the ratios."""
    header = ["scenario", *stacks]
    rows = [header, ["---"] * len(header)]
    for scenario in scenarios:
        name, unit, higher = SCENARIOS[scenario]
        rows.append([f"{scenario} {name}, {unit}", *(results[s][scenario].text(higher) for s in stacks)])
    for ref in REFERENCES:
        if ref not in stacks:
            continue
        for scenario in scenarios:
            base = results[ref][scenario].median
            cells = []
            for s in stacks:
                value = results[s][scenario].median
                cells.append("—" if value is None or not base else f"{value / base:.2f}×")
            rows.append([f"{scenario} ÷ {ref}", *cells])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 repeat with small counts (smoke mode)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell (default 7, 1 with --quick)")
    parser.add_argument("--stacks", default=",".join(STACKS), help="comma-separated: " + ", ".join(STACKS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: S1…S5")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run (default 120, 60 quick)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    args = parser.parse_args(argv)

    stacks = [s for s in args.stacks.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in stacks if s not in STACKS] + [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown stack or scenario: {', '.join(unknown)}")
    repeats = args.repeats or (1 if args.quick else 7)
    timeout = args.timeout or (60.0 if args.quick else 120.0)

    print(f"# {machine()}; {repeats} run(s) per cell{' (quick counts)' if args.quick else ''}", flush=True)
    results = {s: {sc: Cell() for sc in scenarios} for s in stacks}
    for scenario in scenarios:
        params = COUNTS[scenario][1 if args.quick else 0]
        for stack in stacks:
            cell = results[stack][scenario]
            missing = installed(stack)
            if missing:
                cell.failures.append(missing)
                continue
            for _ in range(repeats):
                try:
                    cell.values.append(run_once(stack, scenario, params, timeout))
                except Exception as exc:
                    cell.failures.append(str(exc).replace("\n", " ").replace("|", "/"))
            print(f"{scenario} {stack}: {cell.text(SCENARIOS[scenario][2])}", file=sys.stderr, flush=True)

    print(table(results, stacks, scenarios))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "repeats": repeats,
                    "quick": args.quick,
                    "results": {
                        s: {sc: {"values": c.values, "failures": c.failures} for sc, c in cells.items()}
                        for s, cells in results.items()
                    },
                },
                indent=2,
            )
        )
    failed = any(c.failures for cells in results.values() for c in cells.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
