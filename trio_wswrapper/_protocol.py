"""Sans-IO core of the ws-wrapper protocol: message types, decoding, encoding, error payloads.

Nothing here performs I/O or imports trio. The connection layer feeds raw frames to
:func:`decode` and routes the message objects it returns; it builds outbound frames with the
``encode_*`` functions. Every wire decision (classification order, validation, exact error
texts, output rules) lives in this module so that it can be tested synchronously.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, Protocol, Union

import attrs

__all__ = [
    "DEFAULT_ABORT_REASON",
    "MAX_ID",
    "RESERVED_NAMES",
    "Abort",
    "Answer",
    "Cancel",
    "Codec",
    "ErrorPayload",
    "Ignored",
    "Inbound",
    "Incoming",
    "JsonCodec",
    "Limits",
    "PeerCompat",
    "compact_json",
    "decode",
    "decode_error",
    "encode_abort",
    "encode_cancel",
    "encode_creation",
    "encode_event",
    "encode_rejection",
    "encode_resolution",
    "error_from_exception",
    "error_from_value",
    "is_valid_id",
    "render_name",
]

#: Largest request or channel id (2**53 - 1): the largest integer JavaScript keeps exactly.
MAX_ID: Final = 2**53 - 1

#: Root-channel names that denote local lifecycle events and never travel on the wire (§5).
RESERVED_NAMES: Final = frozenset({"open", "connect", "message", "error", "close", "disconnect"})

PeerCompat = Literal["v4", "v3", "go16"]

JSONValue = Any
"""Any value the JSON codec accepts; kept as ``Any`` because JSON is recursive."""

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def compact_json(value: JSONValue) -> str:
    """Encode ``value`` as compact, ASCII-only JSON, refusing NaN and Infinity (§1.1)."""
    return _dumps(value)


def _reject_constant(token: str) -> Any:
    raise json.JSONDecodeError(f"invalid JSON token {token}", token, 0)


def _parse_big_int(text: str) -> int | float:
    # Python refuses to parse integers of more than 4300 digits (a CPU-exhaustion guard);
    # JavaScript reads such numbers as floats, and so do we (most become inf).
    try:
        return int(text)
    except ValueError:
        return float(text)


_loads = json.JSONDecoder(parse_constant=_reject_constant).decode
_loads_big = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_big_int).decode


def _load(text: str) -> Any:
    try:
        return _loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # Only the integer digit limit raises a plain ValueError: retry with the slow decoder.
        return _loads_big(text)


def _load_frame(frame: str | bytes) -> Any:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        frame = bytes(frame).decode("utf-8")
    return _load(frame)


class Codec(Protocol):
    """Turns whole frames into text and back (like ws-wrapper's messageEncode/messageDecode).

    ``encode`` gets a frame as a dict (``{"a": [...], "i": 1}``) and returns the text to send;
    it raises TypeError or ValueError for values it cannot encode. ``decode`` gets a received
    text or binary frame and returns the decoded value; any exception marks the frame as not
    valid (it is ignored, PROTOCOL.md §3.1). Both are called for every frame, so keep them fast.
    """

    def encode(self, obj: Any) -> str:
        """The text frame for ``obj``."""
        ...

    def decode(self, data: str | bytes) -> Any:
        """The value in frame ``data``."""
        ...


@attrs.frozen
class JsonCodec:
    """The default codec: compact ASCII JSON, NaN and Infinity refused in both directions.

    Integers too long for Python's int parser are read as floats, as JavaScript reads them.
    With this codec the encoders build frames directly, key order fixed, with no dict per frame.
    """

    def encode(self, obj: Any) -> str:
        """Compact JSON text for ``obj``; TypeError/ValueError when it cannot be encoded."""
        return _dumps(obj)

    def decode(self, data: str | bytes) -> Any:
        """Decode a JSON frame; raises ValueError for invalid JSON or UTF-8."""
        return _load_frame(data)


def custom_codec(codec: Codec | None) -> Codec | None:
    """What to pass as ``codec=`` to the encoders and :func:`decode`: None for the built-in
    JSON codec (the encoders then take their direct, dict-free path), else ``codec``."""
    return None if codec is None or type(codec) is JsonCodec else codec


def is_valid_id(value: object) -> bool:
    """Return True for a JSON integer usable as a request or channel id (1 … 2**53 − 1)."""
    return type(value) is int and 1 <= value <= MAX_ID


def render_name(value: object) -> str:
    """Render an event or channel name for an error text: strings as is, others as JSON (§3.2)."""
    if isinstance(value, str):
        return value
    try:
        return compact_json(value)
    except (TypeError, ValueError):  # pragma: no cover - decoded JSON always re-encodes
        return repr(value)


# ---------------------------------------------------------------------------------------------
# Limits


@attrs.frozen
class Limits:
    """Per-connection limits and defaults of PROTOCOL.md §13."""

    #: Largest inbound message, in characters (text) or bytes (binary); larger closes with 1009.
    max_message_size: int = 1024 * 1024
    #: Handlers running at once on one connection; more requests are rejected, events dropped.
    max_concurrent_handlers: int = 256
    #: Events retained per anonymous channel before it is aborted as overflowing.
    channel_buffer_size: int = 256
    #: Frames handed to the writer and not yet written; senders wait beyond it.
    send_queue_size: int = 256

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(Limits):
            value = getattr(self, field.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{field.name} must be a positive integer, not {value!r}")


# ---------------------------------------------------------------------------------------------
# Error payloads (§6)


@attrs.frozen
class ErrorPayload:
    """A decoded ``e`` or ``x`` value (§6.4), or one ready to be sent.

    ``value`` is the raw JSON value; ``is_error`` says whether it is an encoded error object
    (``_`` truthy and the value a JSON object). ``message`` is derived from both.
    """

    value: JSONValue
    is_error: bool = False

    def __attrs_post_init__(self) -> None:
        # §6.4: only a JSON object can be an error object; "_" is never sent next to anything else.
        if self.is_error and not isinstance(self.value, dict):
            object.__setattr__(self, "is_error", False)

    @property
    def message(self) -> str:
        """Human-readable text of the payload, as PROTOCOL.md §6.4 derives it."""
        value = self.value
        if self.is_error:
            text = value.get("message", "")
            return text if isinstance(text, str) else render_name(text)
        return render_name(value)


#: The reason sent for cancellations and aborts that name none (§6.3).
DEFAULT_ABORT_REASON: Final = ErrorPayload({"message": "Request aborted"}, True)


def decode_error(value: JSONValue, flag: JSONValue) -> ErrorPayload:
    """Decode an ``e``/``x`` value and its ``_`` flag (§6.4)."""
    return ErrorPayload(value, bool(_truthy(flag) and isinstance(value, dict)))


def _truthy(value: JSONValue) -> bool:
    # JavaScript truthiness over JSON values: only false, null, 0 and "" are falsy.
    return value is not None and value is not False and value != 0 and value != ""  # noqa: PLR1714


ErrorToJSON = Callable[[BaseException], Any]


def error_from_exception(exc: BaseException, error_to_json: ErrorToJSON | None = None) -> ErrorPayload:
    """Turn a Python exception into the error object sent for it (§6.2).

    The default object is ``{"message": str(exc)}`` (the class name when the text is empty).
    ``error_to_json`` may supply a richer object; it is used only when it returns a dict with
    a string ``message`` that can be encoded.
    """
    if error_to_json is not None:
        try:
            custom = error_to_json(exc)
            if isinstance(custom, dict) and isinstance(custom.get("message"), str):
                compact_json(custom)
                return ErrorPayload(custom, True)
        except Exception:
            pass
    try:
        text = str(exc)
    except Exception:
        text = ""
    text = text or type(exc).__name__
    return ErrorPayload({"message": text}, True)


def error_from_value(value: JSONValue, is_error: bool = False) -> ErrorPayload:
    """Payload for a rejection or reason given as a raw value (§6.2, §6.3); ``None`` → default.

    ``None`` becomes ``{"message": "Error"}`` for rejections; reasons use
    :data:`DEFAULT_ABORT_REASON` instead and never call this with ``None``.
    """
    if value is None:
        return ErrorPayload({"message": "Error"}, True)
    return ErrorPayload(value, bool(is_error and isinstance(value, dict)))


# ---------------------------------------------------------------------------------------------
# Inbound messages (§3)


@attrs.frozen
class Incoming:
    """An event (``id`` is None) or a request, after the checks of §3.1.

    Exactly one of ``anon`` (an anonymous-channel id) and ``channel`` (the raw ``c`` value of a
    named channel, possibly not a string) is set, or neither for the root channel.
    """

    name: JSONValue
    args: tuple[JSONValue, ...]
    id: int | None
    channel: JSONValue = None
    anon: int | None = None

    @property
    def is_reserved(self) -> bool:
        """True when a root-channel frame names a reserved event and must be ignored (§3.2)."""
        return (
            self.anon is None
            and self.channel is None
            and isinstance(self.name, str)
            and self.name in RESERVED_NAMES
        )


@attrs.frozen
class Cancel:
    """``{"i": id, "x": reason}``: the peer cancels its request ``id`` (None when invalid)."""

    id: int | None
    reason: ErrorPayload


@attrs.frozen
class Abort:
    """``{"h": anon, "x": reason}``: the peer aborts anonymous channel ``anon``."""

    anon: int
    reason: ErrorPayload


@attrs.frozen
class Answer:
    """A frame that can only be an answer to our request ``id`` (§3.1 steps 10–12).

    ``kind`` tells what it is if ``id`` is pending: ``"reject"`` (with ``error``),
    ``"channel"`` (an anonymous channel announcement) or ``"resolve"`` (with ``value``).
    When ``id`` is not pending, only a ``"channel"`` answer needs attention (stale creation,
    §9.7); the others are ignored.
    """

    id: int
    kind: Literal["resolve", "reject", "channel"]
    value: JSONValue = None
    error: ErrorPayload | None = None


@attrs.frozen
class Ignored:
    """A frame the protocol drops without a reply; ``reason`` is for debug logs only."""

    reason: str


Inbound = Union[Incoming, Cancel, Abort, Answer, Ignored]  # noqa: UP007 - a runtime alias on 3.10

_NOT_JSON: Final = Ignored("not valid JSON")
_NOT_OBJECT: Final = Ignored("not a JSON object")
_FOREIGN: Final = Ignored("ws-wrapper is false")
_BAD_H: Final = Ignored("invalid anonymous channel id")
_BAD_A: Final = Ignored("malformed a")
_NO_ID: Final = Ignored("no valid id")
_BAD_UTF8: Final = Ignored("binary frame is not UTF-8")


def _channel_id(h: JSONValue) -> int | Literal[False] | None:
    """Normalise ``h``: None when absent, the id when valid, False when invalid (§3.1 step 5)."""
    if h is None:
        return None
    if type(h) is int:
        return h if 1 <= h <= MAX_ID else False
    if type(h) is str and h.isascii() and h.isdigit():
        digits = h.lstrip("0")
        if len(digits) > len(str(MAX_ID)):  # also avoids int()'s digit limit (ValueError)
            return False
        value = int(digits or "0")
        return value if 1 <= value <= MAX_ID else False
    return False


def decode(frame: str | bytes, codec: Codec | None = None) -> Inbound:
    """Classify one inbound frame (PROTOCOL.md §3.1 steps 2–12, without connection state).

    Never raises: anything that is not a protocol message comes back as :class:`Ignored`.
    Steps that need connection state (pending, active and channel tables) are left to the
    caller, guided by the returned type. ``codec`` replaces the built-in JSON decoder.
    """
    if codec is not None and type(codec) is not JsonCodec:
        try:
            msg = codec.decode(frame)
        except Exception:
            return _NOT_JSON
    else:
        if isinstance(frame, (bytes, bytearray, memoryview)):
            try:
                frame = bytes(frame).decode("utf-8")
            except UnicodeDecodeError:
                return _BAD_UTF8
        try:
            msg = _load(frame)
        except (ValueError, RecursionError, TypeError):
            return _NOT_JSON
    if type(msg) is not dict:
        return _NOT_OBJECT
    if msg.get("ws-wrapper", True) is False:
        return _FOREIGN
    i = msg.get("i")
    rid = i if type(i) is int and 1 <= i <= MAX_ID else None
    anon = _channel_id(msg.get("h"))
    if anon is False:
        return _BAD_H
    if "a" in msg:
        a = msg["a"]
        if type(a) is not list or not a:
            return _BAD_A
        c = None if anon is not None else msg.get("c")
        return Incoming(a[0], tuple(a[1:]), rid, c, anon)
    if "x" in msg:
        reason = decode_error(msg["x"], msg.get("_"))
        if anon is not None:
            return Abort(anon, reason)
        return Cancel(rid, reason)
    if rid is None:
        return _NO_ID
    if "e" in msg:
        return Answer(rid, "reject", error=decode_error(msg["e"], msg.get("_")))
    if anon is not None:
        return Answer(rid, "channel")
    return Answer(rid, "resolve", value=msg.get("d"))


# ---------------------------------------------------------------------------------------------
# Outbound frames (§1.1, §2)
#
# With the default codec, each encoder builds the frame text directly so that key order is fixed
# for golden tests and no dict is allocated per message; a custom codec gets the frame as a dict
# with the same key order. Payload values go through compact_json, which raises
# TypeError/ValueError for unencodable values (including NaN and Infinity).


def _error_fields(payload: ErrorPayload, error_flag: bool) -> str:
    flag = (',"_":true' if error_flag else ',"_":1') if payload.is_error else ""
    return compact_json(payload.value) + flag


def _with_error(codec: Codec, head: dict[str, Any], key: str, payload: ErrorPayload, error_flag: bool) -> str:
    # The custom-codec counterpart of _error_fields, with the §6.2 fallback for bad payloads.
    try:
        return codec.encode(_error_frame(head, key, payload, error_flag))
    except (TypeError, ValueError, RecursionError) as exc:
        fallback = ErrorPayload({"message": str(exc)}, True)
        return codec.encode(_error_frame(head, key, fallback, error_flag))


def _error_frame(head: dict[str, Any], key: str, payload: ErrorPayload, error_flag: bool) -> dict[str, Any]:
    frame = {**head, key: payload.value}
    if payload.is_error:
        frame["_"] = True if error_flag else 1
    return frame


def encode_event(
    name: str,
    args: Sequence[JSONValue],
    *,
    channel: str | None = None,
    anon: int | None = None,
    id: int | None = None,
    codec: Codec | None = None,
) -> str:
    """Encode an event (``id`` None) or request on the root, a named or an anonymous channel."""
    if codec is not None:
        frame: dict[str, Any] = {"a": [name, *args]}
        if anon is not None:
            frame["h"] = anon
        elif channel is not None:
            frame["c"] = channel
        if id is not None:
            frame["i"] = id
        return codec.encode(frame)
    text = '{"a":' + compact_json([name, *args])
    if anon is not None:
        text += f',"h":{anon}'
    elif channel is not None:
        text += ',"c":' + compact_json(channel)
    if id is not None:
        text += f',"i":{id}'
    return text + "}"


def encode_resolution(id: int, value: JSONValue, *, codec: Codec | None = None) -> str:
    """``{"i":id,"d":value}``; raises TypeError/ValueError when ``value`` cannot be encoded."""
    if codec is not None:
        return codec.encode({"i": id, "d": value})
    return f'{{"i":{id},"d":{compact_json(value)}}}'


def encode_rejection(
    id: int, payload: ErrorPayload, *, error_flag: bool = False, codec: Codec | None = None
) -> str:
    """``{"i":id,"e":…}`` with ``"_":1`` for error objects; never raises for bad payloads.

    An ``e`` that cannot be encoded is replaced by ``{"message": <encoder error>}`` (§6.2).
    """
    if payload.value is None:
        payload = error_from_value(None)
    if codec is not None:
        return _with_error(codec, {"i": id}, "e", payload, error_flag)
    try:
        body = _error_fields(payload, error_flag)
    except (TypeError, ValueError, RecursionError) as exc:
        body = _error_fields(ErrorPayload({"message": str(exc)}, True), error_flag)
    return f'{{"i":{id},"e":{body}}}'


def _reason_fields(reason: ErrorPayload | None, error_flag: bool) -> str:
    try:
        if reason is None or reason.value is None:
            reason = DEFAULT_ABORT_REASON
        return _error_fields(reason, error_flag)
    except (TypeError, ValueError, RecursionError) as exc:
        return _error_fields(ErrorPayload({"message": str(exc)}, True), error_flag)


def encode_cancel(
    id: int, reason: ErrorPayload | None = None, *, error_flag: bool = False, codec: Codec | None = None
) -> str:
    """``{"i":id,"x":reason}``: cancel our pending request ``id`` (§8.1)."""
    if codec is not None:
        if reason is None or reason.value is None:
            reason = DEFAULT_ABORT_REASON
        return _with_error(codec, {"i": id}, "x", reason, error_flag)
    return f'{{"i":{id},"x":{_reason_fields(reason, error_flag)}}}'


def encode_abort(
    anon: int, reason: ErrorPayload | None = None, *, error_flag: bool = False, codec: Codec | None = None
) -> str:
    """``{"h":anon,"x":reason}``: abort anonymous channel ``anon`` (§9.6)."""
    if codec is not None:
        if reason is None or reason.value is None:
            reason = DEFAULT_ABORT_REASON
        return _with_error(codec, {"h": anon}, "x", reason, error_flag)
    return f'{{"h":{anon},"x":{_reason_fields(reason, error_flag)}}}'


def encode_creation(id: int, *, codec: Codec | None = None) -> str:
    """``{"i":id,"h":1}``: announce the anonymous channel that answers request ``id`` (§9.2)."""
    if codec is not None:
        return codec.encode({"i": id, "h": 1})
    return f'{{"i":{id},"h":1}}'


# ---------------------------------------------------------------------------------------------
# Texts (§7.2, §9, §13)


def no_listener_text(name: JSONValue, channel: JSONValue = None, anon: int | None = None) -> str:
    """The rejection text for a request with no matching handler (§7.2)."""
    if anon is not None:
        return f"No event listener for '{render_name(name)}' on channel '{anon}'"
    if channel is not None:
        return f"No event listener for '{render_name(name)}' on channel '{render_name(channel)}'"
    return f"No event listener for '{render_name(name)}'"


def unknown_channel_text(channel: JSONValue) -> str:
    """The rejection text for a request to a named channel that does not exist (§3.2 step 5)."""
    return f"Channel '{render_name(channel)}' does not exist"


def unknown_anon_text(anon: int) -> str:
    """The fail-safe text for traffic on an anonymous channel that does not exist (§9.1)."""
    return f"Anonymous channel '{anon}' does not exist"


def anon_exists_text(anon: int) -> str:
    """The rejection text when a channel id collides with a live one (§9.5)."""
    return f"Anonymous channel '{anon}' already exists"


def overflow_text(anon: int) -> str:
    """The abort text when an anonymous channel's inbound buffer overflows (§9.4)."""
    return f"Anonymous channel '{anon}' buffer overflow; consumer is too slow"


TOO_MANY_REQUESTS: Final = "Too many concurrent requests"
REQUEST_TIMED_OUT: Final = "Request timed out"
#: The rejection text when a handler's deadline (for example from handler_context) expires.
HANDLER_TIMED_OUT: Final = "Handler timed out"
ANON_UNSUPPORTED: Final = "Anonymous channels are not supported by this peer"
NOT_ITERABLE: Final = "iterableHandler: handler must return a sync or async iterable"
ITERATION_CLOSED: Final = "channel closed before iteration completed"
EMIT_CLOSED: Final = "Cannot emit on a closed channel"
REQUEST_CLOSED: Final = "Cannot send request on a closed channel"


def message_payload(text: str) -> ErrorPayload:
    """An error object ``{"message": text}`` flagged as such."""
    return ErrorPayload({"message": text}, True)


def check_event_name(name: object, *, root: bool) -> str:
    """Validate an outbound event name (§5): non-empty string, not reserved on the root."""
    if not isinstance(name, str):
        raise TypeError(f"event name must be a string, not {type(name).__name__}")
    if not name:
        raise ValueError("event name must not be empty")
    if root and name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is a reserved event name on the root channel")
    return name


def check_channel_name(name: object) -> str:
    """Validate a named-channel name (§11): a non-empty string."""
    if not isinstance(name, str):
        raise TypeError(f"channel name must be a string, not {type(name).__name__}")
    if not name:
        raise ValueError("channel name must not be empty")
    return name
