"""A delivered message: what the application settles (ack, nack, release, complete)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from zq.client.args import complete_args
from zq.errors import AlreadySettled, InvalidArgument
from zq.protocol import limits

if TYPE_CHECKING:
    from zq.client.connection import Connection
    from zq.client.consumer import Consumer

__all__ = ["HISTORY", "REASON", "Message"]


HISTORY = limits.HISTORY  # header: the attempts of this message that did not end in an ack
REASON = limits.REASON  # header of a dead letter: why it died


class Message:
    """A delivered message. Settle it exactly once: ``ack()``, ``nack()`` or ``release()``.

    A message is settled on the connection it was delivered on, even after its
    consumer moved to another broker. ``ack`` and ``nack`` are fire and forget
    by default: the settlement is sent at the end of the loop turn, and a
    refusal by the broker (the attempt is no longer current, for instance
    because its time limit ran out and it went to another consumer) is only
    logged and kept in the connection's ``errors``. With ``wait=True`` they
    return once the broker has handled the settlement, and raise
    ``zq.StaleDelivery`` or ``zq.UnknownDelivery`` if it refused it,
    or ``zq.ConnectionLost`` if the broker went away first.
    """

    __slots__ = ("_conn", "_consumer", "_settled", "attempt", "body", "headers", "id", "queue")

    def __init__(self, consumer: Consumer, mid: int, queue: str, body: bytes,
                 headers: dict[str, Any] | None, attempt: int, conn: Connection) -> None:
        self._consumer = consumer
        self._conn = conn  # the connection it came on: its settlement goes there
        self._settled = False
        self.id = mid
        self.queue = queue
        self.body = body
        self.headers: dict[str, Any] = headers if headers is not None else {}
        self.attempt = attempt

    @property
    def offset(self) -> int | None:
        """Its offset in the stream it was read from (``client.consume(S, group=...)``):
        offsets increase along a stream. None for a queue's message."""
        return self.id if getattr(self._consumer, "group", None) is not None else None

    def __repr__(self) -> str:
        return (f"Message(id={self.id}, queue={self.queue!r}, attempt={self.attempt}, "
                f"body={self.body[:32]!r}{'...' if len(self.body) > 32 else ''})")

    def _settle(self) -> Connection:
        if self._settled:
            raise AlreadySettled(f"message {self.id} was already acked, nacked or released",
                                 id=self.id)
        self._settled = True
        return self._consumer._settled_one(self._conn)

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
        self._consumer._recorded(conn)
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
        self._consumer._recorded(conn)
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
        conn = self._conn
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
        conn = self._conn
        conn.check()
        # The MANAGE goes out first, then the credit this settlement earns.
        fut = conn.request("complete", args)
        self._settle()
        self._consumer._recorded(conn)
        reply = await fut
        return str(reply["state"])

    async def release(self) -> None:
        """Give the message back unprocessed; this delivery does not count as an attempt."""
        conn = self._settle()
        conn.release([self.id])
        self._consumer._recorded(conn)

    def mark_started(self) -> None:
        """Tell the broker that work on this message has begun (sent at the end of
        this loop turn, or not at all if it is settled first).

        If this client is lost, the messages it started count as failed attempts
        and the others go back as if released. Consumers with ``auto_start`` (the
        default) mark each message when the application takes it.
        """
        if not self._settled:
            self._consumer._took(self)
