"""Consumers: the messages of one queue, under credit, from whichever broker holds it."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from zq.client.args import complete_args
from zq.client.message import HISTORY, REASON, Message
from zq.errors import StaleDelivery, ZqError
from zq.protocol import codec
from zq.protocol import frames as f

if TYPE_CHECKING:
    from zq.client.connection import Connection

__all__ = ["HISTORY", "REASON", "Consumer", "Message", "complete_args"]


class Placer(Protocol):
    """What places a consumer on a connection: the client (see :mod:`zq.client.nodes`)."""

    async def place(self, consumer: Consumer) -> Connection:
        """The connection to consume from (the queue's broker, found with LOCATE
        when the client's node is a router)."""
        ...

    def on_error(self, consumer: Consumer, exc: ZqError) -> bool:
        """The consumer's credit was refused or its connection lost: True if the
        placer deals with it (a MOVED it follows), False to let the application know."""
        ...

    def forget(self, consumer: Consumer) -> None:
        """``consumer`` closed (or never started)."""
        ...


class Consumer:
    """An async iterator of :class:`Message` from one queue, under credit ``prefetch``.

    Use it as ``async with client.consume(q) as c: async for m in c: ...``; plain
    ``async for m in client.consume(q)`` works too. Leaving the ``async with``
    stops delivery and gives back messages that were received but not handed out.

    A consumer of a :class:`zq.Client` may move from one connection to another
    (its queue MOVED, its broker was lost): see :meth:`move_to`.
    """

    def __init__(self, conn: Connection, queue: str, prefetch: int, *,
                 auto_start: bool = True, placer: Placer | None = None) -> None:
        self._conn = conn
        self._placer = placer
        self.queue = queue
        self.prefetch = prefetch
        self.auto_start = auto_start  # a message taken by the application is started
        self.taken: list[Message] = []  # started this turn (a START names the unsettled)
        self._buf: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: ZqError | None = None
        self._started = False
        self._closed = False
        self.received = 0
        self.held = 0  # delivered and not yet settled
        self.peak_held = 0
        # A consumer working through its buffer never yields to the loop, so the
        # end-of-turn flush would hold its acks and credit until the buffer is
        # empty and the broker idle. Send them every quarter window instead.
        self._flush_every = max(1, prefetch // 4)
        self._unflushed = 0
        self.owed = 0  # credit earned by settlements, not sent yet

    async def _start(self) -> None:
        self._conn.check()
        self._started = True  # a second caller meanwhile waits for messages
        try:
            if self._placer is not None:
                self._conn = await self._placer.place(self)
            conn = self._conn
            conn.check()
            if self.queue in conn.consumers:
                raise ValueError(f"this client already consumes {self.queue!r}; one "
                                 "consumer per queue per client")
        except BaseException:
            self._started = False
            if self._placer is not None:
                self._placer.forget(self)
            raise
        if self._closed:  # while it was being placed
            return
        conn.consumers[self.queue] = self
        self._grant()

    async def __aenter__(self) -> Consumer:
        if not self._started:
            await self._start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        if not self._started:
            await self._start()
        while not self._buf:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        m = self._buf.popleft()
        if self.auto_start:
            self._took(m)
        return m

    async def get(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        """The next message; raise TimeoutError after ``timeout`` seconds.

        Raises StopAsyncIteration once the consumer is closed.
        """
        if timeout is None:
            return await self.__anext__()
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    async def close(self) -> None:
        """Stop delivery; hand buffered messages back to the broker."""
        if self._closed:
            return
        self._closed = True
        self.owed = 0
        conn = self._conn
        if self._started and conn.consumers.get(self.queue) is self:
            del conn.consumers[self.queue]
            if not conn.closed and conn.broken is None:
                conn.cancel(self.queue)
        back: dict[Connection, list[int]] = {}  # each goes back where it came from
        for m in self._buf:
            back.setdefault(m._conn, []).append(m.id)
        for c, ids in back.items():
            if not c.closed and c.broken is None:
                c.release(ids)
                self.held -= len(ids)
        self._buf.clear()
        if self._placer is not None:
            self._placer.forget(self)
        self._wake()

    def move_to(self, conn: Connection, *, lost: bool) -> None:
        """Consume from ``conn`` from now on: CANCEL on the old connection, grant the
        window on the new one. Messages held from the old one are still settled
        there, unless it was ``lost`` (its deliveries ended with its session)."""
        old = self._conn
        if old is not conn:
            old.detach(self)
            self._conn = conn
        self.owed = 0
        if lost:
            self._buf.clear()
            self.taken = []
            self.held = 0
        self._error = None
        if not self._closed:
            conn.consumers[self.queue] = self
            n = self.prefetch - self.held
            if n > 0 and conn.broken is None:
                self._grant(n)
        self._wake()

    @property
    def connection(self) -> Connection:
        """The connection this consumer receives from now."""
        return self._conn

    @property
    def error(self) -> ZqError | None:
        """What iterating raises now (None: messages, or waiting for them)."""
        return self._error

    @property
    def buffered(self) -> int:
        """Messages received and not yet handed out (given back on close)."""
        return len(self._buf)

    @property
    def limits(self) -> codec.Limits:
        """The session's frame limits (for sizing what a settlement may carry)."""
        return self._conn.limits

    @property
    def max_credit(self) -> int:
        """The broker's largest credit window per consumer and queue."""
        w = self._conn.welcome
        return w.max_credit if w is not None else 1 << 31

    def grow(self, prefetch: int) -> None:
        """Raise the credit window to ``prefetch`` (grants the difference; never lowers)."""
        if prefetch <= self.prefetch or self._closed:
            return
        more, self.prefetch = prefetch - self.prefetch, prefetch
        self._flush_every = max(1, prefetch // 4)
        if self._started and self._conn.broken is None:
            self._conn.credit(self.queue, more)

    # ------------------------------------------- the Connection's interface
    #
    # The connection calls only these (and reads ``queue``); a consumer calls only
    # the connection's public methods.

    def on_deliver(self, frame: f.Deliver) -> None:
        """A DELIVER for this consumer's queue."""
        hdrs = frame.headers
        q = self.queue
        buf = self._buf
        conn = self._conn
        for i, mid in enumerate(frame.ids):
            buf.append(Message(self, mid, q, frame.bodies[i], hdrs[i] if hdrs else None,
                               frame.attempts[i], conn))
        n = len(frame.ids)
        self.received += n
        self.held += n
        if self.held > self.peak_held:
            self.peak_held = self.held
        self._wake()

    def on_error(self, exc: ZqError) -> None:
        """The session is lost, the client closed, or the broker refused our credit:
        iterating raises ``exc`` until a new session (:meth:`on_new_session`) or a
        move (:meth:`move_to`). A MOVED the client follows raises nothing."""
        if self._placer is not None and not self._closed and self._placer.on_error(self, exc):
            return
        self.fail(exc)

    def fail(self, exc: ZqError) -> None:
        """Iterating raises ``exc`` (until a new session or a move)."""
        self._error = exc
        self._buf.clear()
        self._wake()

    def on_new_session(self) -> None:
        """New broker session: what we buffered is void there; grant the window again."""
        self._buf.clear()
        self.taken = []  # they name deliveries of the session that is gone
        self.held = 0
        self.owed = 0
        self._error = None
        if not self._closed:
            self._grant()

    def _grant(self, n: int = 0) -> None:
        """Ask for deliveries on this connection: ``n`` credit (0: the whole window). A
        stream's group consumer joins its group first (zq.client.streams)."""
        self._conn.credit(self.queue, n or self.prefetch)

    def on_undecodable(self, n: int) -> None:
        """``n`` deliveries came in a frame the connection could not decode (it NACKed
        them): this consumer never saw them, so its window stays full."""
        if not self._closed:
            self._conn.credit(self.queue, n)

    def taken_unsettled(self, ids: list[int], attempts: list[int]) -> None:
        """Add the messages taken since the last call and still unsettled; forget all."""
        for m in self.taken:
            if not m._settled:
                ids.append(m.id)
                attempts.append(m.attempt)
        self.taken = []

    def take_owed(self) -> int:
        """The credit earned by settling since the last call (0 once closed)."""
        n, self.owed = self.owed, 0
        return n if self._conn.consumers.get(self.queue) is self else 0

    # ------------------------------------------- for Message

    def _took(self, m: Message) -> None:
        """Work on ``m`` began; the connection reports it at the end of the turn."""
        if m._conn is not self._conn:  # it came before this consumer moved
            m._conn.start(m.id, m.attempt)
            return
        if not self.taken:
            self._conn.note_starting(self)
        self.taken.append(m)

    def _settled_one(self, conn: Connection) -> Connection:
        """One message delivered on ``conn`` is settled (there); returns ``conn``.
        StaleDelivery if ``conn`` was lost and the consumer moved on (its deliveries
        ended with its session: the broker delivers them again)."""
        if conn.closed and conn is not self._conn and not self._closed:
            raise StaleDelivery(f"delivered on a connection to {conn.endpoint} that was "
                                f"lost: the message is delivered again")
        conn.check()
        self.held -= 1
        if not self._closed:
            # Keep the window full: one settled, one more allowed. The credit is
            # counted here and joins the frames at the end of the turn, after the acks
            # (on the connection the consumer receives from now, which may be another).
            if not self.owed:
                self._conn.owe(self)
            self.owed += 1
        return conn

    def _recorded(self, conn: Connection) -> None:
        """A settlement is queued on ``conn`` (after its credit): send early if enough
        piled up."""
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self._unflushed = 0
            conn.flush()
            if conn is not self._conn:
                self._conn.flush()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
