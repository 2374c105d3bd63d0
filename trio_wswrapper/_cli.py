"""The ``trio-wswrapper`` command: talk to any ws-wrapper endpoint, or serve an application.

``call`` sends a request and prints the answer (streams and anonymous channels included),
``emit`` sends an event, ``listen`` prints the events a server sends, and ``serve`` runs a
:class:`Server` defined in a Python file or module. Results go to stdout as JSON; notices and
errors go to stderr. Also available as ``python -m trio_wswrapper``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import math
import os
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import trio

from . import _protocol as proto
from ._channels import AnonymousChannel
from ._client import Client
from ._config import Options
from ._dial import check_url, open_client
from ._errors import ChannelClosed, ConnectionClosed, ProtocolError, RemoteError, collapse
from ._server import Server
from ._version import __version__

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["main", "run"]

PROG = "trio-wswrapper"

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_ERROR = 2
EXIT_TIMEOUT = 3
EXIT_INTERRUPTED = 130

EXIT_CODES = """\
exit status:
  0    success
  1    the peer rejected the request (its error payload is printed on stderr as JSON),
       or aborted the channel that answered it
  2    usage error, bad URL, connection refused or lost, handshake rejected
  3    timed out
  130  interrupted (Ctrl-C)
"""

_DEFAULT_TIMEOUT = 10.0
_PEER_ABORT_PREFIX = "channel aborted by peer"


class _Failure(Exception):
    """Ends a command with ``code``, printing ``message`` on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- output ------------------------------------------------------------------------------------


