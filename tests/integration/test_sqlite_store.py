"""SqliteStore on a real database file: what commits, what recovers, how it fails."""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path

import pytest

from zq.errors import StorageError, StorageFull
from zq.persistence.base import WAITING, WriteBatch
from zq.persistence.sqlite import DB_NAME, NOW_ROWS, SqliteStore


@pytest.fixture(autouse=True, params=["one hop", "per statement"])
def commit_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with both ways of committing (see SqliteStore.one_hop)."""
    if request.param == "per statement":
        monkeypatch.setattr(SqliteStore, "one_hop", False)
    else:
        assert SqliteStore.one_hop  # the aiosqlite in use has the one-hop path


def inserts(first: int, n: int, queue: str = "q", size: int = 10) -> WriteBatch:
    ids = range(first, first + n)
    return WriteBatch(inserts=[(first, queue, [{"i": i} if i % 2 else None for i in ids],
                                [b"%d" % i * size for i in ids])])


def rows(path: Path) -> list[tuple[int, int, float]]:
    with sqlite3.connect(path / DB_NAME) as db:
        return list(db.execute("SELECT id, attempts, ready_at FROM messages ORDER BY id"))


async def test_commit_then_recover_in_order_with_headers(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    rec = await s.open(window=100)
    assert (rec.messages, rec.next_id, rec.backlog) == ([], 1, {})
    await s.commit(inserts(1, 5))
    await s.commit(inserts(6, 2, queue="other"))
    await s.commit(WriteBatch(updates=[([2, 3], [1, 1], 0.0, WAITING),
                                       ([3], [2], 1e12, WAITING)], deletes=[4]))
    await s.close()

    s = SqliteStore(tmp_path)
    rec = await s.open(window=100)
    got = [(m.id, m.queue, m.attempts, m.ready_at, m.headers) for m in rec.messages]
    assert got == [(1, "q", 0, 0.0, {"i": 1}), (2, "q", 1, 0.0, None), (3, "q", 2, 1e12, {"i": 3}),
                   (5, "q", 0, 0.0, {"i": 5}), (6, "other", 0, 0.0, None),
                   (7, "other", 0, 0.0, {"i": 7})]
    assert rec.messages[0].body == b"1" * 10
    assert rec.next_id == 8
    await s.close()


async def test_inserts_of_every_size_store_each_message_once(tmp_path: Path) -> None:
    # Rows go in 64, 16, 4 and 1 per statement: frames of sizes around those
    # boundaries, several queues and headers, in one batch and in several.
    sizes = [1, 3, 63, 64, 65, 86, 200, 5]
    batch, first, want = WriteBatch(), 1, []
    for k, n in enumerate(sizes):
        queue = f"q{k % 3}"
        headers = None if k % 2 else [{"n": first + i} if i % 3 else None for i in range(n)]
        bodies = [b"m%d" % (first + i) for i in range(n)]
        batch.inserts.append((first, queue, headers, bodies))
        want += [(first + i, queue, None if headers is None else headers[i], bodies[i])
                 for i in range(n)]
        first += n
    s = SqliteStore(tmp_path)
    await s.open(window=1000)
    await s.commit(batch)
    assert s.commit_now(inserts(first, 7)) is SqliteStore.one_hop
    await s.close()
    s = SqliteStore(tmp_path)
    rec = await s.open(window=1000)
    got = sorted((m.id, m.queue, m.headers, m.body) for m in rec.messages)
    assert got[:len(want)] == want
    assert len(got) == len(want) + (7 if SqliteStore.one_hop else 0)
    assert s.stats()["messages_written"] == 0  # counts this process's writes only
    await s.close()


async def test_ids_are_never_reused_after_everything_is_acked(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=10)
    await s.commit(inserts(1, 3))
    await s.commit(WriteBatch(deletes=[1, 2, 3]))
    await s.close()
    s = SqliteStore(tmp_path)
    rec = await s.open(window=10)
    assert (rec.messages, rec.next_id) == ([], 4)
    await s.close()


async def test_recovery_loads_a_window_and_pages_the_rest(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=10)
    await s.commit(inserts(1, 25))
    await s.close()
    s = SqliteStore(tmp_path)
    rec = await s.open(window=10)
    assert [m.id for m in rec.messages] == list(range(1, 11))
    assert rec.backlog == {"q": 15}
    page = await s.load("q", 10, 10)
    assert [m.id for m in page] == list(range(11, 21))
    page = await s.load("q", 20, 10)
    assert [m.id for m in page] == list(range(21, 26))
    assert await s.load("q", 25, 10) == []
    assert await s.load("nobody", 0, 10) == []
    await s.close()


async def test_a_failed_commit_stores_nothing(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=10)
    await s.commit(inserts(1, 2))
    with pytest.raises(StorageError):  # id 2 exists: the whole batch rolls back
        await s.commit(WriteBatch(inserts=[(3, "new", None, [b"x"]), (2, "new", None, [b"y"])],
                                  deletes=[1]))
    assert [r[0] for r in rows(tmp_path)] == [1, 2]
    await s.commit(inserts(3, 1, queue="new"))  # the queue it did not create works later
    await s.close()
    s = SqliteStore(tmp_path)
    rec = await s.open(window=10)
    assert [(m.id, m.queue) for m in rec.messages] == [(1, "q"), (2, "q"), (3, "new")]
    await s.close()


async def _only_commit(s: SqliteStore) -> bool:
    """Whether commit_now can apply; without the one-hop path it never does (shown
    here), and the store is closed."""
    if SqliteStore.one_hop:
        return True
    assert not s.commit_now(inserts(1, 1))
    assert rows(s.dir) == []
    await s.close()
    return False


async def test_a_small_batch_commits_on_the_calling_thread(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=10)
    if not await _only_commit(s):
        return
    assert s.commit_now(inserts(1, 3))
    assert [r[0] for r in rows(tmp_path)] == [1, 2, 3]  # committed: another connection sees it
    assert s.commit_now(WriteBatch(updates=[([2], [1], 0.0, WAITING)], deletes=[1]))
    assert rows(tmp_path) == [(2, 1, 0.0), (3, 0, 0.0)]
    assert not s.commit_now(inserts(4, NOW_ROWS + 1))  # too big: left for commit()
    assert not s.commit_now(WriteBatch(purges=[("q", 0, 3)]))  # any number of rows
    assert [r[0] for r in rows(tmp_path)] == [2, 3]
    assert (s.stats()["commits"], s.stats()["commits_now"]) == (2, 2)
    await s.close()


async def test_a_failed_commit_now_stores_nothing_and_leaves_it_to_commit(
        tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=10)
    await s.commit(inserts(1, 2))
    clash = WriteBatch(inserts=[(3, "new", None, [b"x"]), (2, "new", None, [b"y"])],
                       deletes=[1])
    assert not s.commit_now(clash)  # rolled back
    assert [r[0] for r in rows(tmp_path)] == [1, 2]
    with pytest.raises(StorageError):  # commit() says what went wrong
        await s.commit(clash)
    assert s.commit_now(inserts(3, 1, queue="new")) is SqliteStore.one_hop
    await s.close()


async def test_commit_now_on_a_full_database_leaves_it_to_commit(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path, max_bytes=128 * 1024)
    await s.open(window=10)
    if not await _only_commit(s):
        return
    stored = 0
    while s.commit_now(inserts(stored + 1, 10, size=100)):
        stored += 10
    assert stored > 0
    assert len(rows(tmp_path)) == stored
    with pytest.raises(StorageFull):
        await s.commit(inserts(stored + 1, 10, size=100))
    await s.close()


async def test_slow_commits_go_to_the_thread(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=10)
    if not await _only_commit(s):
        return
    clock = iter(i * 0.5 for i in range(1000))  # each commit_now "takes" 0.5 s
    monkeypatch.setattr("zq.persistence.sqlite.time.monotonic", lambda: next(clock))
    assert s.commit_now(inserts(1, 1))
    assert not s.commit_now(inserts(2, 1))  # the disk was found slow: the thread's turn
    await s.commit(inserts(2, 1))
    assert [r[0] for r in rows(tmp_path)] == [1, 2]
    await s.close()


async def test_full_database_is_storage_full_and_acks_free_space(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path, max_bytes=128 * 1024)
    await s.open(window=10)
    stored = 0
    error: StorageFull | None = None
    while error is None:
        try:
            await s.commit(inserts(stored + 1, 10, size=100))
            stored += 10
        except StorageFull as exc:
            error = exc
    assert error.retriable
    assert stored > 0
    assert len(rows(tmp_path)) == stored
    await s.commit(WriteBatch(deletes=list(range(1, stored + 1))))
    await s.commit(inserts(stored + 1, 10, size=100))  # freed pages are reused
    assert len(rows(tmp_path)) == 10
    await s.close()


async def test_database_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open(window=10)
    assert await s._pragma("journal_mode") == "wal"
    assert await s._pragma("synchronous") == 2
    await s.close()
    s = SqliteStore(tmp_path, fsync="normal")
    await s.open(window=10)
    assert await s._pragma("synchronous") == 1
    await s.close()


async def test_second_store_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path)
    await first.open(window=10)
    with pytest.raises(StorageError, match="in use by another zq broker"):
        await SqliteStore(tmp_path).open(window=10)
    await first.close()
    again = SqliteStore(tmp_path)  # the lock goes with the first store
    await again.open(window=10)
    await again.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageError, match="schema version 99"):
        await SqliteStore(tmp_path).open(window=10)


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=r"zq\.db"):
        await SqliteStore(tmp_path).open(window=10)


async def test_checkpoint_keeps_the_wal_small(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path, checkpoint_interval=0.001)
    await s.open(window=10)
    for i in range(20):
        await s.commit(inserts(i * 100 + 1, 100, size=100))
        await s.commit(WriteBatch(deletes=list(range(i * 100 + 1, i * 100 + 101))))
    assert (tmp_path / "zq.db-wal").stat().st_size > 0
    await s.maintain()
    assert (tmp_path / "zq.db-wal").stat().st_size == 0  # TRUNCATE checkpoint
    await s.close()


async def test_wal_stays_bounded_under_steady_load(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path, checkpoint_interval=3600)  # only SQLite's own checkpoints
    await s.open(window=10)
    wal = tmp_path / "zq.db-wal"
    biggest = 0
    for i in range(300):  # 150,000 messages of 200 B in and out: ~60 MB through the WAL
        await s.commit(inserts(i * 500 + 1, 500, size=200 // len(str(i * 500 + 1))))
        if i:
            await s.commit(WriteBatch(deletes=list(range((i - 1) * 500 + 1, i * 500 + 1))))
        biggest = max(biggest, wal.stat().st_size)
    assert biggest < 16 * 1024 * 1024, biggest
    db_size = (tmp_path / DB_NAME).stat().st_size
    assert db_size < 4 * 1024 * 1024, db_size  # freed pages are reused, the file does not grow
    await s.close()


def test_runs() -> None:
    from zq.persistence.sqlite import id_runs, update_runs
    assert id_runs([]) == []
    assert id_runs([5, 6, 7, 9, 1, 2]) == [(5, 7), (9, 9), (1, 2)]
    assert id_runs([0, 1]) == [(0, 1)]
    assert update_runs([([1, 2, 3, 5], [1, 1, 2, 2], 0.0, 1), ([7], [3], 9.5, 2)]) == [
        (1, 0.0, 1, 1, 2), (2, 0.0, 1, 3, 3), (2, 0.0, 1, 5, 5), (3, 9.5, 2, 7, 7)]


async def test_commits_after_a_checkpoint_succeed(tmp_path: Path) -> None:
    """The timed checkpoint must leave no statement active: the broker raises the
    GC thresholds, so an unread cursor is not collected before the next COMMIT,
    which then fails with "SQL statements in progress"."""
    s = SqliteStore(tmp_path, checkpoint_interval=0.001)
    await s.open(window=10)
    gc.disable()
    try:
        for i in range(5):
            await s.commit(inserts(i * 10 + 1, 10))
            await s.maintain()
        await s.commit(WriteBatch(deletes=list(range(1, 51))))
    finally:
        gc.enable()
    await s.close()


async def test_producer_seqs_commit_with_their_messages_trim_and_recover(tmp_path: Path) -> None:
    a, b = b"\x01" * 16, b"\x02" * 16
    s = SqliteStore(tmp_path)
    await s.open(window=10)
    first = inserts(1, 3)
    first.produced = [(a, 5, 1, 2), (a, 6, 3, 1)]
    first.created = 1000.0
    await s.commit(first)
    second = inserts(4, 1)
    second.produced = [(a, 9, 4, 1), (b, 1, 5, 0)]
    second.created = 2000.0
    await s.commit(second)
    await s.close()

    s = SqliteStore(tmp_path)
    rec = await s.open(window=10)
    assert sorted(rec.producers) == [(a, 2000.0, [(5, 1, 2), (6, 3, 1), (9, 4, 1)]),
                                     (b, 2000.0, [(1, 5, 0)])]
    # A trim deletes the rows wholly below the floor; ALL_SEQS (a very high floor) all.
    await s.commit(WriteBatch(trims=[(a, 7), (b, 1 << 63)]))
    await s.close()
    s = SqliteStore(tmp_path)
    rec = await s.open(window=10)
    assert rec.producers == [(a, 2000.0, [(9, 4, 1)])]
    await s.close()
