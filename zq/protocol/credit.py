"""A credit window for one (consumer, queue) pair, with no I/O.

The consumer grants credit; each delivered message uses one unit and stays
``in_flight`` until the consumer settles it (ACK, NACK or RELEASE). The
window never lets ``available + in_flight`` exceed ``limit``, so the broker
never holds more unacked messages at a consumer than it was granted.
"""

from __future__ import annotations

from zq.errors import InvalidCredit


class CreditWindow:
    __slots__ = ("available", "in_flight", "limit", "owed", "peak")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.available = 0
        self.in_flight = 0
        self.owed = 0  # of in_flight: acked, the acks not stored yet
        self.peak = 0  # highest in_flight ever seen (for counters and tests)

    def grant(self, n: int) -> None:
        """A CREDIT frame: the consumer can hold ``n`` more messages."""
        if n <= 0:
            raise InvalidCredit(f"credit must be positive, got {n}", credit=n, limit=self.limit)
        if self.available + self.in_flight + n > self.limit:
            raise InvalidCredit(
                f"credit {n} would exceed the window limit {self.limit} "
                f"({self.in_flight} in flight, {self.available} available; the broker "
                f"setting max_credit, zq broker --max-credit)",
                credit=n,
                limit=self.limit,
            )
        self.available += n

    def take(self, want: int) -> int:
        """How many messages the broker may deliver now (one batch), and use them."""
        k = want if want < self.available else self.available
        if k <= 0:
            return 0
        self.available -= k
        self.in_flight += k
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        return k

    def settle(self, n: int) -> None:
        """``n`` deliveries were acked, nacked or released."""
        if n < 0 or n > self.in_flight:
            raise ValueError(f"cannot settle {n} with {self.in_flight} in flight")
        self.in_flight -= n

    def owe(self, n: int) -> None:
        """``n`` deliveries were acked, and their acks are not stored yet: they keep
        their place in the window until :meth:`repay`. The credit the consumer sends
        for them pays for that place (``available`` may be below 0 until it comes), so
        a consumer never holds more unacked and unstored-acked messages together than
        it granted, and a crash brings back at most that many acked ones."""
        if n < 0 or n > self.in_flight:
            raise ValueError(f"cannot owe {n} with {self.in_flight} in flight")
        self.available -= n
        self.owed += n

    def repay(self, n: int) -> None:
        """The acks of ``n`` owed deliveries are stored: their places are free."""
        self.in_flight -= n
        self.available += n
        self.owed -= n

    def waits_for_repay(self) -> bool:
        """Whether the owed acks should be stored now: nothing is left to deliver
        until they are, or half the window is owed (stored while the consumer works
        through the other half, they keep it busy instead of idle for a commit)."""
        owed = self.owed
        return owed > 0 and (self.available <= 0
                             or 2 * owed >= self.available + self.in_flight)

    def void(self) -> None:
        """CANCEL: the unused credit is gone; in-flight messages stay in flight (and
        places owed stay owed: their repayment does not become credit)."""
        self.available = min(self.available, 0)

    def __repr__(self) -> str:
        return (f"CreditWindow(available={self.available}, in_flight={self.in_flight}, "
                f"limit={self.limit})")
