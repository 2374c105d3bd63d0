"""trio_wswrapper: the ws-wrapper WebSocket protocol for Trio.

Named events, request/response, named and anonymous channels, cancellation and streaming over
a plain WebSocket, wire-compatible with the JavaScript ws-wrapper and the Go
ws-server-wrapper-go. This module only re-exports the public names.
"""

from ._cancel import CancelSource
from ._channels import AnonymousChannel, Channel, StreamIterator, channel, open_channel
from ._client import Client, ClientStatistics, cancel_reason, current_client
from ._config import Options
from ._errors import (
    ChannelClosed,
    ConnectionClosed,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    WSWrapperError,
)
from ._handlers import iterable_handler
from ._protocol import ErrorPayload, Limits
from ._server import Server, ServerChannel, ServerStatistics, open_client
from ._transport import (
    MemoryTransport,
    Transport,
    TransportClosed,
    TrioWebsocketTransport,
    memory_transport_pair,
)
from ._transports import TransportName
from ._version import __version__

__all__ = [
    "AnonymousChannel",
    "CancelSource",
    "Channel",
    "ChannelClosed",
    "Client",
    "ClientStatistics",
    "ConnectionClosed",
    "ErrorPayload",
    "Limits",
    "MemoryTransport",
    "Options",
    "ProtocolError",
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
