"""Middleware (``use(fn)``) and the per-handler context hook.

Middleware sees each inbound event or request that found a handler, before the handler runs,
in the handler's own task: server-wide first, then the server's named channel, then the client,
then the client's named channel, in registration order within each. Returning lets the message
through; raising rejects it (a request is answered with the rejection, an event is dropped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, Union

import attrs

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["HandlerContext", "MessageInfo", "Middleware", "UsesMiddleware"]


@attrs.frozen
class MessageInfo:
    """An inbound event or request about to be handled, as middleware and contexts see it.

    ``channel`` is the named channel (None on the root channel and on anonymous channels);
    ``anon`` is the anonymous channel's id, if the message arrived on one. ``args`` are the
    JSON arguments as decoded, before any conversion to annotated types.
    """

    client: Client
    name: str
    args: tuple[Any, ...]
    id: int | None = None
    channel: str | None = None
    anon: int | None = None

    @property
    def is_request(self) -> bool:
        """True for a request (the peer waits for an answer), False for an event."""
        return self.id is not None


#: ``fn(info)``, sync or async: return to let the message through, raise to reject it.
Middleware = Callable[[MessageInfo], Union[Awaitable[None], None]]  # noqa: UP007 - runtime alias on 3.10

#: ``fn(info)`` returning a sync or async context manager entered around the handler.
HandlerContext = Callable[
    [MessageInfo],
    Union[AbstractContextManager[Any], AbstractAsyncContextManager[Any]],  # noqa: UP007
]

M = TypeVar("M", bound=Middleware)


class UsesMiddleware:
    """Mixin giving ``use(fn)`` to servers, clients and their named channels."""

    # A tuple, replaced on each ``use``: a message's chain is read without copying or locking.
    _middleware: tuple[Middleware, ...] = ()

    def use(self, fn: M) -> M:
        """Add middleware ``fn(info)``, run before every handler this object dispatches to.

        ``fn`` may be sync or async and gets a :class:`MessageInfo`. Returning lets the message
        through unchanged; raising rejects it: a request is answered with the rejection
        (``RemoteError(value)`` sends ``value``, other exceptions an error object, PROTOCOL.md
        §6.2) and an event is dropped and logged. Usable as a decorator; returns ``fn``.
        """
        if not callable(fn):
            raise TypeError(f"middleware must be callable, not {type(fn).__name__}")
        self._middleware = (*self._middleware, fn)
        return fn


async def run_middleware(chain: tuple[Middleware, ...], info: MessageInfo) -> None:
    """Run ``chain`` in order; the first exception rejects the message."""
    for fn in chain:
        result = fn(info)
        if result is not None and hasattr(result, "__await__"):
            await result


@asynccontextmanager
async def entered(
    manager: AbstractContextManager[Any] | AbstractAsyncContextManager[Any],
) -> AsyncIterator[None]:
    """Enter a sync or async context manager from async code."""
    if isinstance(manager, AbstractAsyncContextManager):
        async with manager:
            yield
    else:
        with manager:
            yield
