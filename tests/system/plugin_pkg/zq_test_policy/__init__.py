"""Policy plugins for the system tests (tests/system/test_queue_acceptance_b.py).

The test copies this package next to a generated ``zq_test_policy-0.1.dist-info``
in a temporary folder and puts that folder on the broker's PYTHONPATH, so the
broker finds these classes through the ``zq.policies`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class ReverseAlpha:
    """Selection: always the tenant whose name sorts last, its whole lane."""

    kind: ClassVar[str] = "selection"
    name: ClassVar[str] = "reverse-alpha"

    def pick(self, lanes: Sequence[Any]) -> tuple[int, int]:
        best = max(range(len(lanes)), key=lambda i: lanes[i].tenant)
        return best, lanes[best].size

    def took(self, tenant: str, n: int) -> None:
        pass

    def idle(self, tenant: str) -> None:
        pass


class PinFirst:
    """Dispatch: always the first consumer with credit (the one that subscribed first)."""

    kind: ClassVar[str] = "dispatch"
    name: ClassVar[str] = "pin-first"

    def pick(self, queue: str, candidates: Sequence[Any]) -> int:
        return 0
