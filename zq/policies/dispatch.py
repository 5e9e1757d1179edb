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
    """Serve consumers in turn, one batch each, so a backlog is shared evenly."""

    kind: ClassVar[str] = "dispatch"
    name: ClassVar[str] = "round-robin"

    def __init__(self) -> None:
        self._turn: dict[str, int] = {}

    def pick(self, queue: str, candidates: Sequence[Candidate]) -> int:
        turn = self._turn.get(queue, 0)
        self._turn[queue] = turn + 1
        return turn % len(candidates)

    def forget(self, queue: str) -> None:
        self._turn.pop(queue, None)


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


def make_dispatch(name: str) -> DispatchPolicy:
    """A new dispatch policy by name: a built-in or a plugin (see ``zq.policies.load``)."""
    from zq.policies import load

    policy: DispatchPolicy = load("dispatch", name)
    return policy
