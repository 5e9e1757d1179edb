"""A replicated broker's database as a whole: where it stands in its primary's stream,
an online copy of it for a standby that must start over, and putting such a copy in
place. See docs/HA.md.

The position ``(term, seq)`` is the ``replica`` table's one row, written in the same
transaction as each batch a primary commits or a standby applies
(``WriteBatch.position``); ``(0, 0)`` for a database that was never replicated.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from zq.errors import StorageError
from zq.persistence.sqlite import DB_NAME, SqliteStore

POSITION_SQL = "SELECT term, seq FROM replica WHERE one = 1"
SUFFIXES = ("-wal", "-shm")


async def position(store: SqliteStore) -> tuple[int, int]:
    """Where an open store stands: the last batch it committed, as ``(term, seq)``."""
    try:
        rows = list(await store.db.execute_fetchall(POSITION_SQL))
    except sqlite3.Error as exc:
        raise StorageError(f"reading the replica position: {exc}") from None
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


async def forget(store: SqliteStore) -> bool:
    """Clear the position of a database a broker serves without replication: its
    content moves on without it, so it must not claim to end where a replica's does
    (started with ``--ha`` again, it counts as never replicated: its standby takes a
    backup). Writes only if there is a position. True if there was one."""
    if await position(store) == (0, 0):
        return False
    try:
        await store.db.execute_fetchall("DELETE FROM replica")
        await store.db.commit()
    except sqlite3.Error as exc:
        raise StorageError(f"clearing the replica position: {exc}") from None
    return True


def backup(data_dir: Path, dest: Path) -> tuple[int, int]:
    """Copy the database in ``data_dir`` to ``dest`` while its broker goes on writing
    (SQLite's online backup, all pages in one step: one read transaction, so the copy
    is the database as of one commit); return that commit's position. Blocking: run
    it in a thread."""
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        src = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
        try:
            dst = sqlite3.connect(dest, isolation_level=None)
            try:
                src.backup(dst)
                rows = dst.execute(POSITION_SQL).fetchall()
                dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise StorageError(f"backing up {data_dir / DB_NAME}: {exc}") from None
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


def intact(copy: Path) -> bool:
    """Whether a received backup is a sound SQLite database (``PRAGMA quick_check``).
    Blocking: run it in a thread."""
    try:
        conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return rows == [("ok",)]


def install(data_dir: Path, copy: Path) -> None:
    """Make ``copy`` (a backup taken by :func:`backup`, fsynced) the database of
    ``data_dir``, whose store must be closed: the old one and its log go."""
    db = data_dir / DB_NAME
    for suffix in SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / (DB_NAME + suffix)).unlink()
    os.replace(copy, db)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
