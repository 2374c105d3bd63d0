"""The ``trio-wswrapper`` command line: in process (``_cli.run``) and as a real subprocess.

In-process tests run the command's coroutine in the test's Trio loop against a server on
127.0.0.1 and read its output with ``capsys``. Subprocess tests run ``python -m
trio_wswrapper`` with this checkout first on the path; each is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper import _cli

from . import cli_app
from .bounded import bound_tests

ROOT = Path(__file__).resolve().parent.parent
APP = str(Path(__file__).resolve().parent / "cli_app.py")
TIMEOUT = 10  # seconds; every wait on real time is bounded by this
SUBPROCESS_TIMEOUT = 30  # a child process also starts an interpreter and imports Trio


@attrs.define
class App:
    server: wsw.Server
    url: str
    notified: list[Any]


@pytest.fixture
async def app(nursery: trio.Nursery) -> AsyncIterator[App]:
    """The test application served on an ephemeral port of 127.0.0.1."""
    notified: list[Any] = []
    server = cli_app.build(notified)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    yield App(server, f"ws://127.0.0.1:{port}/", notified)
    await server.aclose()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound, never listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command in process; its exit status, stdout and stderr."""
    capsys.readouterr()
    with trio.fail_after(TIMEOUT):
        code = await _cli.run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


async def wait_for_clients(server: wsw.Server, n: int = 1) -> None:
    """Wait until ``n`` clients are connected (so that a broadcast reaches them)."""
    while sum(client.connected for client in server.clients) < n:
        await trio.sleep(0.01)


# -- arguments, help and usage errors ------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["call"], ["emit"], ["listen"], ["serve"]])
def test_help_of_each_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: trio-wswrapper {command[0] if command else ''}".rstrip())
    assert "exit status:" in out
    assert "130  interrupted" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"trio-wswrapper {wsw.__version__}"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err
    assert _cli.main(["call", "ws://127.0.0.1:1/"]) == 2
    assert _cli.main(["call", "--timeout", "0", "ws://127.0.0.1:1/", "x"]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert _cli.main(["--header", "no colon", "emit", "ws://127.0.0.1:1/", "x"]) == 2
    assert "expected 'Name: value'" in capsys.readouterr().err
    assert _cli.main(["serve", "x.py", "--port", "70000"]) == 2
    assert "port out of range" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("http://127.0.0.1:8080/", "the scheme must be ws:// or wss://"),
        ("ws:///path", "no host"),
        ("127.0.0.1:8080", "the scheme must be ws:// or wss://"),
        ("ws://127.0.0.1:notaport/", "invalid WebSocket URL"),
    ],
)
async def test_bad_urls(url: str, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["call", url, "echo"], ["emit", url, "echo"], ["listen", url]):
        code, out, err = await cli(capsys, *command)
        assert (code, out) == (2, "")
        assert err.startswith("trio-wswrapper: error: invalid WebSocket URL")
        assert text in err
        assert len(err.splitlines()) == 1


async def test_invalid_json_argument_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, "call", "ws://127.0.0.1:1/", "echo", "1", "hello")
    assert (code, out) == (2, "")
    assert "argument 2 ('hello') is not valid JSON" in err
    assert "--raw-strings" in err
    code, _, err = await cli(capsys, "call", "ws://127.0.0.1:1/", "echo", "NaN")
    assert code == 2
    assert "argument 1 ('NaN') is not valid JSON" in err


async def test_reserved_event_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await cli(capsys, "call", "ws://127.0.0.1:1/", "open")
    assert code == 2
    assert "'open' is a reserved event name" in err
    # ... but only on the main channel (PROTOCOL.md §11).
    code, _, err = await cli(capsys, "call", "ws://127.0.0.1:1/", "-c", "room", "open", "--timeout", "5")
    assert code == 2
    assert "cannot connect" in err


# -- call ----------------------------------------------------------------------------------------


async def test_call_prints_the_answer_as_json(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, "call", app.url, "echo", '{"a": [1, 2.5, null, "é"]}')
    assert (code, err) == (0, "")
    assert out == '{"a": [1, 2.5, null, "é"]}\n'
    code, out, _ = await cli(capsys, "call", app.url, "echo", "1", "true", '"x"')
    assert (code, lines(out)) == (0, [[1, True, "x"]])
    code, out, _ = await cli(capsys, "call", app.url, "echo")
    assert (code, out) == (0, "[]\n")


