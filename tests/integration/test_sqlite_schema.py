"""The SQLite store's schema: a new database, the upgrades from older ones, and a current
one opened without a write (a broker restarted on a full disk must still open it)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest

from zq.errors import StorageError
from zq.persistence.base import WAITING
from zq.persistence.schema import SCHEMA_VERSION, UPGRADES, migrate
from zq.persistence.sqlite import DB_NAME, SqliteStore


def test_every_older_version_has_its_upgrade() -> None:
    assert sorted(UPGRADES) == list(range(1, SCHEMA_VERSION))


async def test_a_new_database_gets_the_current_schema(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    rec = await s.open(window=10)
    assert (rec.messages, rec.next_id) == ([], 1)
    await s.close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"queues", "messages", "dedup", "results", "schedules"} <= tables


async def test_a_version_2_database_is_upgraded_in_place(tmp_path: Path) -> None:
    opts = msgpack.packb({"priority": 3})
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.executescript("""
            PRAGMA journal_mode = WAL;
            CREATE TABLE queues (qid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                settings BLOB);
            CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, qid INTEGER NOT NULL,
                attempts INTEGER NOT NULL, ready_at REAL NOT NULL, headers BLOB,
                body BLOB NOT NULL, created REAL NOT NULL DEFAULT 0, opts BLOB);
            CREATE INDEX messages_by_queue ON messages (qid);
            INSERT INTO queues VALUES (1, 'old', NULL);
            PRAGMA user_version = 2;
        """)
        db.execute("INSERT INTO messages VALUES (4, 1, 1, 0.0, NULL, x'6869', 12.5, ?)", (opts,))
    s = SqliteStore(tmp_path)
    rec = await s.open(window=100)
    assert [(m.id, m.queue, m.attempts, m.body, m.created, m.opts, m.state)
            for m in rec.messages] == [(4, "old", 1, b"hi", 12.5, {"priority": 3}, WAITING)]
    assert rec.next_id == 5
    await s.close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


class ReadOnly:
    """An aiosqlite connection stand-in that answers pragmas and refuses every write."""

    def __init__(self, version: int) -> None:
        self.version = version

    async def execute_fetchall(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        assert sql == "PRAGMA user_version", f"wrote: {sql}"
        return [(self.version,)]

    async def executescript(self, sql: str) -> None:
        raise AssertionError(f"wrote: {sql}")

    async def commit(self) -> None:
        raise AssertionError("committed")


async def test_a_current_database_is_not_written_at_open() -> None:
    await migrate(ReadOnly(SCHEMA_VERSION), Path("zq.db"))  # type: ignore[arg-type]


async def test_a_newer_database_is_refused_untouched() -> None:
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await migrate(ReadOnly(SCHEMA_VERSION + 1), Path("zq.db"))  # type: ignore[arg-type]
