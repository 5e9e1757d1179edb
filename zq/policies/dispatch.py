"""Dispatch: which consumer with credit gets the next batch from a queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from zq.protocol.credit import CreditWindow


class Candidate(Protocol):
    """A consumer of a queue as a policy sees it."""

    @property
    def window(self) -> CreditWindow: ...


class DispatchPolicy(Protocol):
    kind: ClassVar[str]
    name: ClassVar[str]

    def pick(self, queue: str, candidates: Sequence[Candidate]) -> int:
        """Index into ``candidates`` (all have credit, never empty) of the one to serve."""
        ...


class RoundRobin:
    """Serve consumers in turn, one batch each, so a backlog is shared evenly.

    The turn is kept per queue for the ``max_queues`` queues served last; a queue not
    served while that many others were (a deleted one, say) is forgotten and starts
    again at its first consumer. So the map does not grow with every queue name the
    broker ever saw, and the core need not tell the policy when a queue goes.
    """

    kind: ClassVar[str] = "dispatch"
    name: ClassVar[str] = "round-robin"

    def __init__(self, max_queues: int = 4096) -> None:
        if max_queues < 1:
            raise ValueError(f"max_queues must be >= 1, got {max_queues}")
        self.max_queues = max_queues
        self._turn: dict[str, int] = {}  # least recently served first

    def pick(self, queue: str, candidates: Sequence[Candidate]) -> int:
        turn = self._turn.pop(queue, 0)
        self._turn[queue] = turn + 1
        if len(self._turn) > self.max_queues:
            del self._turn[next(iter(self._turn))]
        return turn % len(candidates)

    @property
    def remembered(self) -> int:
        """Queues whose turn is kept."""
        return len(self._turn)


class LeastLoaded:
    """Serve the consumer with the fewest unacked messages (ties: the first)."""

    kind: ClassVar[str] = "dispatch"
    name: ClassVar[str] = "least-loaded"

    def pick(self, queue: str, candidates: Sequence[Candidate]) -> int:
        best, best_load = 0, candidates[0].window.in_flight
        for i in range(1, len(candidates)):
            load = candidates[i].window.in_flight
            if load < best_load:
                best, best_load = i, load
        return best


DISPATCH_POLICIES: dict[str, Callable[[], DispatchPolicy]] = {
    RoundRobin.name: RoundRobin,
    LeastLoaded.name: LeastLoaded,
}
