"""zq.persistence.backup and ``zq backup``: a consistent online copy of a data folder.

The source is a real SqliteStore, left open as a running broker leaves it (its lock
held, its log in use), and written to while the copy is taken.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from zq.cli import main
from zq.persistence.backup import RESTORE_FILES, BackupError, backup_folder, copy_database
from zq.persistence.base import WriteBatch
from zq.persistence.reserve import RESERVE_NAME
from zq.persistence.sqlite import DB_NAME, LOCK_NAME, SqliteStore

BATCH = 500  # messages per transaction


def body(batch: int, i: int) -> bytes:
    return f"b{batch:05d}-{i:04d}-".encode().ljust(200, b"x")


class Writer:
    """Commits batches of BATCH messages to a store, each batch one transaction."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.batches = 0
        self.next_id = 1

    async def commit(self) -> None:
        bodies = [body(self.batches, i) for i in range(BATCH)]
        await self.store.commit(WriteBatch(inserts=[(self.next_id, "q", None, bodies)],
                                           created=1.0))
        self.next_id += BATCH
        self.batches += 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data", reserve_bytes=4096)
    await s.open(100)
    try:
        yield s
    finally:
        await s.close()


def bodies_in(db: Path) -> list[bytes]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [bytes(r[0]) for r in conn.execute("SELECT body FROM messages ORDER BY id")]
    finally:
        conn.close()


def state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of ``folder`` but the WAL index: its bytes and its mtime."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if not p.name.endswith("-shm")}


def test_restore_files_are_the_ones_the_broker_and_ha_write() -> None:
    from zq.broker import ID_FILE
    from zq.ha.node import NODE_FILE

    assert set(RESTORE_FILES) == {ID_FILE, NODE_FILE}


async def test_the_copy_is_one_snapshot_taken_while_the_store_commits(
        store: SqliteStore, tmp_path: Path) -> None:
    writer = Writer(store)
    for _ in range(40):  # 20,000 messages: about 1,000 pages, 125 steps of 8
        await writer.commit()
    steps, committed = threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        steps.set()
        if len(seen) == 1:  # hold the copy after its first step until a commit landed
            assert committed.wait(10), "the store did not commit"

    task = asyncio.create_task(asyncio.to_thread(
        backup_folder, store.dir, tmp_path / "copy", pages_per_step=8, progress=progress))
    assert await asyncio.to_thread(steps.wait, 10)
    during = 0
    while not task.done():  # commit while the copy is being taken
        await writer.commit()
        committed.set()
        during += 1
    result = await task
    assert during >= 1
    assert len(seen) > 10, "not copied in steps"
    assert seen[-1][0] == seen[-1][1]

    got = bodies_in(result.dest / DB_NAME)
    assert result.messages == len(got)
    # The database as of the snapshot, taken before the first step: the 40 transactions
    # committed before it, whole, and none of those committed while the pages were copied.
    assert got == [body(b, i) for b in range(40) for i in range(BATCH)]
    assert result.size == (result.dest / DB_NAME).stat().st_size


async def test_the_source_is_never_written(store: SqliteStore, tmp_path: Path) -> None:
    writer = Writer(store)
    for _ in range(4):
        await writer.commit()
    (store.dir / "broker-id").write_text("b1\n")
    assert (store.dir / f"{DB_NAME}-wal").exists(), "the store should be in WAL mode"
    before = state(store.dir)
    backup_folder(store.dir, tmp_path / "copy", pages_per_step=2)
    assert state(store.dir) == before
    await writer.commit()  # the broker goes on writing after it
    assert len(bodies_in(store.dir / DB_NAME)) == 5 * BATCH


async def test_a_stopped_brokers_folder_keeps_its_database_bytes(
        store: SqliteStore, tmp_path: Path) -> None:
    await Writer(store).commit()
    await store.close()
    db = store.dir / DB_NAME
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    result = backup_folder(store.dir, tmp_path / "copy")
    assert result.messages == BATCH
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before


