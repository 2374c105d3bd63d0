"""Connection options shared by servers and dialling clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import attrs

from ._middleware import HandlerContext
from ._protocol import Codec, JsonCodec, Limits, PeerCompat

__all__ = ["Options"]


def _check_compat(_: object, __: object, value: str) -> None:
    if value not in get_args(PeerCompat):
        raise ValueError(f"peer_compat must be one of {get_args(PeerCompat)}, not {value!r}")


def _check_codec(_: object, __: object, value: object) -> None:
    if not (callable(getattr(value, "encode", None)) and callable(getattr(value, "decode", None))):
        raise TypeError(f"codec must have encode() and decode() methods, not {type(value).__name__}")


def _check_timeout(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive or None, not {value!r}")


@attrs.frozen(kw_only=True)
class Options:
    """Per-connection settings (PROTOCOL.md §13, §14); fixed when a connection starts."""

    limits: Limits = attrs.field(factory=Limits)
    #: Default timeout of outbound requests, in seconds; None waits for ever (§13).
    request_timeout: float | None = attrs.field(default=None, validator=_check_timeout)
    #: Seconds between WebSocket pings; None disables the heartbeat (§13).
    heartbeat_interval: float | None = attrs.field(default=None, validator=_check_timeout)
    #: Seconds to wait for the closing handshake and for queued frames to drain on close.
    close_timeout: float = attrs.field(default=5.0, validator=_check_timeout)
    #: Which peer generation to stay compatible with (§14.2).
    peer_compat: PeerCompat = attrs.field(default="v4", validator=_check_compat)
    #: Send ``"_":true`` instead of ``"_":1`` (only Go ≤ 1.3 needs it).
    error_flag: bool = False
    #: Builds the error object sent for a handler exception (§6.2); None uses the default.
    error_to_json: Callable[[BaseException], Any] | None = None
    #: Called with each handled message's :class:`MessageInfo`; the context manager it returns
    #: (sync or async) is entered around the middleware and the handler. None: no context.
    handler_context: HandlerContext | None = None
    #: Encodes and decodes whole frames; the default is compact JSON (:class:`JsonCodec`).
    codec: Codec = attrs.field(factory=JsonCodec, validator=_check_codec)


def make_options(
    *,
    max_message_size: int,
    max_concurrent_handlers: int,
    channel_buffer_size: int,
    send_queue_size: int,
    **rest: Any,
) -> Options:
    """Build :class:`Options` from the flat keyword arguments of the public entry points."""
    if "codec" in rest and rest["codec"] is None:
        del rest["codec"]
    limits = Limits(
        max_message_size=max_message_size,
        max_concurrent_handlers=max_concurrent_handlers,
        channel_buffer_size=channel_buffer_size,
        send_queue_size=send_queue_size,
    )
    return Options(limits=limits, **rest)
