"""Storage behind one interface, :class:`Store`: ``sqlite`` (durable) or ``memory``."""

from zq.persistence.base import Recovered, Store, StoredMessage, WriteBatch
from zq.persistence.memory import MemoryStore
from zq.persistence.sqlite import SqliteStore

__all__ = ["MemoryStore", "Recovered", "SqliteStore", "Store", "StoredMessage", "WriteBatch",
           "make_store"]


def make_store(kind: str, data_dir: str, *, fsync: str = "full", max_bytes: int = 0,
               checkpoint_interval: float = 30.0, reserve_bytes: int = 16 << 20) -> Store:
    """Build the store named ``kind`` (as given to ``zq broker --storage``)."""
    if kind == "sqlite":
        return SqliteStore(data_dir, fsync=fsync, max_bytes=max_bytes,
                           checkpoint_interval=checkpoint_interval, reserve_bytes=reserve_bytes)
    if kind == "memory":
        return MemoryStore()
    raise ValueError(f"unknown storage {kind!r}")