class _Output:
    """JSON on stdout, one value per line (indented with ``--pretty``); notices on stderr."""

    def __init__(self, *, pretty: bool = False, quiet: bool = False) -> None:
        self._indent = 2 if pretty else None
        self._quiet = quiet

    def json(self, value: Any) -> None:
        # Flushed per value, so a pipe or a terminal sees each one as it arrives.
        sys.stdout.write(json.dumps(value, indent=self._indent, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def notice(self, text: str) -> None:
        if not self._quiet:
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def _error(text: str) -> None:
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)


# -- arguments ---------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {text!r}")
    return value


def _header(text: str) -> tuple[bytes, bytes]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    try:
        return name.encode("ascii"), value.strip().encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"header not encodable as latin-1: {text!r}") from None


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def _json_args(values: Sequence[str], raw: bool) -> list[Any]:
    """Each ARG parsed as JSON (or taken as a string with ``--raw-strings``)."""
    if raw:
        return list(values)
    parsed = []
    for n, text in enumerate(values, 1):
        try:
            parsed.append(json.loads(text, parse_constant=_reject_constant))
        except ValueError as exc:
            raise _Failure(
                EXIT_ERROR,
                f"argument {n} ({text!r}) is not valid JSON: {exc}; quote strings as JSON "
                f"('\"text\"') or pass --raw-strings to send every argument as a string",
            ) from None
    return parsed


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted both before and after the subcommand.

    After the subcommand they default to SUPPRESS, so they only override what was given
    before it; headers given in both places are merged.
    """
    parser.add_argument(
        "--header",
        "-H",
        dest="headers" if top else "more_headers",
        action="append",
        type=_header,
        default=[] if top else argparse.SUPPRESS,
        metavar="'NAME: VALUE'",
        help="an extra HTTP header for the opening handshake (repeatable)",
    )
    parser.add_argument(
        "--compat",
        choices=["v4", "v3", "go16"],
        default="v4" if top else argparse.SUPPRESS,
        help="peer compatibility mode: v4 (ws-wrapper 4, Go 1.7, default), v3 (ws-wrapper 2/3: "
        "no cancellation, no anonymous channels), go16 (Go 1.4-1.6: no anonymous channels)",
    )
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="no notices or warnings on stderr (errors are still reported)",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="log the library's activity on stderr (-vv for every frame)",
    )


def _client_arguments(parser: argparse.ArgumentParser, *, with_args: bool) -> None:
    parser.add_argument("url", metavar="URL", help="the endpoint, ws://HOST[:PORT]/PATH or wss://...")
    if with_args:
        parser.add_argument("event", metavar="EVENT", help="the event name")
        parser.add_argument(
            "args",
            metavar="ARG",
            nargs="*",
            help="arguments, each a JSON value: 42, true, null, '\"text\"', '[1, 2]', '{\"k\": 1}'",
        )
        parser.add_argument(
            "--raw-strings",
            "-s",
            action="store_true",
            help="send every ARG as a string instead of parsing it as JSON",
        )
        parser.add_argument("--channel", "-c", metavar="NAME", help="send on the named channel NAME")


def _wrap(text: str) -> str:
    return textwrap.fill(text, 78)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``trio-wswrapper`` command."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Work with ws-wrapper WebSocket endpoints: call, emit, listen, serve.",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _common_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    call = commands.add_parser(
        "call",
        help="send a request and print the answer as JSON",
        description=_wrap(
            "Send request EVENT with the ARGs and print the answer as JSON. When the answer "
            "is a stream, print each value on its own line until the stream ends; when it is an "
            'anonymous channel, print each event as {"event": ..., "args": [...]} until the channel '
            "is aborted, --until or --count ends it, or Ctrl-C."
        ),
        epilog=f"examples:\n  {PROG} call ws://127.0.0.1:8080/ add 2 3\n"
        f"  {PROG} call ws://127.0.0.1:8080/ -c chat say '\"hello\"'\n"
        f"  {PROG} call -s ws://127.0.0.1:8080/ echo 'plain text'\n\n{EXIT_CODES}",
        formatter_class=formatter,
    )
    _client_arguments(call, with_args=True)
    call.add_argument(
        "--timeout",
        "-t",
        type=_positive_float,
        default=_DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up when connecting and answering take longer (default: %(default)s); "
        "a stream, once answered, may run longer",
    )
    call.add_argument("--pretty", "-p", action="store_true", help="indent the JSON output")
    call.add_argument(
        "--count",
        "-n",
        type=_positive_int,
        metavar="N",
        help="stop after N stream values or channel events (the channel is then aborted)",
    )
    call.add_argument(
        "--until",
        metavar="NAME",
        help="stop after printing the channel event NAME (for channels that end with one)",
    )
    call.add_argument(
        "--no-start",
        action="store_true",
        help="do not send the 'start' event that asks a stream for its values (for anonymous "
        "channels whose handler would take 'start' for a message of its own)",
    )
    _common_options(call, top=False)

    emit = commands.add_parser(
        "emit",
        help="send an event and close",
        description=_wrap("Send event EVENT with the ARGs, then close the connection normally (1000)."),
        epilog=f"example:\n  {PROG} emit ws://127.0.0.1:8080/ notify '{{\"level\": 1}}'\n\n{EXIT_CODES}",
        formatter_class=formatter,
    )
    _client_arguments(emit, with_args=True)
    emit.add_argument(
        "--timeout",
        "-t",
        type=_positive_float,
        default=_DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up when connecting and sending take longer (default: %(default)s)",
    )
    _common_options(emit, top=False)

    listen = commands.add_parser(
        "listen",
        help="print the events the server sends, as JSON lines",
        description=_wrap(
            "Connect and print every event received as a JSON line "
            '{"channel": NAME or null, "event": NAME, "args": [...]}, until Ctrl-C, the server '
            "closes the connection (exit 0 for a normal close, 2 otherwise) or --count is reached. "
            "Requests from the server are rejected, as by a peer without handlers."
        ),
        epilog=f"example:\n  {PROG} listen ws://127.0.0.1:8080/ --channel chat --count 10\n\n{EXIT_CODES}",
        formatter_class=formatter,
    )
    _client_arguments(listen, with_args=False)
    listen.add_argument(
        "--channel",
        "-c",
        dest="channels",
        action="append",
        metavar="NAME",
        help="only events on the named channel NAME (repeatable; '' is the main channel)",
    )
    listen.add_argument(
        "--event",
        "-e",
        dest="events",
        action="append",
        metavar="NAME",
        help="only events called NAME (repeatable)",
    )
    listen.add_argument("--count", "-n", type=_positive_int, metavar="N", help="exit after N events")
    listen.add_argument(
        "--timeout",
        "-t",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after SECONDS (exit 3 if --count events have not arrived by then, else 0); "
        f"connecting alone may take up to {_DEFAULT_TIMEOUT:g} s",
    )
    listen.add_argument("--pretty", "-p", action="store_true", help="indent the JSON output")
    _common_options(listen, top=False)

    serve = commands.add_parser(
        "serve",
        help="run a trio_wswrapper.Server from a Python file or module",
        description=_wrap(
            "Serve APP until Ctrl-C. APP is path/to/file.py:NAME or package.module:NAME, "
            "where NAME (default: server) is a trio_wswrapper.Server or a callable taking no "
            "arguments that returns one (it may be async). Prints the URL it serves on stdout."
        ),
        epilog=f"example:\n  {PROG} serve examples/demo.py:server --port 0\n\n{EXIT_CODES}",
        formatter_class=formatter,
    )
    serve.add_argument("app", metavar="APP", help="path/to/file.py:NAME or package.module:NAME")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    _common_options(serve, top=False)
    return parser


# -- entry points ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    try:
        return trio.run(_execute, args)
    except KeyboardInterrupt:
        # Interrupted outside Trio's reach (before it started running, or while it finished).
        return EXIT_OK if args.command == "serve" else EXIT_INTERRUPTED


async def run(argv: Sequence[str]) -> int:
    """Like :func:`main`, in a running Trio loop (for tests and embedding)."""
    args = _parse(argv)
    if isinstance(args, int):
        await trio.lowlevel.checkpoint()
        return args
    return await _execute(args)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status when parsing ends the command (help, errors)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    args.headers = list(args.headers) + list(getattr(args, "more_headers", []))
    return args


async def _execute(args: argparse.Namespace) -> int:
    out = _Output(pretty=getattr(args, "pretty", False), quiet=args.quiet)
    with _logging(args.quiet, args.verbose):
        try:
            if args.command == "serve":
                return await _serve(args, out)
            if args.command == "listen":
                return await _listen(args, out)
            return await _send(args, out)
        except BaseException as raised:
            exc = collapse(raised) if isinstance(raised, BaseExceptionGroup) else raised
            if isinstance(exc, KeyboardInterrupt):
                return EXIT_OK if args.command == "serve" else EXIT_INTERRUPTED
            if isinstance(exc, _Failure):
                _error(exc.message)
                return exc.code
            if isinstance(exc, BrokenPipeError):
                # The reader of our output went away (``| head``): nothing left to do.
                _silence_stdout()
                return EXIT_OK
            raise


@contextmanager
def _logging(quiet: bool, verbose: int) -> Iterator[None]:
    """Send the library's log to stderr for the duration of one command."""
    logger = logging.getLogger("trio_wswrapper")
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[min(verbose, 1)]
    if verbose >= 2:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    handler.setLevel(level)
    saved = logger.level
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass


