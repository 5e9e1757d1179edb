"""The order of shipped batches, on both sides of a primary-standby pair. No I/O.

:class:`Outgoing` (the primary) numbers its committed batches 1, 2, ... within its
term, keeps what waits for each batch's ack (the confirms), releases them in order on
cumulative acks, and keeps recent batches so that a standby that missed some can be
sent them again. :class:`Incoming` (the standby) says what to do with each batch that
arrives: apply it, ack it again (already applied), refuse it (an older term: a
deposed primary), or ask for the one it expects (a gap). See docs/HA.md.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")


class Verdict(Enum):
    APPLY = "apply"  # the next one: apply it, then ack it
    DUPLICATE = "duplicate"  # applied before: ack it again, apply nothing
    STALE = "stale"  # from an older term: refuse it, naming this side's term
    GAP = "gap"  # later than the next one: ask for the next one


@dataclass(slots=True)
class _Shipped(Generic[T]):
    seq: int
    parts: list[bytes]
    size: int
    waiting: T | None  # released on its ack (None once released)


class Outgoing(Generic[T]):
    """The primary's side: ``ship`` after each commit, ``acked`` on each ack."""

    def __init__(self, term: int, keep: int = 1024, keep_bytes: int = 64 << 20) -> None:
        if term < 1 or keep < 1 or keep_bytes < 1:
            raise ValueError("term, keep and keep_bytes must be positive")
        self.term = term
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.last_seq = 0
        self.last_acked = 0
        self._window: deque[_Shipped[T]] = deque()  # oldest first, seqs consecutive
        self._bytes = 0

    def ship(self, parts: list[bytes], waiting: T) -> int:
        """A committed batch to send: its seq (``waiting`` is released on its ack)."""
        self.last_seq += 1
        size = sum(len(p) for p in parts)
        self._window.append(_Shipped(self.last_seq, parts, size, waiting))
        self._bytes += size
        self._trim()
        return self.last_seq

    def waiting_last(self) -> T | None:
        """What waits for the newest batch, if it is not acked yet (None: it is)."""
        if self.last_seq > self.last_acked and self._window:
            return self._window[-1].waiting
        return None

    def waiting_unacked(self) -> list[T]:
        """What waits for the batches not acked yet, oldest first."""
        return [s.waiting for s in self._window
                if s.seq > self.last_acked and s.waiting is not None]

    @property
    def unacked(self) -> int:
        return self.last_seq - self.last_acked

    @property
    def over(self) -> bool:
        """Whether the batches not acked yet pass the window's bounds: the standby is
        too slow to keep, and the caller takes it out of ``sync``."""
        return self.unacked > self.keep or self._bytes > self.keep_bytes

    def acked(self, seq: int) -> list[T]:
        """The standby has applied everything up to ``seq``: what waited for those
        batches, oldest first (each exactly once; an old or repeated ack releases
        nothing). An ack of a batch never shipped is a protocol error."""
        if seq > self.last_seq:
            raise ValueError(f"ack of seq {seq}, but only {self.last_seq} were shipped")
        released: list[T] = []
        if seq <= self.last_acked:
            return released
        for s in self._window:
            if s.seq > seq:
                break
            if s.seq > self.last_acked and s.waiting is not None:
                released.append(s.waiting)
                s.waiting = None
        self.last_acked = seq
        self._trim()
        return released

    def since(self, seq: int) -> list[tuple[int, list[bytes]]] | None:
        """The batches after ``seq`` (a standby that expects ``seq + 1``), or None if
        some of them are no longer kept: that standby must take a backup."""
        if seq >= self.last_seq:
            return []
        if not self._window or self._window[0].seq > seq + 1:
            return None
        return [(s.seq, s.parts) for s in self._window if s.seq > seq]

    def _trim(self) -> None:
        """Forget acked batches past the bounds (unacked ones stay: see ``over``)."""
        w = self._window
        while w and w[0].seq <= self.last_acked and (
                len(w) > self.keep or self._bytes > self.keep_bytes):
            self._bytes -= w.popleft().size


class Incoming:
    """The standby's side: where it stands, and what to do with what arrives."""

    def __init__(self, term: int = 0, seq: int = 0) -> None:
        self.term = term  # of the last batch applied (0: none yet)
        self.seq = seq

    def check(self, term: int, seq: int) -> Verdict:
        if term < self.term:
            return Verdict.STALE
        if term > self.term:  # a new primary numbers from 1
            return Verdict.APPLY if seq == 1 else Verdict.GAP
        if seq <= self.seq:
            return Verdict.DUPLICATE
        return Verdict.APPLY if seq == self.seq + 1 else Verdict.GAP

    @property
    def expects(self) -> int:
        """The seq it asks for after a GAP in its own term."""
        return self.seq + 1

    def applied(self, term: int, seq: int) -> None:
        """The batch was committed here (with this position, in the same transaction)."""
        if self.check(term, seq) is not Verdict.APPLY:
            raise ValueError(f"({term}, {seq}) is not the next batch after "
                             f"({self.term}, {self.seq})")
        self.term, self.seq = term, seq
