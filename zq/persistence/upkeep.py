"""The SQLite store's upkeep: the WAL's bounds, checkpoints, and the disk reserve that
lets acks commit on a full disk (see :mod:`zq.persistence.reserve`).

:class:`DiskUpkeep` is the base of :class:`zq.persistence.sqlite.SqliteStore`, which
sets the fields declared here; it holds what runs beside the commits, not in them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite

from zq.errors import StorageError
from zq.persistence.reserve import DiskReserve, disk_free
from zq.persistence.schema import pragma

BUSY_MS = 5000  # the connection's busy timeout (sqlite3's default, 5 s)
log = logging.getLogger("zq.store")


class DiskUpkeep:
    """Checkpoints on a timer, the WAL sized by the filesystem, and the full-disk cycle:
    give the reserve back, refuse publishes, free pages, take the reserve again."""

    dir: Path
    reserve: DiskReserve
    full: bool  # no room: publishes are refused without trying
    checkpoint_interval: float
    wal_limit: int
    _db: aiosqlite.Connection | None
    _wal_room: int
    _quiet_until: float
    _last_checkpoint: float
    _dirty_since_checkpoint: bool

    async def _size_wal(self) -> None:
        """Bound the WAL by the filesystem too: on a small disk (an 8 MiB tmpfs, an edge
        box's flash) a 4 MB log between checkpoints would be half of it."""
        total, _ = disk_free(self.dir)
        page = int(await self._pragma("page_size") or 4096)
        pages = max(16, min(1000, total // 64 // page))
        limit = min(int(self.wal_limit), max(page * 64, total // 16))
        self._wal_room = pages * page  # the WAL's size between two checkpoints
        await self.db.execute_fetchall(f"PRAGMA journal_size_limit = {limit}")
        await self.db.execute_fetchall(f"PRAGMA wal_autocheckpoint = {pages}")

    def _hold_reserve(self) -> None:
        # At least twice the log between checkpoints: given back on a full disk, it must
        # let the checkpoint that was stuck copy the log's new pages into the database.
        self.reserve.fit(at_least=2 * self._wal_room)
        if not self.reserve.take():
            self.full = True
            log.warning("%s: no room for the %d-byte disk reserve; publishes are refused "
                        "until acks free space", self.dir, self.reserve.size)

    async def _disk_full(self) -> None:
        """A commit found no room. If the filesystem is the limit (not ``max_bytes``),
        give the reserve back and move the log into the database, so that what frees
        space (acks) can commit; publishes are refused until :meth:`_recover_room`."""
        if not self.reserve.pressure():
            return  # the database's own cap: inserts fail, deletes still work
        self.reserve.release()
        self.full = True
        await self._checkpoint()

    async def _checkpoint(self) -> bool:
        try:
            await self.db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            now = time.monotonic()
            if now >= self._quiet_until:  # on a full disk this fails again and again
                self._quiet_until = now + 10.0
                log.warning("checkpoint failed: %s", exc)
            return False
        return True

    async def _recover_room(self) -> None:
        """On a full disk: give the pages acks freed back to the filesystem (a database
        made by this zq has ``auto_vacuum = INCREMENTAL``), then accept publishes again
        once the reserve is held again and the WAL has room to grow to its next
        checkpoint: without that room the next commit would fail at once."""
        try:
            if await self._pragma("auto_vacuum") == 2:
                await self._give_back_pages()
        except sqlite3.Error as exc:
            log.warning("giving free pages back failed: %s", exc)
        if not await self._checkpoint() or not self.reserve.take():
            return
        _, free = disk_free(self.dir)
        if free >= self._wal_room:
            self.full = False
            log.warning("%s: room again (%d bytes free besides the reserve); publishes are "
                        "accepted", self.dir, free)

    async def _give_back_pages(self) -> None:
        """Shrink the database file by its free pages, a few at a time: moving pages
        goes through the WAL, so each step may use a third of the free disk, and a
        checkpoint after it gives that room back."""
        page = int(await self._pragma("page_size") or 4096)
        for _ in range(64):  # bounded: the rest waits for the next second
            free_pages = int(await self._pragma("freelist_count") or 0)
            if not free_pages:
                return
            _, free = disk_free(self.dir)
            n = max(1, min(free_pages, free // page // 3))
            # executescript steps the pragma to its end (each step frees one page).
            await self.db.executescript(f"PRAGMA incremental_vacuum({n});")
            await self.db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    async def maintain(self) -> None:
        """Checkpoint the WAL into the database on a timer, so it stays small when idle;
        on a full disk, look for room to accept publishes again.

        SQLite also checkpoints by itself every ``wal_autocheckpoint`` WAL pages, and
        ``journal_size_limit`` truncates the file after each checkpoint.
        """
        if self.full:
            await self._recover_room()
            return
        if not self._dirty_since_checkpoint:
            return
        now = time.monotonic()
        if now - self._last_checkpoint < self.checkpoint_interval:
            return
        self._last_checkpoint = now
        self._dirty_since_checkpoint = False
        # Each statement is run to completion (execute_fetchall): a cursor left with a
        # row unread keeps its statement active, and the next COMMIT fails with
        # "SQL statements in progress".
        try:
            await self.db.execute_fetchall("DELETE FROM dedup WHERE expires_at < ?",
                                           (time.time(),))
            await self.db.execute_fetchall("DELETE FROM results WHERE expires_at < ?",
                                           (time.time(),))
            await self.db.commit()
            # PASSIVE first: it never waits. A reader holding an old snapshot (zq backup
            # copying the database) keeps it from reaching the log's end; TRUNCATE would
            # then wait for that reader, up to the busy timeout, with commits queued
            # behind it. Only a log copied whole is truncated.
            rows = await self.db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            busy, frames, copied = next(iter(rows), (1, 0, -1))
            if not busy and frames == copied:  # and even then, it does not wait
                await self.db.execute_fetchall("PRAGMA busy_timeout = 0")
                try:
                    await self.db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    await self.db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_MS}")
        except sqlite3.Error as exc:
            log.warning("checkpoint failed: %s", exc)

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StorageError("the store is not open")
        return self._db

    async def _pragma(self, name: str) -> Any:
        return await pragma(self.db, name)