async def test_only_the_files_a_restore_needs_are_copied(store: SqliteStore,
                                                         tmp_path: Path) -> None:
    await Writer(store).commit()
    (store.dir / "broker-id").write_text("b1\n")
    (store.dir / "ha-node").write_text("host-abc123\n")
    (store.dir / "replica-in.db").write_bytes(b"half a copy")
    (store.dir / "broker-id.tmp").write_text("b2\n")
    assert (store.dir / LOCK_NAME).exists()
    assert (store.dir / RESERVE_NAME).exists()
    dest = tmp_path / "copy"
    result = backup_folder(store.dir, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(["broker-id", DB_NAME, "ha-node"])
    assert result.files == ("broker-id", "ha-node", DB_NAME)  # the database renamed last
    assert (dest / "broker-id").read_text() == "b1\n"
    assert (dest / "ha-node").read_text() == "host-abc123\n"
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


async def test_a_broker_opens_the_copy(store: SqliteStore, tmp_path: Path) -> None:
    writer = Writer(store)
    for _ in range(3):
        await writer.commit()
    dest = tmp_path / "copy"
    backup_folder(store.dir, dest)
    restored = SqliteStore(dest, reserve_bytes=0)
    rec = await restored.open(10 * BATCH)
    try:
        assert [m.body for m in rec.messages] == [
            body(b, i) for b in range(3) for i in range(BATCH)]
    finally:
        await restored.close()


async def test_an_existing_empty_folder_is_filled(store: SqliteStore, tmp_path: Path) -> None:
    await Writer(store).commit()
    dest = tmp_path / "mnt"
    dest.mkdir()
    result = backup_folder(store.dir, dest)
    assert [p.name for p in dest.iterdir()] == [DB_NAME]
    assert result.messages == BATCH


@pytest.mark.parametrize("where", ["non-empty", "a file", "the source", "inside the source"])
async def test_a_bad_destination_is_refused_and_nothing_is_written(
        store: SqliteStore, tmp_path: Path, where: str) -> None:
    await Writer(store).commit()
    dest = {"non-empty": tmp_path / "full", "a file": tmp_path / "file",
            "the source": store.dir, "inside the source": store.dir / "backup"}[where]
    if where == "non-empty":
        dest.mkdir()
        (dest / "keep").write_text("mine")
    elif where == "a file":
        dest.write_text("mine")
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    before = state(store.dir)
    with pytest.raises(BackupError):
        backup_folder(store.dir, dest)
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing
    assert state(store.dir) == before


def test_what_is_not_a_zq_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no such folder"):
        backup_folder(tmp_path / "none", tmp_path / "copy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="not a zq broker's data folder"):
        backup_folder(tmp_path / "empty", tmp_path / "copy")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_NAME).write_bytes(b"not a database at all" * 500)
    with pytest.raises(BackupError, match="not a zq database"):
        backup_folder(garbage, tmp_path / "copy")
    other = tmp_path / "other"
    other.mkdir()
    conn = sqlite3.connect(other / DB_NAME)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(BackupError, match="no messages, queues table"):
        backup_folder(other, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


async def test_an_unreadable_database_is_refused(store: SqliteStore, tmp_path: Path) -> None:
    """A database file that is not one (garbage where zq.db should be): one clear
    error, nothing left behind (as root, file modes cannot make a file unreadable)."""
    await store.close()
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        (store.dir / name).unlink(missing_ok=True)
    (store.dir / DB_NAME).write_bytes(b"this is not an SQLite database" * 200)
    with pytest.raises(BackupError):
        backup_folder(store.dir, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_copy_database_checks_the_copy(tmp_path: Path) -> None:
    src = tmp_path / "src.db"
    conn = sqlite3.connect(src)
    conn.executescript("CREATE TABLE queues (qid); CREATE TABLE messages (id, body);"
                       "INSERT INTO messages VALUES (1, x'00'), (2, x'01');")
    conn.commit()
    conn.close()
    assert copy_database(src, tmp_path / "out.db", pages_per_step=1) == 2


async def test_the_command_prints_one_line_and_exits_0_or_1(store: SqliteStore,
                                                            tmp_path: Path) -> None:
    await Writer(store).commit()
    runner = CliRunner()
    ok = runner.invoke(main, ["backup", "--data", str(store.dir), str(tmp_path / "copy")])
    assert ok.exit_code == 0, ok.output
    lines = ok.output.splitlines()
    assert len(lines) == 1
    assert f"{BATCH} messages" in lines[0]
    assert " bytes" in lines[0]
    assert lines[0].endswith(" s")
    again = runner.invoke(main, ["backup", "--data", str(store.dir), str(tmp_path / "copy")])
    assert again.exit_code == 1
    assert again.output.strip().splitlines() == [
        f"Error: {tmp_path / 'copy'} is not empty: give a new or an empty folder"]
    env = runner.invoke(main, ["backup", str(tmp_path / "copy2")],
                        env={"ZQ_BROKER_DATA": str(store.dir)})
    assert env.exit_code == 0, env.output
