"""Selection: which lane of a queue serves a consumer next.

A queue's ready messages are split into lanes by (priority, tenant). The core asks the
policy only among the eligible lanes (non-empty, tenant under its in-flight cap) of the
highest non-empty priority level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol


class Lane(Protocol):
    """One tenant's ready messages at one priority, as a policy sees them."""

    @property
    def tenant(self) -> str: ...

    @property
    def weight(self) -> int:
        """The tenant's share, >= 1."""
        ...

    @property
    def size(self) -> int:
        """Ready messages, >= 1 for an eligible lane."""
        ...


class SelectionPolicy(Protocol):
    kind: ClassVar[str]
    name: ClassVar[str]

    def pick(self, lanes: Sequence[Lane]) -> tuple[int, int]:
        """Choose among ``lanes`` (non-empty, eligible, sorted by tenant name).

        Returns (index, quota): serve at most quota (>= 1) messages from lanes[index]
        before asking again.
        """
        ...

    def took(self, tenant: str, n: int) -> None:
        """n messages of that tenant were delivered (after a pick)."""
        ...

    def idle(self, tenant: str) -> None:
        """That tenant's lane became empty."""
        ...


class WeightedFair:
    """Deficit round robin over tenants in name order; each message costs 1.

    When a tenant's turn comes its deficit grows by its weight, and it is served while
    the deficit is >= 1. The current tenant is remembered across calls; a tenant missing
    from ``lanes`` (capped or empty) is skipped. An empty lane's deficit is reset, and a
    skipped tenant carries at most one weight of unused deficit into its next turn, so
    a tenant held back by its cap cannot build up a burst.
    """

    kind: ClassVar[str] = "selection"
    name: ClassVar[str] = "weighted-fair"

    def __init__(self) -> None:
        self._deficit: dict[str, int] = {}
        self._current: str | None = None

    def pick(self, lanes: Sequence[Lane]) -> tuple[int, int]:
        if len(lanes) == 1:
            self._current = lanes[0].tenant
            return 0, lanes[0].size
        if self._current is not None:
            for i, lane in enumerate(lanes):
                if lane.tenant == self._current:
                    deficit = self._deficit.get(lane.tenant, 0)
                    if deficit >= 1:
                        return i, min(deficit, lane.size)
                    break
        i = self._next(lanes)
        lane = lanes[i]
        deficit = min(self._deficit.get(lane.tenant, 0), lane.weight) + lane.weight
        self._deficit[lane.tenant] = deficit
        self._current = lane.tenant
        return i, min(deficit, lane.size)

    def took(self, tenant: str, n: int) -> None:
        deficit = self._deficit.get(tenant, 0) - n
        if deficit > 0:
            self._deficit[tenant] = deficit
        else:
            self._deficit.pop(tenant, None)

    def idle(self, tenant: str) -> None:
        self._deficit.pop(tenant, None)

    def _next(self, lanes: Sequence[Lane]) -> int:
        """Index of the first lane whose tenant comes after the current one, wrapping."""
        current = self._current
        first = 0
        after: int | None = None
        for i, lane in enumerate(lanes):
            if lane.tenant < lanes[first].tenant:
                first = i
            if (current is not None and lane.tenant > current
                    and (after is None or lane.tenant < lanes[after].tenant)):
                after = i
        return first if after is None else after


class Strict:
    """Always the lane with the highest weight (ties: the first tenant name), all of it."""

    kind: ClassVar[str] = "selection"
    name: ClassVar[str] = "strict"

    def pick(self, lanes: Sequence[Lane]) -> tuple[int, int]:
        best = 0
        for i in range(1, len(lanes)):
            lane, top = lanes[i], lanes[best]
            if lane.weight > top.weight or (
                lane.weight == top.weight and lane.tenant < top.tenant
            ):
                best = i
        return best, lanes[best].size

    def took(self, tenant: str, n: int) -> None:
        pass

    def idle(self, tenant: str) -> None:
        pass


SELECTION_POLICIES: dict[str, Callable[[], SelectionPolicy]] = {
    WeightedFair.name: WeightedFair,
    Strict.name: Strict,
}
