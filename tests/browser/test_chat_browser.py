"""The chat demo in real headless Chromium: two people, a room, typing, history, a restart.

The pages load the npm ws-wrapper client as ES modules from our server and talk to it over a
WebSocket on the same port. Playwright drives the system's Chromium (Debian's package; no
browser download). Screenshots are kept in ``test-artifacts/``. Without Chromium or Playwright
the test skips, except under CI, where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "chat"
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 15_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if _chromium() is None:
        return "no Chromium on this machine (Debian: apt-get install chromium)"
    if not (CHAT / "node_modules" / "ws-wrapper" / "package.json").exists():
        return f"the chat page's npm packages are missing: run `npm ci` in {CHAT}"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run under CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class ChatServer:
    """``examples/chat/server.py`` as a child process."""

    def __init__(self, port: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHAT / "server.py"), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            self.stop()
            raise AssertionError(f"the chat server did not start: {line!r}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> str:
        """Interrupt it as Ctrl-C would; return what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            out, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out or ""


def join(page: Any, url: str, nick: str) -> None:
    page.goto(url)
    page.locator("#nick").fill(nick)  # the dialog the server's "nickname" request opened
    page.locator("#nick-ok").click()
    page.locator("#me").filter(has_text=nick).wait_for()
    page.locator("#room-title").filter(has_text="# lobby").wait_for()
    page.locator("#text:enabled").wait_for()


def test_two_people_chat_in_chromium(browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    server = ChatServer()
    try:
        ann_page = browser.new_context().new_page()
        bob_page = browser.new_context().new_page()
        errors: list[str] = []
        for page in (ann_page, bob_page):
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda exc: errors.append(str(exc)))

        join(ann_page, server.url, "ann")
        ann_page.locator("#text").fill("hello from ann")
        ann_page.locator("#send").click()
        ann_page.locator("#messages li.message", has_text="hello from ann").wait_for()

        # bob arrives later: the history stream brings ann's message
        join(bob_page, server.url, "bob")
        bob_page.locator("#messages li.history", has_text="hello from ann").wait_for()
        ann_page.locator("#members li", has_text="bob").wait_for()
        ann_page.locator("#messages li.notice", has_text="bob joined").wait_for()

        # typing notices, both ways
        ann_page.locator("#text").press_sequentially("typing...")
        bob_page.locator("#typing", has_text="ann is typing").wait_for()
        bob_page.locator("#text").press_sequentially("hi")
        ann_page.locator("#typing", has_text="bob is typing").wait_for()

        bob_page.locator("#text").fill("hi ann")
        bob_page.locator("#send").click()
        ann_page.locator("#messages li.message", has_text="hi ann").wait_for()
        bob_page.locator("#messages li.message", has_text="hi ann").wait_for()
        # the notice goes once bob's message arrives
        ann_page.locator("#typing", has_text="bob is typing").wait_for(state="hidden")

        ann_page.screenshot(path=str(ARTIFACTS / "chat-ann.png"))
        bob_page.screenshot(path=str(ARTIFACTS / "chat-bob.png"))

        # the server goes away: a clear banner; it comes back: the page reconnects and rejoins
        port = server.port
        server.stop()
        ann_page.locator("#banner:visible", has_text="Connection to the server lost").wait_for()
        ann_page.locator("#status", has_text="offline").wait_for()
        ann_page.screenshot(path=str(ARTIFACTS / "chat-offline.png"))
        server = ChatServer(port)
        ann_page.locator("#status", has_text="online").wait_for(timeout=30_000)
        ann_page.locator("#banner").wait_for(state="hidden")
        ann_page.locator("#text:enabled").wait_for()
        ann_page.locator("#text").fill("back again")
        ann_page.locator("#send").click()
        bob_page.locator("#messages li.message", has_text="back again").wait_for(timeout=30_000)
        assert errors == []
        print(f"screenshots in {ARTIFACTS}")
    finally:
        output = server.stop()
        assert "Traceback" not in output, output
