"""pytest fixtures for testing ws-wrapper applications, registered as a pytest plugin.

Installed with the package (entry point ``pytest11``), so a test suite only overrides
``wsw_server`` to return its own server; ``wsw_client`` is then a client connected to it in
memory. The async fixtures need pytest-trio, as any Trio test does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from ._client import Client
from ._server import Server
from .testing import open_test_client

__all__ = ["wsw_client", "wsw_connect", "wsw_server"]


@pytest.fixture
def wsw_server() -> Server:
    """The server under test; override this fixture to return your application's server."""
    return Server(heartbeat_interval=None)


@pytest.fixture
def wsw_connect(wsw_server: Server) -> Callable[..., AbstractAsyncContextManager[Client]]:
    """``async with wsw_connect(**kwargs) as client``: more clients of ``wsw_server``.

    Keyword arguments go to :func:`trio_wswrapper.testing.open_test_client` (``path``,
    ``headers``, ``subprotocols``, ``client``, ``options``).
    """

    def connect(**kwargs: Any) -> AbstractAsyncContextManager[Client]:
        return open_test_client(wsw_server, **kwargs)

    return connect


@pytest.fixture
async def wsw_client(wsw_server: Server) -> AsyncIterator[Client]:
    """A client connected to ``wsw_server`` in memory; closed after the test."""
    async with open_test_client(wsw_server) as client:
        yield client