# -- call and emit -----------------------------------------------------------------------------


def _new_client(args: argparse.Namespace) -> Client:
    return Client(options=Options(peer_compat=args.compat))


def _check_url(url: str) -> None:
    try:
        check_url(url)
    except ValueError as exc:
        raise _Failure(EXIT_ERROR, str(exc)) from None


def _check_names(event: str, channel: str | None) -> None:
    try:
        if channel is not None:
            proto.check_channel_name(channel)
        proto.check_event_name(event, root=channel is None)
    except ValueError as exc:
        raise _Failure(EXIT_ERROR, str(exc)) from None


def _connection_failure(exc: ConnectionClosed) -> _Failure:
    """One line for a connection that failed or ended."""
    return _Failure(EXIT_ERROR, exc.reason if exc.code is None and exc.reason else str(exc))


def _timeout_failure(seconds: float, what: str) -> _Failure:
    return _Failure(EXIT_TIMEOUT, f"timed out after {seconds:g} s {what}")


async def _send(args: argparse.Namespace, out: _Output) -> int:
    """``call`` and ``emit``: connect, send, and (for ``call``) print the answer."""
    _check_url(args.url)
    _check_names(args.event, args.channel)
    values = _json_args(args.args, args.raw_strings)
    client = _new_client(args)
    phase = "connecting"
    # One deadline covers connecting and the answer; the dialler's own timeout is set past it
    # so that running out of time always reads as a timeout (exit 3), not a refusal.
    with trio.move_on_after(args.timeout) as deadline:
        try:
            async with open_client(
                args.url, client=client, connect_timeout=args.timeout + 1, extra_headers=args.headers
            ):
                target = client if args.channel is None else client.of(args.channel)
                if args.command == "emit":
                    phase = "sending"
                    await target.emit(args.event, *values)
                    return EXIT_OK
                phase = "waiting for the answer"
                try:
                    answer = await target.request(args.event, *values)
                except RemoteError as exc:
                    print(json.dumps(exc.value, ensure_ascii=False), file=sys.stderr, flush=True)
                    return EXIT_REJECTED
                except ProtocolError as exc:
                    raise _Failure(EXIT_ERROR, str(exc)) from None
                if not isinstance(answer, AnonymousChannel):
                    out.json(answer)
                    return EXIT_OK
                deadline.deadline = math.inf
                return await _print_channel(answer, args, out)
        except ConnectionClosed as exc:
            raise _connection_failure(exc) from None
    assert deadline.cancelled_caught
    raise _timeout_failure(args.timeout, phase)


