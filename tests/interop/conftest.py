"""Run the real JavaScript peers (npm ws-wrapper 3.0.3, ws-server-wrapper 1.6.1) as Node.js processes.

The scripts in ``js/`` speak JSON lines on stdin/stdout (see ``js/README.md``). These tests skip
with a reason where Node.js or the npm packages are missing, except under CI, where a missing
peer is a failure: interop must never pass by being skipped there.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

JS_DIR = Path(__file__).parent / "js"
NODE = shutil.which("node")


def _missing() -> str | None:
    if NODE is None:
        return "Node.js is not installed (the interop tests run the real JavaScript peers)"
    for package in ("ws-wrapper", "ws-server-wrapper", "ws"):
        if not (JS_DIR / "node_modules" / package / "package.json").exists():
            return f"npm package {package!r} is missing: run `npm ci` in {JS_DIR}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"interop peers unavailable under CI: {reason}")
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if "interop" in item.keywords:
            item.add_marker(marker)


class NodePeer:
    """A Node.js script under test: JSON lines in, JSON lines out."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""
        self._ids = itertools.count(1)
        self._replies: dict[int, Any] = {}

    async def read_line(self, timeout: float = 10.0) -> Any:
        """The next JSON line the script printed."""
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            while b"\n" not in self._buffer:
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise EOFError(f"node exited ({self.process.returncode})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    async def command(self, op: str, timeout: float = 10.0, **fields: Any) -> Any:
        """Send one command to the client driver and return its reply."""
        assert self.process.stdin is not None
        cid = next(self._ids)
        line = json.dumps({"id": cid, "op": op, **fields}) + "\n"
        await self.process.stdin.send_all(line.encode())
        with trio.fail_after(timeout):
            while cid not in self._replies:
                reply = await self.read_line(timeout)
                self._replies[reply.get("id")] = reply
        return self._replies.pop(cid)


@asynccontextmanager
async def run_node(*args: str) -> AsyncIterator[NodePeer]:
    """Start ``node JS_DIR/args[0] args[1:]``; close its stdin and reap it on exit."""
    assert NODE is not None
    script, *rest = args
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                [NODE, str(JS_DIR / script), *rest],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
                task_status=task_status,
            )
        )
        try:
            yield NodePeer(process)
        finally:
            with trio.CancelScope(shield=True):
                if process.stdin is not None:
                    await process.stdin.aclose()
                with trio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()


@pytest.fixture
async def js_server() -> AsyncIterator[str]:
    """A ws-server-wrapper 1.6.1 server on 127.0.0.1; yields its ``ws://`` URL."""
    async with run_node("server_peer.js", "--heartbeat-ms", "200") as peer:
        port = (await peer.read_line())["port"]
        yield f"ws://127.0.0.1:{port}/"


@asynccontextmanager
async def js_client(url: str) -> AsyncIterator[NodePeer]:
    """A ws-wrapper 3.0.3 client connected to ``url``, driven by commands."""
    async with run_node("client_driver.js", url) as peer:
        assert await peer.read_line() == {"ready": True}
        yield peer
