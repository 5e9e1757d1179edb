"""zq.persistence loads SQLite only for a SQLite store: the storage interface (what the
broker's core imports) and the in-memory store load neither sqlite3 nor aiosqlite."""

from __future__ import annotations

import subprocess
import sys

import pytest

SQLITE = ("sqlite3", "aiosqlite")


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {SQLITE!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize("code", [
    "import zq.persistence",
    "import zq.persistence.base",
    "from zq.persistence import WriteBatch, Recovered, Store, StoredMessage",
    "from zq.persistence import MemoryStore, make_store; make_store('memory', '.')",
])
def test_no_sqlite_without_a_sqlite_store(code: str) -> None:
    assert loaded_after(code) == []


def test_sqlite_store_loads_on_first_use() -> None:
    assert loaded_after("from zq.persistence import SqliteStore") == list(SQLITE)


def test_public_names_keep_their_homes() -> None:
    import zq.persistence as p
    from zq.persistence import (
        MemoryStore,
        Recovered,
        SqliteStore,
        Store,
        StoredMessage,
        WriteBatch,
        base,
        make_store,
        memory,
        sqlite,
    )

    assert (Recovered, Store, StoredMessage, WriteBatch) == (
        base.Recovered, base.Store, base.StoredMessage, base.WriteBatch)
    assert MemoryStore is memory.MemoryStore
    assert SqliteStore is sqlite.SqliteStore
    assert isinstance(make_store("sqlite", "unused", fsync="normal"), SqliteStore)
    assert isinstance(make_store("memory", "unused"), MemoryStore)
    with pytest.raises(ValueError, match="unknown storage"):
        make_store("disk", "unused")
    with pytest.raises(AttributeError):
        _ = p.NoSuchStore
