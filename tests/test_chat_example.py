"""The chat demo's server, driven by Python clients (the browser test drives it in Chromium)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_wswrapper as wsw
from trio_wswrapper.testing import open_test_client

from .bounded import bound_tests

CHAT = Path(__file__).resolve().parents[1] / "examples" / "chat" / "server.py"
TIMEOUT = 10


@pytest.fixture
def chat() -> Any:
    """A fresh import of examples/chat/server.py (its rooms are module state)."""
    spec = importlib.util.spec_from_file_location("chat_server_under_test", CHAT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


class Person:
    """A Python chat client: answers the nickname request and records what each room sends."""

    def __init__(self, nick: Any, rooms: tuple[str, ...] = ("lobby", "trio", "random")) -> None:
        self.answers = [nick] if not isinstance(nick, list) else list(nick)
        self.problems: list[Any] = []
        self.client = wsw.Client()
        self.client.on("nickname", self.nickname)
        self.events: list[tuple[str, str, tuple[Any, ...]]] = []
        for room in rooms:
            for event in ("message", "typing", "joined", "left", "history", "history-end"):
                self.client.of(room).on(event, self._recorder(room, event))

    def nickname(self, problem: Any) -> Any:
        self.problems.append(problem)
        return self.answers.pop(0) if self.answers else "fallback"

    def _recorder(self, room: str, event: str) -> Callable[..., None]:
        return lambda *args: self.events.append((room, event, args))

    def seen(self, room: str, event: str) -> list[tuple[Any, ...]]:
        return [args for r, e, args in self.events if (r, e) == (room, event)]

    async def wait_for(self, room: str, event: str, count: int = 1) -> list[tuple[Any, ...]]:
        with trio.fail_after(TIMEOUT):
            while len(self.seen(room, event)) < count:
                await trio.sleep(0.001)
        return self.seen(room, event)


@asynccontextmanager
async def enter(chat: Any, person: Person, path: str = "/ws") -> AsyncIterator[wsw.Client]:
    async with open_test_client(chat.server, client=person.client, path=path) as client:
        yield client


async def test_nickname_rooms_messages_typing_and_history(chat: Any) -> None:
    ann, bob = Person("ann"), Person(["", "ann", "bob"])
    async with enter(chat, ann) as a:
        assert await a.request("hello") == {"nick": "ann", "rooms": ["lobby", "trio", "random"]}
        assert ann.problems == [None]
        assert await a.of("lobby").request("join") == {"room": "lobby", "members": ["ann"]}
        first = await a.of("lobby").request("say", "  first!  ")
        async with enter(chat, bob) as b:
            # an empty and a taken nickname are asked again, with the reason
            assert (await b.request("hello"))["nick"] == "bob"
            assert bob.problems == [None, "a nickname has 1 to 24 characters", "'ann' is taken"]
            await b.of("lobby").request("join")
            assert await ann.wait_for("lobby", "joined") == [("bob",)]
            # the history stream: events, then the end marker, then the answer
            assert await b.of("lobby").request("history") == 1
            (item,) = bob.seen("lobby", "history")
            assert item[0]["id"] == first and item[0]["text"] == "first!" and item[0]["nick"] == "ann"
            assert bob.seen("lobby", "history-end") == [(1,)]
            await b.of("lobby").emit("typing")
            assert await ann.wait_for("lobby", "typing") == [("bob",)]
            assert bob.seen("lobby", "typing") == []  # not echoed to the typist
            await b.of("lobby").request("say", "hi ann")
            texts = [m[0]["text"] for m in await ann.wait_for("lobby", "message", 2)]
            assert texts == ["first!", "hi ann"]
            # rooms are separate: ann is not in "trio"
            await b.of("trio").request("join")
            await b.of("trio").request("say", "elsewhere")
            await bob.wait_for("trio", "message")
            assert ann.seen("trio", "message") == []
        assert await ann.wait_for("lobby", "left") == [("bob",)]


async def test_rejections_are_clear(chat: Any) -> None:
    ann = Person("ann")
    async with enter(chat, ann) as a:
        with pytest.raises(wsw.RemoteError, match="say hello first"):
            await a.of("lobby").request("join")
        await a.request("hello")
        with pytest.raises(wsw.RemoteError, match="join 'lobby' first"):
            await a.of("lobby").request("say", "x")
        await a.of("lobby").request("join")
        with pytest.raises(wsw.RemoteError, match="empty message"):
            await a.of("lobby").request("say", "   ")
        with pytest.raises(wsw.RemoteError, match="at most 500"):
            await a.of("lobby").request("say", "x" * 501)
        with pytest.raises(wsw.RemoteError, match="expected str"):
            await a.of("lobby").request("say", 42)
        with pytest.raises(wsw.RemoteError, match="does not exist"):
            await a.of("nowhere").request("join")


async def test_giving_no_usable_nickname_is_refused(chat: Any) -> None:
    person = Person(["", " ", "x" * 30])
    async with enter(chat, person) as client:
        with pytest.raises(wsw.RemoteError, match="no usable nickname"):
            await client.request("hello")


async def test_v4_clients_iterate_the_history_as_a_stream(chat: Any) -> None:
    ann = Person("ann")
    async with enter(chat, ann, path="/ws?protocol=4") as a:
        await a.request("hello")
        await a.of("lobby").request("join")
        for text in ("one", "two", "three"):
            await a.of("lobby").request("say", text)
        stream = await a.of("lobby").request("recent", 2)
        assert [m["text"] async for m in stream.iterate()] == ["two", "three"]


async def test_the_page_is_served_on_the_same_port(chat: Any, nursery: trio.Nursery) -> None:
    port = await nursery.start(chat.server.serve, "127.0.0.1", 0)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        with trio.fail_after(TIMEOUT):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"text/javascript" in head
    assert b'import WebSocketWrapper from "ws-wrapper"' in body
    await chat.server.aclose()


bound_tests(globals())
