"""One of several server processes that share broadcasts through Redis.

Start Redis, then as many of these as you like, each on its own port (behind a load balancer,
or on different machines pointing at the same Redis)::

    redis-server --port 6379 --save '' --appendonly no &
    python examples/cluster.py --port 8001 --name a &
    python examples/cluster.py --port 8002 --name b &
    python examples/cluster.py --port 8003 --name c &

A client connected to any of them that sends ``say`` (a request, answered with the number of
local clients that missed the event) makes every client of every process receive
``news(name, text)``; ``say`` on channel ``room`` does the same on that channel. ``status``
answers this process's view of the bus: whether it is healthy, the last error and the
counters. While Redis is down, ``say`` still reaches this process's clients and ``status``
says what failed; when Redis is back the process resubscribes by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_wswrapper as wsw
from trio_wswrapper.redis import RedisBroadcast


def make_server(bus: RedisBroadcast, name: str) -> wsw.Server:
    """A server whose broadcasts go through ``bus``; ``name`` tells the processes apart."""
    server = wsw.Server(broadcast=bus)

    @server.on("say")
    async def say(text: str) -> int:
        return len(await server.emit("news", name, text))

    @server.of("room").on("say")
    async def say_in_room(text: str) -> int:
        return len(await server.of("room").emit("news", name, text))

    @server.on("status")
    def status() -> dict[str, Any]:
        return {
            "name": name,
            "pid": os.getpid(),
            "clients": len(server.clients),
            "healthy": bus.healthy,
            "last_error": None if bus.last_error is None else repr(bus.last_error),
            **attrs.asdict(bus.statistics()),
        }

    return server


async def main(args: argparse.Namespace) -> None:
    """Serve until interrupted, broadcasting through Redis at ``args.redis``."""
    # Short backoff: a restarted Redis is picked up within half a second.
    bus = RedisBroadcast(args.redis, prefix=args.prefix, min_backoff=0.05, max_backoff=0.5)
    server = make_server(bus, args.name)
    async with bus, trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, args.host, args.port)
        print(f"{args.name}: serving on ws://{args.host}:{bound}/, bus {bus.channel}", flush=True)
        if args.port_file is not None:
            # Written whole, then renamed, so a reader never sees a partial port number.
            partial = args.port_file.with_suffix(".tmp")
            partial.write_text(str(bound))
            partial.rename(args.port_file)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A trio_wswrapper server that shares broadcasts via Redis.")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis URL")
    parser.add_argument("--prefix", default="cluster-demo", help="the Redis channel prefix")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--name", default=str(os.getpid()), help="this process's name in events")
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, args)
