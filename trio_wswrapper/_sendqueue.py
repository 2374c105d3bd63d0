"""The bounded FIFO between a connection's senders and its single writer task."""

from __future__ import annotations

from collections import deque

import trio

from ._errors import ConnectionClosed

__all__ = ["SendQueue"]


class SendQueue:
    """Frames waiting for the writer, in the order they were handed over.

    Ordinary frames respect ``limit``: :meth:`put` waits for room and :meth:`put_nowait` raises
    :class:`trio.WouldBlock`. Frames whose number is bounded elsewhere are appended with
    ``force=True`` and never wait or get dropped: cancellations and aborts (one per pending
    request or open channel), answers and channel announcements (one per running handler), and
    a request frame whose caller already waited for room. One queue keeps everything FIFO, so a
    cancellation always follows its request.
    """

    __slots__ = ("_frames", "_idle", "_limit", "_senders", "_writer", "_writing", "closed")

    def __init__(self, limit: int) -> None:
        self._frames: deque[str] = deque()
        self._limit = limit
        self._writer = trio.lowlevel.ParkingLot()
        self._senders = trio.lowlevel.ParkingLot()
        self._idle = trio.lowlevel.ParkingLot()
        self._writing = False
        self.closed: ConnectionClosed | None = None

    def __len__(self) -> int:
        return len(self._frames)

    async def wait_writable(self) -> None:
        """Wait until an ordinary frame may be appended; raise if the queue is closed.

        Always a checkpoint. The caller must append without a checkpoint in between, or call
        :meth:`pass_turn` if it gives up, so that the next waiting sender is not left parked.
        """
        await trio.lowlevel.checkpoint()
        while len(self._frames) >= self._limit and self.closed is None:
            await self._senders.park()
        if self.closed is not None:
            raise self.closed

    def pass_turn(self) -> None:
        """Wake the next waiting sender if there is room (after :meth:`wait_writable`)."""
        if self._senders and len(self._frames) < self._limit:
            self._senders.unpark()

    async def put(self, frame: str) -> None:
        """Append ``frame``, waiting while the queue is full (backpressure)."""
        await self.wait_writable()
        self._append(frame)

    def put_nowait(self, frame: str, *, force: bool = False) -> None:
        """Append ``frame`` now; without ``force``, raise :class:`trio.WouldBlock` when full."""
        if self.closed is not None:
            raise self.closed
        if not force and len(self._frames) >= self._limit:
            raise trio.WouldBlock
        self._append(frame)

    def _append(self, frame: str) -> None:
        self._frames.append(frame)
        if self._writer:
            self._writer.unpark()

    async def get(self) -> str:
        """The next frame for the writer; marks the writer busy until :meth:`get` is called again."""
        self._writing = False
        if not self._frames:
            if self._idle:
                self._idle.unpark_all()
            while not self._frames:
                if self.closed is not None:
                    raise self.closed
                await self._writer.park()
        frame = self._frames.popleft()
        self._writing = True
        if self._senders and len(self._frames) < self._limit:
            self._senders.unpark()
        return frame

    async def drain(self) -> None:
        """Wait until every queued frame has been written (or the queue is closed)."""
        while (self._frames or self._writing) and self.closed is None:
            await self._idle.park()

    def close(self, error: ConnectionClosed) -> None:
        """Discard unsent frames and fail every waiter, now and later, with ``error``."""
        if self.closed is None:
            self.closed = error
        self._frames.clear()
        self._writer.unpark_all()
        self._senders.unpark_all()
        self._idle.unpark_all()
