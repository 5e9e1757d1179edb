"""The in-memory store: no durability. Messages live only in the broker's queues."""

from __future__ import annotations

from zq.persistence.base import Recovered, WriteBatch


class MemoryStore:
    """Keeps nothing: a restart starts empty. For users who want no durability."""

    durable = False

    async def open(self) -> Recovered:
        return Recovered(messages=[], next_id=1)

    async def commit(self, batch: WriteBatch) -> None:
        return None

    async def close(self) -> None:
        return None
