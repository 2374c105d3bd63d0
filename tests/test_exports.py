"""The public surface of ``trio_wswrapper``: exactly these names, all importable, typed."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import inspect
import types

import trio_wswrapper
from trio_wswrapper import _version

EXPECTED_ALL = [
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


def test_all_is_pinned() -> None:
    assert trio_wswrapper.__all__ == EXPECTED_ALL
    assert len(set(trio_wswrapper.__all__)) == len(trio_wswrapper.__all__)


def test_every_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from trio_wswrapper import *", namespace)
    for name in EXPECTED_ALL:
        assert name in namespace, name
        assert namespace[name] is getattr(trio_wswrapper, name)
        assert namespace[name] is not None, name


def test_no_unlisted_public_names() -> None:
    public = {
        name
        for name, value in vars(trio_wswrapper).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(EXPECTED_ALL) - {"__version__"}


def test_public_objects_come_from_the_package() -> None:
    for name in EXPECTED_ALL:
        obj = getattr(trio_wswrapper, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.split(".")[0] == "trio_wswrapper", name


def test_errors_share_one_base() -> None:
    base = trio_wswrapper.WSWrapperError
    for name in (
        "ArgumentError",
        "ChannelClosed",
        "ConnectionClosed",
        "ProtocolError",
        "RemoteError",
        "RequestTimeout",
    ):
        assert issubclass(getattr(trio_wswrapper, name), base), name


def test_version() -> None:
    assert trio_wswrapper.__version__ == _version.__version__
    assert isinstance(trio_wswrapper.__version__, str)
    assert importlib.metadata.version("trio-wswrapper") == trio_wswrapper.__version__


def test_py_typed_is_shipped() -> None:
    marker = importlib.resources.files("trio_wswrapper").joinpath("py.typed")
    assert marker.is_file()
    classifiers = importlib.metadata.metadata("trio-wswrapper").get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
