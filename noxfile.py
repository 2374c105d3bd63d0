"""Developer tasks: `nox -s tests` (the README's test command), lint, typecheck, demo."""

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


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "trio_wswrapper", "tests", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "trio_wswrapper", "tests", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".", "mypy>=1.10", "pytest>=8")
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
    """Run the demo: a server and a client talking over loopback."""
    session.install("-e", ".")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: typed-argument conversion against pydantic and cattrs; codecs (orjson)."""
    session.install("-e", ".[fast]", "pydantic>=2", "cattrs", "msgspec")
    session.run("python", "bench/typed_args.py")
    session.run("python", "bench/codec.py")
