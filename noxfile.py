"""Developer tasks: `nox -s tests` and `nox -s demo` (the README's commands), lint, typecheck,
stress and bench."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
JS_DIR = ROOT / "tests" / "interop" / "js"
CHAT_DIR = ROOT / "examples" / "chat"


def npm_ci(session: nox.Session, directory: Path, *, required: bool = False) -> None:
    """`npm ci` in ``directory`` unless its node_modules already match its lock file."""
    npm = shutil.which("npm")
    if npm is None:
        if required:
            session.error("npm not found: install Node.js and npm (the page's packages come from npm)")
        session.warn("npm not found: the interop and browser tests will be skipped (CI installs Node.js)")
        return
    installed = directory / "node_modules" / ".package-lock.json"
    if (
        not installed.exists()
        or (directory / "package-lock.json").stat().st_mtime > installed.stat().st_mtime
    ):
        with session.chdir(directory):
            session.run(npm, "ci", "--no-audit", "--no-fund", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite, interop with the real JavaScript peers included."""
    session.install("-e", ".[test]")
    npm_ci(session, JS_DIR)  # the JavaScript peers of the interop tests
    npm_ci(session, CHAT_DIR)  # the chat page's client, for the browser test
    # pytest exits 5 when it collects nothing; nox fails on any non-zero status.
    session.run("pytest", *session.posargs)
    if not session.posargs:
        # The whole suite again over each other transport.
        for transport in ("trio-websocket", "websockets"):
            session.run("pytest", f"--transport={transport}")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (bench/run.py; `-- --quick` is the smoke mode), then the
    typed-argument, codec and several-processes benchmarks when run without arguments."""
    session.install("-e", ".[bench,fast,redis]", "pydantic>=2", "cattrs", "msgspec")
    session.run("python", "bench/run.py", *session.posargs)
    if not session.posargs:
        session.run("python", "bench/typed_args.py")
        session.run("python", "bench/codec.py")
        session.run("python", "bench/cluster.py")  # needs redis-server on the PATH


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "trio_wswrapper", "tests", "examples", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "trio_wswrapper", "tests", "examples", "bench", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[websockets,fast,redis]", "mypy>=1.10", "pytest>=8")
    session.run("mypy", "--strict", "trio_wswrapper")


@nox.session
def stress(session: nox.Session) -> None:
    """The long reliability runs (tests/stress at full scale); prints the figures of each.

    Not a default session: it takes several minutes. `nox -s tests` runs the short versions.
    Each module runs in a fresh process so that memory figures are its own; all figures are
    also gathered as JSON in .nox/stress/tmp/stress-report.json.
    """
    session.install("-e", ".[test]")
    report = Path(session.create_tmp()) / "stress-report.json"
    report.unlink(missing_ok=True)
    env = {"WSW_STRESS": "1", "WSW_STRESS_REPORT": str(report)}
    for module in sorted((ROOT / "tests" / "stress").glob("test_*.py")):
        session.run("pytest", "-m", "stress", str(module.relative_to(ROOT)), *session.posargs, env=env)
    session.log(f"figures: {report}")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the chat demo on http://127.0.0.1:8080/ (`-- --port N` or CHAT_PORT to change it)."""
    session.install("-e", ".")
    npm_ci(session, CHAT_DIR, required=True)
    session.run("python", "examples/chat/server.py", *session.posargs)