async def _print_channel(channel: AnonymousChannel, args: argparse.Namespace, out: _Output) -> int:
    """Print a stream's values, or an anonymous channel's events, until either ends.

    A stream (PROTOCOL.md §10) produces nothing until asked with ``start``, which is sent at
    once; its ``next`` events become values. Any other event prints as ``{"event", "args"}``.
    Leaving early (``--count``, Ctrl-C) aborts the channel so the producer stops.
    """
    printed = 0
    async with channel:
        if not args.no_start:
            # If the channel is closed already, receive() reports why, after buffered events.
            try:
                with suppress(ChannelClosed):
                    await channel.emit("start")
            except ProtocolError as exc:  # a compat mode without anonymous channels
                raise _Failure(EXIT_ERROR, str(exc)) from None
        while args.count is None or printed < args.count:
            try:
                name, event_args = await channel.receive()
            except ChannelClosed as closed:
                return _channel_ended(closed)
            if name == "next" and not args.no_start:
                payload = event_args[0] if event_args else None
                if isinstance(payload, dict):
                    if proto._truthy(payload.get("done")):
                        return EXIT_OK
                    out.json(payload.get("value"))
                else:
                    out.json(None)  # §10.3: a payload that is not an object is a None value
            else:
                out.json({"event": name, "args": list(event_args)})
                if args.until is not None and name == args.until:
                    return EXIT_OK
            printed += 1
        await channel.abort("enough")
    return EXIT_OK


def _channel_ended(closed: ChannelClosed) -> int:
    if str(closed).startswith(_PEER_ABORT_PREFIX) and closed.reason is not None:
        print(json.dumps(closed.reason.value, ensure_ascii=False), file=sys.stderr, flush=True)
        return EXIT_REJECTED
    reason = closed.reason.message if closed.reason is not None else str(closed)
    raise _Failure(EXIT_ERROR, f"the channel ended: {reason}")


# -- listen ------------------------------------------------------------------------------------


class _Listener:
    """Prints matching inbound events; notes how the connection ended."""

    def __init__(self, args: argparse.Namespace, out: _Output) -> None:
        self.out = out
        self.channels: set[str] | None = set(args.channels) if args.channels is not None else None
        self.events: set[str] | None = set(args.events) if args.events is not None else None
        self.limit: int | None = args.count
        self.printed = 0
        self.done = trio.Event()
        self.closed: tuple[int, str] | None = None
        self.broken: BrokenPipeError | None = None

    def on_message(self, client: Client, frame: str | bytes) -> None:
        if self.done.is_set():
            return
        msg = proto.decode(frame)
        if type(msg) is not proto.Incoming or msg.anon is not None or msg.is_reserved:
            return
        if msg.id is not None:
            # The library rejects it (no handlers here); say so, as it is not printed.
            self.out.notice(f"rejected request {proto.render_name(msg.name)!r} (listening only)")
            return
        channel, name = msg.channel, msg.name
        if self.channels is not None and not (
            (channel is None and "" in self.channels)
            or (isinstance(channel, str) and channel in self.channels)
        ):
            return
        if self.events is not None and not (isinstance(name, str) and name in self.events):
            return
        try:
            self.out.json({"channel": channel, "event": name, "args": list(msg.args)})
        except BrokenPipeError as exc:
            # Raised here, the library would only log it: stop and re-raise it in _listen.
            self.broken = exc
            self.done.set()
            return
        self.printed += 1
        if self.limit is not None and self.printed >= self.limit:
            self.done.set()

    def on_close(self, client: Client, code: int, reason: str, user_closed: bool) -> None:
        if not user_closed:
            self.closed = (code, reason)
            self.done.set()


