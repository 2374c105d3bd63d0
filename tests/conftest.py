"""Shared fixtures: a fresh server, and in-process clients and raw peers connected to it."""

from __future__ import annotations

import logging

import pytest

import trio_wswrapper as wsw


@pytest.fixture
def server() -> wsw.Server:
    """A server with no handlers; heartbeats off so virtual-time tests stay quiet."""
    return wsw.Server(heartbeat_interval=None)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Every ignored frame logs at DEBUG; capturing it keeps those code paths exercised.
    caplog.set_level(logging.DEBUG, logger="trio_wswrapper")
