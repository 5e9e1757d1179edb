"""Idempotent producers: the PUBLISH seqs each producer id has had stored. No I/O.

A client that names a producer id in HELLO (the SDK does: random per ``zq.Client``,
kept across reconnects) numbers its PUBLISH frames with seqs that are never reused.
When a frame is resent (the session broke before its CONFIRM arrived, or a router
or link in between died), the broker finds the seq here and confirms it with the
ids it was given the first time instead of storing it again.

What is kept, per producer: the last ``keep`` stored frames (seq -> first id and
count), for as long as the producer keeps publishing and ``ttl`` seconds after.
Frames a client still waits for are always among its latest, because it has at
most its publish window unanswered; the broker keeps more than the SDK's window.
The table is stored with the messages (the same commit), so it survives a crash.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Producer:
    seqs: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (first, count)
    order: deque[int] = field(default_factory=deque)  # seqs, oldest first
    seen: float = 0.0  # monotonic time of the latest publish
    floor: int = 0  # seqs below this were forgotten (for trimming the stored rows)
    trimmed: int = 0  # the floor last staged for the store


class Producers:
    """Seqs stored per producer id, bounded in count per producer and in idle time."""

    def __init__(self, keep: int, ttl: float) -> None:
        self.keep = keep
        self.ttl = ttl
        self._by_id: dict[bytes, Producer] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, pid: bytes, seq: int) -> tuple[int, int] | None:
        """The (first id, count) stored for ``seq`` of producer ``pid``, if remembered."""
        p = self._by_id.get(pid)
        return None if p is None else p.seqs.get(seq)

    def put(self, pid: bytes, seq: int, first: int, count: int, now: float) -> None:
        """``seq`` of ``pid`` got ids ``first`` .. ``first + count - 1`` (staged)."""
        p = self._by_id.get(pid)
        if p is None:
            p = self._by_id[pid] = Producer()
        p.seen = now
        if seq not in p.seqs:
            p.order.append(seq)
        p.seqs[seq] = (first, count)
        if len(p.order) > self.keep:
            old = p.order.popleft()
            p.seqs.pop(old, None)
            p.floor = max(p.floor, old + 1)

    def drop(self, pid: bytes, seq: int, first: int) -> None:
        """The commit holding ``seq`` failed: forget it (a resend is stored anew)."""
        p = self._by_id.get(pid)
        if p is not None and p.seqs.get(seq, (0, 0))[0] == first:
            del p.seqs[seq]
            p.order.remove(seq)  # rare (a failed commit): a scan is fine

    def load(self, pid: bytes, entries: list[tuple[int, int, int]], seen: float) -> None:
        """Stored entries ``(seq, first, count)`` of ``pid`` (recovery), oldest first."""
        for seq, first, count in entries:
            self.put(pid, seq, first, count, seen)
        p = self._by_id.get(pid)
        if p is not None:
            p.trimmed = p.floor

    def expire(self, now: float) -> list[bytes]:
        """Forget producers idle for ``ttl``; their ids (their stored rows go too)."""
        gone = [pid for pid, p in self._by_id.items() if now - p.seen >= self.ttl]
        for pid in gone:
            del self._by_id[pid]
        return gone

    def trims(self) -> list[tuple[bytes, int]]:
        """(producer, floor) for producers that forgot seqs since the last call: their
        stored entries below the floor can be deleted."""
        out = []
        for pid, p in self._by_id.items():
            if p.floor > p.trimmed:
                p.trimmed = p.floor
                out.append((pid, p.floor))
        return out
