"""The in-memory store: no durability. Messages live only in the broker's queues."""

from __future__ import annotations

from typing import Any

from zq.persistence.base import Recovered, StoredMessage, WriteBatch


class MemoryStore:
    """Keeps nothing: a restart starts empty. For users who want no durability."""

    durable = False
    full = False  # memory is never "full" in the store's sense

    async def open(self, window: int) -> Recovered:
        return Recovered(messages=[], next_id=1)

    async def commit(self, batch: WriteBatch) -> None:
        return None

    def commit_now(self, batch: WriteBatch) -> bool:
        return True  # nothing is stored, at once

    async def load(self, queue: str, after_id: int, limit: int) -> list[StoredMessage]:
        return []  # nothing is ever left on disk

    async def seek(self, group: str, start: tuple[Any, ...]) -> tuple[int, int]:
        return 0, 0  # (streams need a durable store)

    async def trim_point(self, key: str, floor: int, cutoff: float, excess: int, most: int
                         ) -> tuple[int, int, int, int, float]:
        return 0, 0, 0, 0, 0.0

    async def maintain(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {"kind": "memory"}

    async def close(self) -> None:
        return None
