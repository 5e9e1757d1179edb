"""Consumers and the messages they receive."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

from zq.client.args import complete_args
from zq.errors import AlreadySettled, InvalidArgument, ZqError
from zq.protocol import codec, limits
from zq.protocol import frames as f

if TYPE_CHECKING:
    from zq.client.connection import Connection

__all__ = ["Consumer", "Message", "complete_args"]


HISTORY = limits.HISTORY  # header: the attempts of this message that did not end in an ack
REASON = limits.REASON  # header of a dead letter: why it died


class Message:
    """A delivered message. Settle it exactly once: ``ack()``, ``nack()`` or ``release()``.

    ``ack`` and ``nack`` are fire and forget by default: the settlement is sent
    at the end of the loop turn, and a refusal by the broker (the attempt is no
    longer current, for instance because its time limit ran out and it went to
    another consumer) is only logged and kept in the connection's ``errors``.
    With ``wait=True`` they return once the broker has handled the settlement,
    and raise ``zq.StaleDelivery`` or ``zq.UnknownDelivery`` if it refused it,
    or ``zq.ConnectionLost`` if the broker went away first.
    """

    __slots__ = ("_consumer", "_settled", "attempt", "body", "headers", "id", "queue")

    def __init__(self, consumer: Consumer, mid: int, queue: str, body: bytes,
                 headers: dict[str, Any] | None, attempt: int) -> None:
        self._consumer = consumer
        self._settled = False
        self.id = mid
        self.queue = queue
        self.body = body
        self.headers: dict[str, Any] = headers if headers is not None else {}
        self.attempt = attempt

    def __repr__(self) -> str:
        return (f"Message(id={self.id}, queue={self.queue!r}, attempt={self.attempt}, "
                f"body={self.body[:32]!r}{'...' if len(self.body) > 32 else ''})")

    def _settle(self) -> Connection:
        if self._settled:
            raise AlreadySettled(f"message {self.id} was already acked, nacked or released",
                                 id=self.id)
        self._settled = True
        return self._consumer._settled_one()

    @property
    def history(self) -> list[dict[str, Any]]:
        """Earlier attempts that did not end in an ack (``zq-history``), oldest first.

        Each entry has ``attempt``, ``outcome`` (nacked, time limit, consumer
        lost, expired, ...), ``end`` and, when known, ``start``, ``consumer`` and
        ``reason``; times are wall-clock seconds.
        """
        h = self.headers.get(HISTORY)
        return list(h) if isinstance(h, list) else []

    @property
    def dead_reason(self) -> str | None:
        """Why a dead letter died (``zq-reason``); None for a live message."""
        r = self.headers.get(REASON)
        return None if r is None else str(r)

    async def ack(self, wait: bool = False) -> None:
        """Done with this message: the broker forgets it. Sent at the end of this loop turn.

        With ``wait``, return once the broker has taken it; raise
        ``zq.StaleDelivery`` if this attempt is no longer current.
        """
        conn = self._settle()
        conn.ack(self.id, self.attempt)
        self._consumer._recorded()
        if wait:
            await conn.settled(self.id)

    async def nack(self, requeue: bool = True, delay: float = 0.0, reason: str = "",
                   wait: bool = False) -> None:
        """Failed: back to the queue (after ``delay`` seconds), or dead if not ``requeue``.

        Without a ``delay`` the queue's retry policy decides when it comes back.
        ``wait`` as for :meth:`ack`.
        """
        if delay < 0:
            raise ValueError("delay must be >= 0")
        conn = self._settle()
        conn.nack(self.id, self.attempt, requeue, round(delay * 1000), reason)
        self._consumer._recorded()
        if wait:
            await conn.settled(self.id)

    async def extend(self, seconds: float) -> None:
        """Move this attempt's time limit to ``seconds`` from now (sent at once).

        A refusal (the attempt is no longer current) is logged and kept in the
        connection's ``errors``, like a refused ack.
        """
        if self._settled:
            raise AlreadySettled(f"message {self.id} was already acked, nacked or released",
                                 id=self.id)
        if (not isinstance(seconds, int | float) or isinstance(seconds, bool)
                or not math.isfinite(seconds) or seconds <= 0):
            raise InvalidArgument(f"extend needs seconds > 0, got {seconds!r}")
        ms = math.ceil(round(seconds * 1000, 6))
        if ms >= 1 << 62:
            raise InvalidArgument(f"extend: {seconds!r} seconds is too long")
        conn = self._consumer._conn
        conn.check()
        conn.extend(self.id, self.attempt, ms)

    async def complete(self, ok: bool, result: Any = None,
                       error: dict[str, str] | None = None, retry: bool = True,
                       delay: float | None = None) -> str:
        """Settle with a task outcome and return the broker's verdict.

        ``ok``: like an ack, and the broker keeps ``result`` (a msgpack value) if
        the queue keeps results. Not ``ok``: like a nack with ``error``
        (``{type, message, traceback}``); ``retry=False`` makes it dead at once,
        ``delay`` seconds before the retry (None: the queue's backoff). Returns
        ``"succeeded"``, ``"failed"`` (will retry) or ``"dead"``; raises
        ``zq.StaleDelivery`` if this attempt is no longer current.
        """
        args = complete_args(self.queue, self.id, self.attempt, ok, result, error, retry, delay)
        if self._settled:
            raise AlreadySettled(f"message {self.id} was already acked, nacked or released",
                                 id=self.id)
        conn = self._consumer._conn
        conn.check()
        # The MANAGE goes out first, then the credit this settlement earns.
        fut = conn.request("complete", args)
        self._settle()
        self._consumer._recorded()
        reply = await fut
        return str(reply["state"])

    async def release(self) -> None:
        """Give the message back unprocessed; this delivery does not count as an attempt."""
        self._settle().release([self.id])
        self._consumer._recorded()

    def mark_started(self) -> None:
        """Tell the broker that work on this message has begun (sent at the end of
        this loop turn, or not at all if it is settled first).

        If this client is lost, the messages it started count as failed attempts
        and the others go back as if released. Consumers with ``auto_start`` (the
        default) mark each message when the application takes it.
        """
        if not self._settled:
            self._consumer._took(self)


class Consumer:
    """An async iterator of :class:`Message` from one queue, under credit ``prefetch``.

    Use it as ``async with client.consume(q) as c: async for m in c: ...``; plain
    ``async for m in client.consume(q)`` works too. Leaving the ``async with``
    stops delivery and gives back messages that were received but not handed out.
    """

    def __init__(self, conn: Connection, queue: str, prefetch: int, *,
                 auto_start: bool = True) -> None:
        self._conn = conn
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

    def _start(self) -> None:
        conn = self._conn
        conn.check()
        if self.queue in conn.consumers:
            raise ValueError(f"this client already consumes {self.queue!r}; one consumer "
                             "per queue per client")
        conn.consumers[self.queue] = self
        self._started = True
        conn.credit(self.queue, self.prefetch)

    async def __aenter__(self) -> Consumer:
        if not self._started:
            self._start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        if not self._started:
            self._start()
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
                if self._buf:
                    conn.release([m.id for m in self._buf])
                    self.held -= len(self._buf)
        self._buf.clear()
        self._wake()

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
        for i, mid in enumerate(frame.ids):
            buf.append(Message(self, mid, q, frame.bodies[i], hdrs[i] if hdrs else None,
                               frame.attempts[i]))
        n = len(frame.ids)
        self.received += n
        self.held += n
        if self.held > self.peak_held:
            self.peak_held = self.held
        self._wake()

    def on_error(self, exc: ZqError) -> None:
        """The session is lost, the client closed, or the broker refused our credit:
        iterating raises ``exc`` until a new session (:meth:`on_new_session`)."""
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
            self._conn.credit(self.queue, self.prefetch)

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
        if not self.taken:
            self._conn.note_starting(self)
        self.taken.append(m)

    def _settled_one(self) -> Connection:
        conn = self._conn
        conn.check()
        self.held -= 1
        if not self._closed:
            # Keep the window full: one settled, one more allowed. The credit is
            # counted here and joins the frames at the end of the turn, after the acks.
            if not self.owed:
                conn.owe(self)
            self.owed += 1
        return conn

    def _recorded(self) -> None:
        """A settlement is queued (after its credit): send early if enough piled up."""
        self._unflushed += 1
        if self._unflushed >= self._flush_every:
            self._unflushed = 0
            self._conn.flush()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
