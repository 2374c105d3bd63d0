"""The bounded FIFO between a connection's senders and its single writer task."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import trio

from ._errors import ConnectionClosed

__all__ = ["DirectWriter", "SendQueue"]


class DirectWriter(Protocol):
    """A transport that can sometimes write a message at once, from any task, without yielding.

    ``send_nowait`` returns False when it cannot (a write in progress, a full socket buffer,
    a TLS stream): the frame then goes through the queue and the writer task. It returns True
    once the message is taken; if the socket took only part of it, ``backlog`` is true until
    the writer task's ``flush`` has written the rest.
    """

    @property
    def backlog(self) -> bool: ...

    def send_nowait(self, message: str) -> bool: ...

    async def flush(self) -> None: ...


class SendQueue:
    """Frames waiting for the writer, in the order they were handed over.

    Ordinary frames respect ``limit``: :meth:`put` waits for room and :meth:`put_nowait` raises
    :class:`trio.WouldBlock`. Frames whose number is bounded elsewhere are appended with
    ``force=True`` and never wait or get dropped: cancellations and aborts (one per pending
    request or open channel), answers and channel announcements (one per running handler), and
    a request frame whose caller already waited for room. One queue keeps everything FIFO, so a
    cancellation always follows its request.

    With a ``direct`` writer, a frame appended while nothing is queued or being written is
    written by the appending task itself: no wakeup of the writer task, no task switch. The
    writer then only handles what the socket could not take at once, so order is kept, and
    it need not exist before then: ``start_writer``, when set, is called (once) the first time
    a frame waits for it, so an idle connection costs no writer task.
    """

    __slots__ = (
        "_direct",
        "_flush",
        "_frames",
        "_idle",
        "_limit",
        "_senders",
        "_writer",
        "_writing",
        "closed",
        "start_writer",
    )

    def __init__(self, limit: int, direct: DirectWriter | None = None) -> None:
        self._frames: deque[str] = deque()
        self._direct = direct
        #: A direct write left part of a frame for the writer task.
        self._flush = False
        self._limit = limit
        self._writer = trio.lowlevel.ParkingLot()
        self._senders = trio.lowlevel.ParkingLot()
        self._idle = trio.lowlevel.ParkingLot()
        self._writing = False
        self.closed: ConnectionClosed | None = None
        self.start_writer: Callable[[], None] | None = None

    @property
    def waiting(self) -> bool:
        """Whether anything waits for the writer task: frames, or a direct write's rest."""
        return bool(self._frames) or self._flush

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

    def has_room(self) -> bool:
        """Whether an ordinary frame may be appended now without waiting behind anyone."""
        return len(self._frames) < self._limit and not self._senders and self.closed is None

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
        direct = self._direct
        idle = not self._frames and not self._writing and not self._flush
        if idle and direct is not None and direct.send_nowait(frame):
            if direct.backlog:
                self._flush = True
                self._wake_writer()
            return
        self._frames.append(frame)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer:
            self._writer.unpark()
        elif self.start_writer is not None:
            start, self.start_writer = self.start_writer, None
            start()

    def get_nowait(self) -> str | None:
        """Like :meth:`get` when something waits for the writer; else raise ``trio.WouldBlock``."""
        if self._flush:
            self._flush = False
            self._writing = True
            return None
        if not self._frames:
            if self.closed is not None:
                raise self.closed
            raise trio.WouldBlock
        frame = self._frames.popleft()
        self._writing = True
        if self._senders and len(self._frames) < self._limit:
            self._senders.unpark()
        return frame

    async def get(self) -> str | None:
        """The next frame for the writer, or None when it must flush a direct write's rest.

        Marks the writer busy until :meth:`get` is called again.
        """
        self._writing = False
        while True:
            try:
                return self.get_nowait()
            except trio.WouldBlock:
                if self._idle:
                    self._idle.unpark_all()
                await self._writer.park()

    async def drain(self) -> None:
        """Wait until every queued frame has been written (or the queue is closed)."""
        while (self._frames or self._writing or self._flush) and self.closed is None:
            await self._idle.park()

    def close(self, error: ConnectionClosed) -> None:
        """Discard unsent frames and fail every waiter, now and later, with ``error``."""
        if self.closed is None:
            self.closed = error
        self._frames.clear()
        self._writer.unpark_all()
        self._senders.unpark_all()
        self._idle.unpark_all()
