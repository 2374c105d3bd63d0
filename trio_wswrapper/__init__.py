"""trio_wswrapper: the ws-wrapper WebSocket protocol for Trio.

Named events, request/response, named and anonymous channels, cancellation and streaming over
a plain WebSocket, wire-compatible with the JavaScript ws-wrapper and the Go
ws-server-wrapper-go. This module only re-exports the public names.
"""

from ._broadcast import BroadcastBackend, BroadcastStatistics, LocalBroadcast
from ._cancel import CancelSource
from ._channels import AnonymousChannel, Channel, StreamIterator, channel, open_channel
from ._client import Client, ClientStatistics, cancel_reason, current_client
from ._codec import OrjsonCodec
from ._config import Options
from ._dial import Reconnect, open_client
from ._errors import (
    ChannelClosed,
    ConnectionClosed,
    ConnectionRejected,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    WSWrapperError,
)
from ._handlers import iterable_handler
from ._handshake import Handshake, Reject
from ._middleware import MessageInfo
from ._protocol import Codec, ErrorPayload, JsonCodec, Limits
from ._server import Group, Server, ServerChannel, ServerStatistics
from ._transport import (
    MemoryTransport,
    Transport,
    TransportClosed,
    TrioWebsocketTransport,
    memory_transport_pair,
)
from ._transports import TransportName
from ._typed import ArgumentError
from ._version import __version__

__all__ = [
    "AnonymousChannel",
    "ArgumentError",
    "BroadcastBackend",
    "BroadcastStatistics",
    "CancelSource",
    "Channel",
    "ChannelClosed",
    "Client",
    "ClientStatistics",
    "Codec",
    "ConnectionClosed",
    "ConnectionRejected",
    "ErrorPayload",
    "Group",
    "Handshake",
    "JsonCodec",
    "Limits",
    "LocalBroadcast",
    "MemoryTransport",
    "MessageInfo",
    "OrjsonCodec",
    "Options",
    "ProtocolError",
    "Reconnect",
    "Reject",
    "RemoteError",
    "RequestTimeout",
    "Server",
    "ServerChannel",
    "ServerStatistics",
    "StreamIterator",
    "Transport",
    "TransportClosed",
    "TransportName",
    "TrioWebsocketTransport",
    "WSWrapperError",
    "__version__",
    "cancel_reason",
    "channel",
    "current_client",
    "iterable_handler",
    "memory_transport_pair",
    "open_channel",
    "open_client",
]
