"""Reliability suite hooks: the ``stress`` marker on every test here, and the figures report.

The figures recorded by the tests are printed at the end of the run and, when
``WSW_STRESS_REPORT`` names a file, written there as JSON (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from .common import FIGURES, LONG


@pytest.fixture(autouse=True)
def _no_debug_capture(caplog: pytest.LogCaptureFixture) -> None:
    # The suite-wide DEBUG capture would keep a record (and what it references: clients,
    # exceptions with their frames and payloads) for every ignored frame of a long run.
    caplog.set_level(logging.INFO, logger="trio_wswrapper")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.stress)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section(f"reliability figures ({'long' if LONG else 'short'} run)")
    for test, figures in FIGURES.items():
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{test}: {shown}")
    target = os.environ.get("WSW_STRESS_REPORT")
    if target:
        # merged, so that one report can gather several pytest runs (nox -s stress runs
        # each module in a fresh process, so that memory figures are not mixed up)
        path = Path(target)
        report = json.loads(path.read_text()) if path.exists() else {"long": LONG, "figures": {}}
        report["figures"].update(FIGURES)
        path.write_text(json.dumps(report, indent=2) + "\n")