async def test_call_pretty(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(capsys, "call", "--pretty", app.url, "echo", '{"a": 1}')
    assert (code, out) == (0, '{\n  "a": 1\n}\n')


async def test_call_raw_strings(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(capsys, "call", "-s", app.url, "echo", "plain text", "42")
    assert (code, lines(out)) == (0, [["plain text", "42"]])


async def test_call_on_a_named_channel(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(capsys, "call", app.url, "--channel", "chat", "say", '"hi"')
    assert (code, lines(out)) == (0, ["heard hi"])
    code, out, err = await cli(capsys, "call", app.url, "--channel", "nowhere", "say", '"hi"')
    assert (code, out) == (1, "")
    assert lines(err) == [{"message": "Channel 'nowhere' does not exist"}]


async def test_call_rejected_prints_the_payload_and_exits_1(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(capsys, "call", app.url, "fail", '"boom"')
    assert (code, out) == (1, "")
    assert lines(err) == [{"message": "boom"}]
    code, out, err = await cli(capsys, "call", app.url, "nope")
    assert (code, out, lines(err)) == (1, "", ["nope"])
    code, out, err = await cli(capsys, "call", app.url, "missing")
    assert (code, lines(err)) == (1, [{"message": "No event listener for 'missing'"}])


async def test_call_streams_values_until_done(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, "call", app.url, "ticks", "5")
    assert (code, err) == (0, "")
    assert lines(out) == [0, 1, 2, 3, 4]
    code, out, _ = await cli(capsys, "call", app.url, "ticks", "0")
    assert (code, out) == (0, "")


async def test_call_stream_count_stops_the_producer(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(capsys, "call", app.url, "ticks", "1000000", "--count", "3")
    assert (code, lines(out)) == (0, [0, 1, 2])


async def test_call_stream_aborted_by_the_producer_exits_1(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(capsys, "call", app.url, "boom")
    assert code == 1
    assert lines(out) == [1]
    assert lines(err) == [{"message": "gen blew up"}]


async def test_call_prints_channel_events(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(capsys, "call", app.url, "count", "2", "--until", "end", "--no-start")
    assert code == 0
    assert lines(out) == [
        {"event": "data", "args": [0]},
        {"event": "data", "args": [1]},
        {"event": "end", "args": []},
    ]
    code, out, _ = await cli(capsys, "call", app.url, "count", "5", "--count", "2")
    assert (code, len(lines(out))) == (0, 2)


async def test_call_timeout_exits_3_and_cancels_the_request(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(capsys, "call", app.url, "sleep", "100", "--timeout", "0.3")
    assert (code, out) == (3, "")
    assert err == "trio-wswrapper: error: timed out after 0.3 s waiting for the answer\n"
    with trio.fail_after(TIMEOUT):
        while app.server.statistics().active_requests or app.server.clients:
            await trio.sleep(0.01)


async def test_call_refused_exits_2(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, "call", f"ws://127.0.0.1:{closed_port}/", "echo")
    assert (code, out) == (2, "")
    assert err.startswith(f"trio-wswrapper: error: cannot connect to ws://127.0.0.1:{closed_port}/")
    assert "Connection refused" in err
    assert len(err.splitlines()) == 1


async def test_call_handshake_rejected_exits_2(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    def authorize(handshake: wsw.Handshake) -> None:
        if handshake.header("authorization") != "Bearer sesame":
            raise wsw.Reject(401, "who are you?")

    server = wsw.Server(heartbeat_interval=None, authorize=authorize)
    server.on("echo", lambda x: x)
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{port}/"
    code, out, err = await cli(capsys, "call", url, "echo", "1")
    assert (code, out) == (2, "")
    assert err == "trio-wswrapper: error: handshake rejected with HTTP 401: who are you?\n"
    # Headers go before or after the command.
    code, out, _ = await cli(capsys, "-H", "Authorization: Bearer sesame", "call", url, "echo", "1")
    assert (code, out) == (0, "1\n")
    code, out, _ = await cli(capsys, "call", url, "echo", "2", "--header", "authorization:Bearer sesame")
    assert (code, out) == (0, "2\n")
    await server.aclose()


async def test_headers_from_both_places_are_sent(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-H", "X-One: 1", "call", app.url, "header", '"x-two"', "-H", "X-Two: 2"]
    code, out, _ = await cli(capsys, *argv)
    assert (code, out) == (0, '"2"\n')
    argv[5] = '"x-one"'
    code, out, _ = await cli(capsys, *argv)
    assert (code, out) == (0, '"1"\n')


async def test_call_connection_closed_by_the_server_exits_2(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    async def close_soon() -> None:
        await wait_for_clients(app.server)
        await app.server.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        code, out, err = await cli(capsys, "call", app.url, "sleep", "100")
    assert (code, out) == (2, "")
    assert err == "trio-wswrapper: error: connection closed (1001): server is closing\n"


async def test_compat_modes(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(capsys, "--compat", "v3", "call", app.url, "echo", "1")
    assert (code, out) == (0, "1\n")
    # In go16 mode there are no anonymous channels, so a stream answer cannot be consumed.
    code, out, err = await cli(capsys, "call", "--compat", "go16", app.url, "ticks", "2")
    assert (code, out) == (2, "")
    assert err == "trio-wswrapper: error: Anonymous channels are not supported by this peer\n"


# -- emit ----------------------------------------------------------------------------------------


async def test_emit_sends_and_closes_normally(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    closes: list[tuple[int, str]] = []
    app.server.on("close", lambda client, code, reason, user: closes.append((code, reason)))
    code, out, err = await cli(capsys, "emit", app.url, "notify", '{"k": 1}', "2")
    assert (code, out, err) == (0, "", "")
    with trio.fail_after(TIMEOUT):
        while not closes:
            await trio.sleep(0.01)
    assert app.notified == [[{"k": 1}, 2]]
    assert closes == [(1000, "")]


async def test_emit_refused_exits_2(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await cli(capsys, "emit", f"ws://127.0.0.1:{closed_port}/", "notify")
    assert code == 2
    assert "Connection refused" in err


# -- listen --------------------------------------------------------------------------------------


async def listen_while(app: App, capsys: pytest.CaptureFixture[str], argv: list[str], act: Any) -> Any:
    """Run ``listen`` with ``argv``; once it is connected, await ``act()``; return the result."""
    result: list[tuple[int, str, str]] = []

    async def listen() -> None:
        result.append(await cli(capsys, "listen", app.url, *argv))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await wait_for_clients(app.server)
            await act()
    return result[0]


async def test_listen_prints_events_until_count(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    async def act() -> None:
        await app.server.emit("news", "hello", 1)
        await app.server.of("chat").emit("message", {"from": "bob"})
        await app.server.emit("news", "never printed")

    code, out, err = await listen_while(app, capsys, ["--count", "2"], act)
    assert code == 0
    assert lines(out) == [
        {"channel": None, "event": "news", "args": ["hello", 1]},
        {"channel": "chat", "event": "message", "args": [{"from": "bob"}]},
    ]
    assert err == f"trio-wswrapper: listening on {app.url}\n"


async def test_listen_filters(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    async def act() -> None:
        await app.server.emit("news", 1)
        await app.server.of("chat").emit("news", 2)
        await app.server.of("chat").emit("other", 3)
        await app.server.of("room").emit("news", 4)
        await app.server.emit("news", 5)

    argv = ["-q", "--channel", "chat", "--channel", "", "--event", "news", "-n", "3"]
    code, out, err = await listen_while(app, capsys, argv, act)
    assert (code, err) == (0, "")
    assert [(e["channel"], e["args"]) for e in lines(out)] == [(None, [1]), ("chat", [2]), (None, [5])]


async def test_listen_rejects_requests(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    answers: list[str] = []

    async def act() -> None:
        client = app.server.clients[0]
        for target in (client, client.of("chat")):
            with pytest.raises(wsw.RemoteError) as info:
                await target.request("ping", 1)
            answers.append(info.value.message)
        await app.server.emit("done")

    code, out, err = await listen_while(app, capsys, ["-n", "1"], act)
    assert code == 0
    assert answers == ["No event listener for 'ping'", "Channel 'chat' does not exist"]
    assert lines(out) == [{"channel": None, "event": "done", "args": []}]
    assert "rejected request 'ping' (listening only)" in err


async def test_listen_ends_when_the_server_closes(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    async def act() -> None:
        await app.server.aclose()

    code, out, err = await listen_while(app, capsys, [], act)
    assert (code, out) == (0, "")
    assert err.endswith("trio-wswrapper: the server closed the connection (1001: server is closing)\n")


async def test_listen_abnormal_close_exits_2(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    async def act() -> None:
        await app.server.clients[0].aclose(4000, "kicked")

    code, out, err = await listen_while(app, capsys, [], act)
    assert (code, out) == (2, "")
    assert err.endswith("error: the server closed the connection (4000: kicked)\n")


async def test_listen_timeout(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    async def nothing() -> None:
        pass

    code, out, err = await listen_while(app, capsys, ["-q", "--timeout", "0.2"], nothing)
    assert (code, out, err) == (0, "", "")
    code, out, err = await listen_while(app, capsys, ["-q", "--timeout", "0.2", "--count", "1"], nothing)
    assert (code, out) == (3, "")
    assert err == "trio-wswrapper: error: timed out after 0.2 s with 0 of 1 events\n"


async def test_listen_refused_exits_2(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await cli(capsys, "listen", f"ws://127.0.0.1:{closed_port}/")
    assert code == 2
    assert "Connection refused" in err


# -- serve (in process) --------------------------------------------------------------------------


async def serve_in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    """Start ``serve`` in a task; call ``echo`` through the printed URL; stop it. Its output."""
    capsys.readouterr()
    out = ""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cli.run, ["serve", *argv, "--port", "0"])
            while "serving" not in out:
                await trio.sleep(0.01)
                out += capsys.readouterr().out
            url = out.split()[1]
            async with wsw.open_client(url) as client:
                assert await client.request("echo", "hi") == "hi"
            nursery.cancel_scope.cancel()
    return out, url


@pytest.mark.parametrize(
    "app_spec",
    [
        APP,
        f"{APP}:server",
        f"{APP}:make_server",
        f"{APP}:make_server_async",
        "tests.cli_app",
        "tests.cli_app:make_server",
    ],
)
async def test_serve_loads_apps(app_spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    out, url = await serve_in_process(capsys, app_spec)
    assert out == f"serving {url}\n"
    assert url.startswith("ws://127.0.0.1:")


async def test_serve_prints_the_http_url_when_the_server_has_static_files(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The static-file feature is optional: the command only looks for a truthy ``static``.
    monkeypatch.setattr(wsw.Server, "static", "somewhere", raising=False)
    out, url = await serve_in_process(capsys, APP)
    assert out == f"serving {url}\nserving {url.replace('ws://', 'http://')}\n"


@pytest.mark.parametrize(
    ("app_spec", "text"),
    [
        ("tests/no_such_file.py:server", "no such file"),
        ("no_such_module_xyz:server", "no module named 'no_such_module_xyz'"),
        (f"{APP}:missing", "has no attribute 'missing'"),
        (f"{APP}:not_a_server", "not_a_server is a int, not a trio_wswrapper.Server"),
        (f"{APP}:build.__name__", "is a str, not a trio_wswrapper.Server"),
        (":server", "expected path/to/file.py:NAME or module:NAME"),
    ],
)
async def test_serve_load_errors_exit_2(app_spec: str, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, "serve", app_spec, "--port", "0")
    assert (code, out) == (2, "")
    assert err.startswith("trio-wswrapper: error: cannot load")
    assert text in err
    assert len(err.splitlines()) == 1


async def test_serve_app_raising_on_import_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken_app.py"
    broken.write_text("raise RuntimeError('no database')\n")
    code, _, err = await cli(capsys, "serve", f"{broken}:server", "--port", "0")
    assert code == 2
    assert "RuntimeError: no database" in err
    factory = tmp_path / "factory_app.py"
    factory.write_text("def make():\n    raise KeyError('config')\n")
    code, _, err = await cli(capsys, "serve", f"{factory}:make", "--port", "0")
    assert code == 2
    assert "make() raised KeyError" in err


async def test_serve_port_in_use_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await cli(capsys, "serve", APP, "--port", str(port))
    assert (code, out) == (2, "")
    assert err == f"trio-wswrapper: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


# -- as a subprocess -----------------------------------------------------------------------------


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def _command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "trio_wswrapper", *argv]


async def run_cli(*argv: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(SUBPROCESS_TIMEOUT):
        return await trio.run_process(
            _command(*argv), capture_stdout=True, capture_stderr=True, check=False, env=_env(), cwd=ROOT
        )


async def test_subprocess_call(app: App) -> None:
    done = await run_cli("call", app.url, "echo", '{"a": 1}')
    assert (done.returncode, done.stdout, done.stderr) == (0, b'{"a": 1}\n', b"")
    done = await run_cli("call", app.url, "ticks", "3")
    assert (done.returncode, done.stdout) == (0, b"0\n1\n2\n")


async def test_subprocess_call_rejected(app: App) -> None:
    done = await run_cli("call", app.url, "fail", '"boom"')
    assert (done.returncode, done.stdout, done.stderr) == (1, b"", b'{"message": "boom"}\n')


async def test_subprocess_call_refused(closed_port: int) -> None:
    done = await run_cli("call", f"ws://127.0.0.1:{closed_port}/", "echo")
    assert (done.returncode, done.stdout) == (2, b"")
    assert b"Connection refused" in done.stderr
    assert b"Traceback" not in done.stderr


async def test_subprocess_bad_url() -> None:
    done = await run_cli("call", "localhost:8080", "echo")
    assert done.returncode == 2
    assert done.stderr.startswith(b"trio-wswrapper: error: invalid WebSocket URL")


async def test_subprocess_help() -> None:
    for command in ("call", "emit", "listen", "serve"):
        done = await run_cli(command, "--help")
        assert done.returncode == 0
        assert done.stdout.startswith(f"usage: trio-wswrapper {command}".encode())


async def test_subprocess_emit(app: App) -> None:
    done = await run_cli("emit", app.url, "notify", "1", '"two"')
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert app.notified == [[1, "two"]]


async def test_subprocess_listen_count(app: App) -> None:
    result: list[subprocess.CompletedProcess[bytes]] = []

    async def listen() -> None:
        result.append(await run_cli("listen", app.url, "--count", "2"))

    with trio.fail_after(SUBPROCESS_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await wait_for_clients(app.server)
            await app.server.emit("news", "a")
            await app.server.of("chat").emit("news", "b")
    done = result[0]
    assert done.returncode == 0
    assert lines(done.stdout.decode()) == [
        {"channel": None, "event": "news", "args": ["a"]},
        {"channel": "chat", "event": "news", "args": ["b"]},
    ]


async def test_subprocess_listen_interrupted(app: App) -> None:
    with trio.fail_after(SUBPROCESS_TIMEOUT):
        process = await trio.lowlevel.open_process(
            _command("listen", app.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=ROOT
        )
        try:
            assert process.stderr is not None
            err = b""
            while not err.endswith(b"\n"):
                chunk = await process.stderr.receive_some()
                assert chunk, "listen exited early"
                err += chunk
            assert err == f"trio-wswrapper: listening on {app.url}\n".encode()
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
            assert await _read_all(process.stderr) == b""  # no traceback
        finally:
            process.kill()
            await process.wait()


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def test_subprocess_serve_then_call(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(SUBPROCESS_TIMEOUT):
        process = await trio.lowlevel.open_process(
            _command("serve", "tests/cli_app.py", "--port", "0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
            cwd=ROOT,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            out = b""
            while not out.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "serve exited early"
                out += chunk
            assert out.startswith(b"serving ws://127.0.0.1:")
            url = out.split()[1].decode()
            code, answer, _ = await cli(capsys, "call", url, "echo", '"over the wire"')
            assert (code, answer) == (0, '"over the wire"\n')
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
            assert await _read_all(process.stderr) == b""
        finally:
            process.kill()
            await process.wait()


bound_tests(globals())
