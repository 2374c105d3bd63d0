"""A chat server: the web page, its scripts and the ws-wrapper endpoint on one port.

Run ``python examples/chat/server.py`` (or ``nox -s demo``) and open the URL it prints in two
browser windows. What it exercises:

* rooms are named channels (``server.of(room)``); the server keeps each room's members and
  sends to members only;
* the server asks every new browser for a nickname: a server-to-client request;
* typing notices are events;
* a room's recent history is a stream the page consumes: the npm registry serves ws-wrapper
  3.0.3 to the page, which predates anonymous channels, so the stream is a run of ``history``
  events ending with ``history-end`` on the room's channel (ws-wrapper 4 and Python clients that
  connect with ``?protocol=4`` can also iterate ``recent``, a true stream, PROTOCOL.md §10);
* a dropped connection shows a banner on the page, which reconnects and rejoins.

Options: ``--host``/``--port`` (defaults 127.0.0.1 and 8080; ``CHAT_HOST`` and ``CHAT_PORT``
too). ``--port 0`` picks a free port; the URL printed has the real one.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

import trio_wswrapper as wsw

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
NODE_MODULES = HERE / "node_modules"
ROOMS = ("lobby", "trio", "random")
HISTORY = 100  # messages kept per room
MAX_TEXT = 500
MAX_NICK = 24
SEND_TIMEOUT = 1.0  # a member whose queue stays full this long misses the message


class Room:
    """One room: its members (client → nickname) and its recent messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[wsw.Client, str] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    async def send(self, event: str, *args: Any, skip: wsw.Client | None = None) -> None:
        """Send ``event`` on this room's channel to every member but ``skip``.

        Each member gets it in turn, waiting at most ``SEND_TIMEOUT`` for a full queue, so a
        stalled browser delays the others briefly and then misses the message.
        """
        for member in list(self.members):
            if member is skip or not member.connected:
                continue
            with trio.move_on_after(SEND_TIMEOUT), contextlib.suppress(wsw.ConnectionClosed):
                await member.of(self.name).emit(event, *args)


rooms = {name: Room(name) for name in ROOMS}
_ids = itertools.count(1)

server = wsw.Server(
    peer_compat="v3",  # the page's ws-wrapper 3.0.3
    heartbeat_interval=30,
    static={
        "/": STATIC,
        "/vendor/ws-wrapper/": NODE_MODULES / "ws-wrapper",
        "/vendor/eventemitter3/": NODE_MODULES / "eventemitter3",
    },
)


@server.on("open")
def opened(client: wsw.Client) -> None:
    handshake = client.handshake
    if handshake is not None and handshake.query.get("protocol") == ["4"]:
        client.peer_compat = "v4"  # ws-wrapper 4 and trio_wswrapper clients stream for real


@server.on("close")
async def closed(client: wsw.Client, code: int, reason: str, user_closed: bool) -> None:
    for room in rooms.values():
        nick = room.members.pop(client, None)
        if nick is not None:
            await room.send("left", nick)


def _nick_of(client: wsw.Client) -> str:
    nick = client.data.get("nick")
    if nick is None:
        raise wsw.RemoteError("say hello first: the server has not got your nickname")
    return str(nick)


def _valid_nick(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    nick = " ".join(value.split())
    return nick if 0 < len(nick) <= MAX_NICK else None


@server.on("hello")
async def hello() -> dict[str, Any]:
    """Ask the browser for a nickname (up to three times) and answer with the rooms."""
    client = wsw.current_client()
    problem = None
    for _ in range(3):
        answer = await client.request("nickname", problem, timeout=300)
        nick = _valid_nick(answer)
        taken = {n for room in rooms.values() for c, n in room.members.items() if c is not client}
        if nick is None:
            problem = f"a nickname has 1 to {MAX_NICK} characters"
        elif nick in taken:
            problem = f"{nick!r} is taken"
        else:
            client.data["nick"] = nick
            return {"nick": nick, "rooms": list(ROOMS)}
    raise wsw.RemoteError(f"no usable nickname: {problem}")


def _room_handlers(room: Room) -> None:
    channel = server.of(room.name)

    @channel.on("join")
    async def join() -> dict[str, Any]:
        client = wsw.current_client()
        nick = _nick_of(client)
        if client not in room.members:
            room.members[client] = nick
            await room.send("joined", nick, skip=client)
        return {"room": room.name, "members": sorted(room.members.values())}

    @channel.on("leave")
    async def leave() -> None:
        client = wsw.current_client()
        nick = room.members.pop(client, None)
        if nick is not None:
            await room.send("left", nick)

    @channel.on("say")
    async def say(text: str) -> int:
        client = wsw.current_client()
        if client not in room.members:
            raise wsw.RemoteError(f"join {room.name!r} first")
        text = text.strip()
        if not text:
            raise wsw.RemoteError("empty message")
        if len(text) > MAX_TEXT:
            raise wsw.RemoteError(f"messages have at most {MAX_TEXT} characters")
        message = {"id": next(_ids), "nick": room.members[client], "text": text, "ts": time.time()}
        room.history.append(message)
        await room.send("message", message)
        return int(message["id"])

    @channel.on("typing")
    async def typing() -> None:
        client = wsw.current_client()
        nick = room.members.get(client)
        if nick is not None:
            await room.send("typing", nick, skip=client)

    @channel.on("history")
    async def history(limit: int = HISTORY) -> int:
        """Stream the recent messages as ``history`` events, then ``history-end``."""
        client = wsw.current_client()
        messages = list(room.history)[-max(0, min(limit, HISTORY)) :] if limit > 0 else []
        for message in messages:
            await client.of(room.name).emit("history", message)
        await client.of(room.name).emit("history-end", len(messages))
        return len(messages)

    @channel.on("recent")
    async def recent(limit: int = HISTORY) -> AsyncIterator[dict[str, Any]]:
        """The same history as a ws-wrapper 4 stream (start/next, PROTOCOL.md §10)."""
        for message in list(room.history)[-max(0, min(limit, HISTORY)) :] if limit > 0 else []:
            yield message


for _room in rooms.values():
    _room_handlers(_room)


def missing_packages() -> str | None:
    """What to run when the page's npm packages are not installed, else None."""
    for package in ("ws-wrapper", "eventemitter3"):
        if not (NODE_MODULES / package / "package.json").exists():
            return f"the page needs the npm package {package!r}: run `npm ci` in {HERE}"
    return None


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, host, port)
        shown = f"[{host}]" if ":" in host else host
        print(f"chat demo: open http://{shown}:{bound}/ in two browser windows (Ctrl-C stops)", flush=True)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The trio_wswrapper chat demo.")
    parser.add_argument("--host", default=os.environ.get("CHAT_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CHAT_PORT", "8080")))
    args = parser.parse_args(argv)
    problem = missing_packages()
    if problem is not None:
        print(f"chat demo: {problem}", file=sys.stderr)
        return 2
    try:
        trio.run(main, args.host, args.port)
    except BaseException as exc:
        if _find(exc, KeyboardInterrupt) is not None:
            print("chat demo: stopped", flush=True)
            return 0
        error = _find(exc, OSError)
        if error is None:
            raise
        print(
            f"chat demo: cannot listen on {args.host}:{args.port}: {error.strerror or error}", file=sys.stderr
        )
        return 2
    return 0


def _find(exc: BaseException, kind: type[BaseException]) -> Any:
    """``exc`` or the first exception of type ``kind`` inside its exception groups."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find(inner, kind)
        if found is not None:
            return found
    return None


if __name__ == "__main__":
    sys.exit(cli())
