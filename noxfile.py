"""Developer tasks: `nox -s tests` (the README's test command), lint, typecheck, demo, bench."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
JS_DIR = ROOT / "tests" / "interop" / "js"


def install_js_peers(session: nox.Session) -> None:
    """Install the pinned JavaScript peers for the interop tests, when npm is available."""
    npm = shutil.which("npm")
    if npm is None:
        session.warn("npm not found: the interop tests will be skipped (CI installs Node.js)")
        return
    if not (JS_DIR / "node_modules" / ".package-lock.json").exists() or (
        (JS_DIR / "package-lock.json").stat().st_mtime
        > (JS_DIR / "node_modules" / ".package-lock.json").stat().st_mtime
    ):
        with session.chdir(JS_DIR):
            session.run(npm, "ci", "--no-audit", "--no-fund", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite, interop with the real JavaScript peers included."""
    session.install("-e", ".[test]")
    install_js_peers(session)
    # pytest exits 5 when it collects nothing; nox fails on any non-zero status.
    session.run("pytest", *session.posargs)
    if not session.posargs:
        # The end-to-end and interop tests again over each other transport.
        for transport in ("trio-websocket", "websockets"):
            session.run(
                "pytest",
                f"--transport={transport}",
                "tests/test_client_server.py",
                "tests/test_regressions.py",
                "tests/interop",
            )


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (bench/run.py); `nox -s bench -- --quick` is the smoke mode."""
    session.install("-e", ".[bench]")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "trio_wswrapper", "tests", "examples", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "trio_wswrapper", "tests", "examples", "bench", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy", "--strict", "trio_wswrapper")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo: a server and a client talking over loopback."""
    session.install("-e", ".")
    session.run("python", "examples/demo.py", *session.posargs)
