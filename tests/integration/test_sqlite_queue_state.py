"""SqliteStore: what queue semantics store (options, rewrites, settings, purges, dedup ids)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgpack
import pytest

from zq.persistence.base import WAITING, Rewrite, WriteBatch
from zq.persistence.schema import SCHEMA_VERSION
from zq.persistence.sqlite import DB_NAME, SqliteStore


@pytest.fixture(autouse=True, params=["one hop", "per statement"])
def commit_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "per statement":
        monkeypatch.setattr(SqliteStore, "one_hop", False)


async def reopen(path: Path, s: SqliteStore) -> tuple[SqliteStore, object]:
    await s.close()
    s = SqliteStore(path)
    return s, await s.open(window=100)


async def test_options_created_time_and_due_time_survive_a_restart(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=100)
    opts = msgpack.packb({"priority": 7, "tenant": "t", "expires_at": 2e9})
    await s.commit(WriteBatch(inserts=[(1, "q", None, [b"a", b"b"]), (3, "q", None, [b"c"])],
                              placed=[(1, 2, 1.9e9, opts)], created=1.7e9))
    s2 = SqliteStore(tmp_path)
    await s.close()
    rec = await s2.open(window=100)
    got = [(m.id, m.ready_at, m.created, m.opts) for m in rec.messages]
    assert got == [(1, 1.9e9, 1.7e9, {"priority": 7, "tenant": "t", "expires_at": 2e9}),
                   (2, 1.9e9, 1.7e9, {"priority": 7, "tenant": "t", "expires_at": 2e9}),
                   (3, 0.0, 1.7e9, None)]
    await s2.close()


async def test_a_rewrite_moves_a_message_to_another_queue_in_staging_order(
        tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=100)
    await s.commit(WriteBatch(inserts=[(1, "q", None, [b"a"])]))
    hist = {"zq-history": [{"attempt": 1, "outcome": "nacked"}], "zq-origin": "q"}
    # attempts set to 1, then the whole row rewritten into the DLQ, then attempts again:
    # the last one staged wins.
    await s.commit(WriteBatch(updates=[([1], [1], 0.0, WAITING),
                                       Rewrite(1, "q.dlq", 0, 0.0, hist, None),
                                       ([1], [4], 0.0, WAITING)]))
    s, rec = await reopen(tmp_path, s)
    [m] = rec.messages  # type: ignore[attr-defined]
    assert (m.queue, m.attempts, m.headers) == ("q.dlq", 4, hist)
    await s.close()


async def test_settings_are_kept_and_a_deleted_queue_loses_them(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=100)
    blob = msgpack.packb({"settings": {"max_attempts": 2}, "paused": True})
    await s.commit(WriteBatch(settings=[("a", blob), ("b", blob)]))
    await s.commit(WriteBatch(settings=[("b", None)]))
    s, rec = await reopen(tmp_path, s)
    assert rec.settings == {"a": {"settings": {"max_attempts": 2}, "paused": True}}  # type: ignore[attr-defined]
    await s.close()


async def test_purge_deletes_the_queue_rows_above_an_id(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=100)
    await s.commit(WriteBatch(inserts=[(1, "q", None, [b"x"] * 10), (11, "r", None, [b"y"])]))
    await s.commit(WriteBatch(purges=[("q", 4, 9)]))
    s, rec = await reopen(tmp_path, s)
    assert [m.id for m in rec.messages] == [1, 2, 3, 4, 10, 11]  # type: ignore[attr-defined]
    await s.close()


async def test_dedup_ids_are_recovered_until_they_expire(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=100)
    now = time.time()
    await s.commit(WriteBatch(dedups=[("q", "k1", 5, now + 60), ("q", "k2", 6, now - 1)]))
    s, rec = await reopen(tmp_path, s)
    assert rec.dedups == [("q", "k1", 5, now + 60)]  # type: ignore[attr-defined]
    await s.close()


async def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.executescript("""
            PRAGMA journal_mode = WAL;
            CREATE TABLE queues (qid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
            CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, qid INTEGER NOT NULL,
                attempts INTEGER NOT NULL, ready_at REAL NOT NULL, headers BLOB,
                body BLOB NOT NULL);
            CREATE INDEX messages_by_queue ON messages (qid);
            INSERT INTO queues VALUES (1, 'old');
            INSERT INTO messages VALUES (1, 1, 2, 0.0, NULL, x'6869');
            PRAGMA user_version = 1;
        """)
    s = SqliteStore(tmp_path)
    rec = await s.open(window=100)
    assert [(m.id, m.queue, m.attempts, m.body, m.opts) for m in rec.messages] == [
        (1, "old", 2, b"hi", None)]
    await s.commit(WriteBatch(settings=[("old", msgpack.packb({"paused": False}))]))
    await s.close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT state FROM messages").fetchall() == [(0,)]
