"""The storage interface every store implements.

The broker collects everything it must persist during one pass of its loop in
one :class:`WriteBatch` and hands it to :meth:`Store.commit`. Publisher
confirms are sent only after ``commit`` returns; if it raises, nothing of the
batch counts as stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class StoredMessage:
    """A message as the store keeps it."""

    id: int
    queue: str
    body: bytes
    headers: dict[str, Any] | None
    attempts: int  # deliveries so far
    ready_at: float  # wall-clock seconds; 0 = ready now


@dataclass(slots=True)
class WriteBatch:
    """Everything to persist from one pass of the broker loop."""

    inserts: list[StoredMessage] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    # (id, attempts, ready_at) for messages whose state changed
    updates: list[tuple[int, int, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.deletes or self.updates)


@dataclass(slots=True)
class Recovered:
    """What a store holds at start: its messages and the next free id."""

    messages: list[StoredMessage]
    next_id: int


class Store(Protocol):
    """One writer; all methods are called from the broker's event loop."""

    durable: bool

    async def open(self) -> Recovered:
        """Open (creating if needed) and return what is stored."""
        ...

    async def commit(self, batch: WriteBatch) -> None:
        """Persist ``batch`` atomically; raise a ZqError storage error on failure."""
        ...

    async def close(self) -> None:
        """Flush and release resources."""
        ...