async def _listen(args: argparse.Namespace, out: _Output) -> int:
    _check_url(args.url)
    listener = _Listener(args, out)
    client = _new_client(args)
    client.on("message", listener.on_message)
    client.on("close", listener.on_close)
    timeout = args.timeout if args.timeout is not None else math.inf
    connected = False
    with trio.move_on_after(timeout) as deadline:
        try:
            async with open_client(
                args.url,
                client=client,
                connect_timeout=min(timeout + 1, _DEFAULT_TIMEOUT),
                extra_headers=args.headers,
            ):
                connected = True
                out.notice(f"listening on {args.url}")
                await listener.done.wait()
        except ConnectionClosed as exc:
            raise _connection_failure(exc) from None
    if listener.broken is not None:
        raise listener.broken
    if deadline.cancelled_caught:
        if not connected:
            raise _timeout_failure(timeout, "connecting")
        if listener.limit is not None and listener.printed < listener.limit:
            raise _timeout_failure(timeout, f"with {listener.printed} of {listener.limit} events")
        return EXIT_OK
    if listener.closed is not None:
        code, reason = listener.closed
        text = f"the server closed the connection ({code}{': ' + reason if reason else ''})"
        if code in (1000, 1001):
            out.notice(text)
            return EXIT_OK
        raise _Failure(EXIT_ERROR, text)
    return EXIT_OK


# -- serve -------------------------------------------------------------------------------------


async def _load_app(spec: str) -> Server:
    """Import APP (``file.py:NAME`` or ``module:NAME``) and return its :class:`Server`."""
    target, sep, attr = spec.rpartition(":")
    if not sep or "/" in attr or attr.endswith(".py"):
        target, attr = spec, ""
    attr = attr or "server"
    if not target:
        raise _Failure(EXIT_ERROR, f"cannot load {spec!r}: expected path/to/file.py:NAME or module:NAME")
    try:
        module = _import(target)
    except _Failure:
        raise
    except Exception as exc:
        logging.getLogger("trio_wswrapper").debug("importing %s failed", target, exc_info=True)
        raise _Failure(
            EXIT_ERROR, f"cannot load {spec!r}: {type(exc).__name__}: {exc} (run with -vv for the traceback)"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _Failure(EXIT_ERROR, f"cannot load {spec!r}: {target} has no attribute {attr!r}") from None
    if not isinstance(obj, Server) and callable(obj):
        try:
            obj = obj()
            if hasattr(obj, "__await__"):
                obj = await obj
        except Exception as exc:
            raise _Failure(
                EXIT_ERROR, f"cannot load {spec!r}: {attr}() raised {type(exc).__name__}: {exc}"
            ) from None
    if not isinstance(obj, Server):
        raise _Failure(
            EXIT_ERROR,
            f"cannot load {spec!r}: {attr} is a {type(obj).__name__}, not a trio_wswrapper.Server "
            "(or a callable returning one)",
        )
    return obj


def _import(target: str) -> Any:
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise _Failure(EXIT_ERROR, f"cannot load {target!r}: no such file")
        path = path.resolve()
        # Its directory goes on the path so that the application can import its siblings.
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        name = f"_wsw_app_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise _Failure(EXIT_ERROR, f"cannot load {target!r}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    # As ``python -m`` does, modules are found relative to the working directory too.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise _Failure(EXIT_ERROR, f"cannot load {target!r}: no module named {exc.name!r}") from None
        raise


def _url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/"


async def _serve(args: argparse.Namespace, out: _Output) -> int:
    server = await _load_app(args.app)
    async with trio.open_nursery() as nursery:
        try:
            port = await nursery.start(server.serve, args.host, args.port)
        except OSError as exc:
            raise _Failure(
                EXIT_ERROR, f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            ) from None
        except RuntimeError as exc:  # a server that was closed already
            raise _Failure(EXIT_ERROR, str(exc)) from None
        try:
            print(f"serving {_url('ws', args.host, port)}", flush=True)
            if getattr(server, "static", None):
                print(f"serving {_url('http', args.host, port)}", flush=True)
            await trio.sleep_forever()
        finally:
            # Ctrl-C lands here: close every connection (1001) before leaving.
            with trio.CancelScope(shield=True):
                with trio.move_on_after(server.options.close_timeout + 1):
                    await server.aclose()
                nursery.cancel_scope.cancel()
    return EXIT_OK  # pragma: no cover - sleep_forever only ends by an exception
