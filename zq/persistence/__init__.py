"""Storage behind one interface: :class:`Store`. ``memory`` now; ``sqlite`` next."""

from zq.persistence.base import Recovered, Store, StoredMessage, WriteBatch
from zq.persistence.memory import MemoryStore

__all__ = ["MemoryStore", "Recovered", "Store", "StoredMessage", "WriteBatch", "make_store"]


def make_store(kind: str, data_dir: str) -> Store:
    """Build the store named ``kind`` (as given to ``zq broker --storage``)."""
    if kind == "memory":
        return MemoryStore()
    raise ValueError(f"unknown storage {kind!r}")
