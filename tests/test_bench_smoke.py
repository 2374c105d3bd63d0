"""The benchmark suite's smoke mode runs end to end: every stack, one scenario, small counts.

Only that it runs and that its output parses is checked; the figures are not asserted on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"
MISSING = [m for m in ("socketio", "aiohttp", "websockets") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"the bench extra is not installed ({', '.join(MISSING)}); pip install -e '.[bench]'",
)
def test_quick_run_of_every_stack(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--scenarios", "S1", "--timeout", "60", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {
        "wsw-wsproto",
        "wsw-trio-websocket",
        "wsw-websockets",
        "raw-trio-websocket",
        "python-socketio",
    }
    for stack, cells in results.items():
        assert cells["S1"]["failures"] == [], stack
        (value,) = cells["S1"]["values"]
        assert value > 0, stack
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# ")
    table = [line for line in lines if line.startswith("| S1")]
    # one row of medians, then one row of ratios per reference stack
    assert len(table) == 3
    assert "1.00×" in table[1] and "1.00×" in table[2]
