"""Security properties from docs/security.md, checked against a live server where possible."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper._logging import RateLimitFilter

from .common import add, idle, make_server, wait_until
from .rawws import RawWebSocket

PACKAGE = Path(wsw.__file__).parent
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "yaml", "jsonpickle"}


def test_no_eval_exec_or_pickle_in_the_package() -> None:
    found = []
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) > 10
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                found.append(f"{path.name}:{node.lineno} {node.func.id}()")
            elif isinstance(node, ast.Import):
                found += [
                    f"{path.name}:{node.lineno} import {a.name}"
                    for a in node.names
                    if a.name in FORBIDDEN_MODULES
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{path.name}:{node.lineno} from {node.module}")
    assert found == []


async def test_error_replies_carry_no_traceback_or_internals(nursery: trio.Nursery) -> None:
    server = make_server()

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise RuntimeError("boom")

    server.on("deep", lambda: deep(20))
    server.on("empty", lambda: {}["missing"])  # KeyError('missing')
    server.on("silent", lambda: (_ for _ in ()).throw(ValueError()))
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    with trio.fail_after(10):
        async with await RawWebSocket.connect(port) as raw:
            for rid, name in enumerate(["deep", "empty", "silent", "nope"], 1):
                await raw.send_text(json.dumps({"a": [name], "i": rid}))
            replies = {}
            for _ in range(4):
                reply = await raw.receive()
                assert isinstance(reply, str)
                message = json.loads(reply)
                replies[message["i"]] = message
    assert replies == {
        1: {"i": 1, "e": {"message": "boom"}, "_": 1},
        2: {"i": 2, "e": {"message": "'missing'"}, "_": 1},
        3: {"i": 3, "e": {"message": "ValueError"}, "_": 1},
        4: {"i": 4, "e": {"message": "No event listener for 'nope'"}, "_": 1},
    }
    assert "Traceback" not in json.dumps(replies)


async def test_origin_allow_list_over_tcp(nursery: trio.Nursery) -> None:
    server = make_server(allowed_origins=["https://app.example"])
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    with trio.fail_after(10):
        with pytest.raises(ConnectionRefusedError, match="403"):
            await RawWebSocket.connect(port, origin="https://evil.example")
        for origin in ("https://app.example", "HTTPS://APP.EXAMPLE/", None):
            async with await RawWebSocket.connect(port, origin=origin) as raw:
                await raw.send_text('{"a":["echo",1],"i":1}')
                assert await raw.receive() == '{"i":1,"d":1}'
        await wait_until(lambda: idle(server))


class Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_peer_cannot_flood_the_logs(nursery: trio.Nursery) -> None:
    server = make_server(max_concurrent_handlers=4)
    counter = Counter()
    logger = logging.getLogger("trio_wswrapper")
    limiter = next(f for f in logger.filters if isinstance(f, RateLimitFilter))
    logger.addHandler(counter)
    frames = 2000
    try:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        with trio.fail_after(30):
            async with await RawWebSocket.connect(port) as raw:
                # each event makes a handler fail (wrong arity): one ERROR with a traceback
                for _ in range(frames):
                    await raw.send_text('{"a":["echo"]}')
                # fill the handler slots, then each event is dropped with a WARNING
                for rid in range(1, 5):
                    await raw.send_text(f'{{"a":["sleep"],"i":{rid}}}')
                for _ in range(frames):
                    await raw.send_text('{"a":["echo",1]}')
                await raw.send_text('{"a":["echo",1],"i":99}')
                while (
                    await raw.receive()
                ) != '{"i":99,"e":{"message":"Too many concurrent requests"},"_":1}':
                    pass
    finally:
        logger.removeHandler(counter)
    templates: dict[str, int] = {}
    for record in counter.records:
        templates[str(record.msg)] = templates.get(str(record.msg), 0) + 1
    assert templates.get("handler for event %r failed", 0) <= limiter.burst
    assert templates.get("%r: dropped event %r: too many concurrent handlers", 0) <= limiter.burst
    assert sum(templates.values()) <= 4 * limiter.burst
    add("security", "log records for 4000 hostile events", sum(templates.values()))
