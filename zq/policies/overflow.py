"""Overflow: what to do when a queue with a maximum length is full."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol


class OverflowPolicy(Protocol):
    kind: ClassVar[str]
    name: ClassVar[str]

    def on_full(self, length: int, limit: int, incoming: int) -> int:
        """Called when ``length + incoming > limit``.

        Returns -1 to refuse the incoming messages (the broker answers QUEUE_FULL), or the
        number of oldest ready or delayed messages (the incoming ones included) to move
        to the dead-letter queue once the incoming ones are stored.
        """
        ...


class Reject:
    """Refuse the incoming messages."""

    kind: ClassVar[str] = "overflow"
    name: ClassVar[str] = "reject"

    def on_full(self, length: int, limit: int, incoming: int) -> int:
        return -1


class DropOldest:
    """Dead-letter just enough of the oldest messages to make room: a ring buffer.

    A batch larger than the limit is taken too; its own oldest messages then go
    to the dead-letter queue with the rest, so the queue keeps the newest ``limit``.
    """

    kind: ClassVar[str] = "overflow"
    name: ClassVar[str] = "drop-oldest"

    def on_full(self, length: int, limit: int, incoming: int) -> int:
        return length + incoming - limit


OVERFLOW_POLICIES: dict[str, Callable[[], OverflowPolicy]] = {
    Reject.name: Reject,
    DropOldest.name: DropOldest,
}
