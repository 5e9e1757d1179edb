"""Storage behind one interface, :class:`Store`: ``sqlite`` (durable) or ``memory``.

The names below are loaded when first used (PEP 562), so that importing the
interface (``zq.persistence.base``, as the broker's core does) does not load
SQLite and aiosqlite; only a broker that opens a ``sqlite`` store loads them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zq.persistence.base import Recovered, Store, StoredMessage, WriteBatch
    from zq.persistence.memory import MemoryStore
    from zq.persistence.sqlite import SqliteStore

__all__ = ["MemoryStore", "Recovered", "SqliteStore", "Store", "StoredMessage", "WriteBatch",
           "make_store"]

_HOMES = {
    **dict.fromkeys(("Recovered", "Store", "StoredMessage", "WriteBatch"),
                    "zq.persistence.base"),
    "MemoryStore": "zq.persistence.memory",
    "SqliteStore": "zq.persistence.sqlite",
}


def make_store(kind: str, data_dir: str, *, fsync: str = "full", max_bytes: int = 0,
               checkpoint_interval: float = 30.0, reserve_bytes: int = 16 << 20) -> Store:
    """Build the store named ``kind`` (as given to ``zq broker --storage``)."""
    if kind == "sqlite":
        from zq.persistence.sqlite import SqliteStore

        return SqliteStore(data_dir, fsync=fsync, max_bytes=max_bytes,
                           checkpoint_interval=checkpoint_interval, reserve_bytes=reserve_bytes)
    if kind == "memory":
        from zq.persistence.memory import MemoryStore

        return MemoryStore()
    raise ValueError(f"unknown storage {kind!r}")


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'zq.persistence' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value
