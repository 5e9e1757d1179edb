"""The durable store: one SQLite database in WAL mode, written through aiosqlite.

One connection, one writer: the broker's loop. Each :meth:`SqliteStore.commit`
is one transaction (group commit) made of at most one ``executemany`` per kind
of change and a COMMIT, run on aiosqlite's thread in one hop however many
messages it carries. Python's sqlite3 opens the transaction implicitly with the
first statement, so there is no separate BEGIN.

A small batch when nothing else uses the connection (a quiet broker: a few
messages per commit) is committed on the loop's own thread instead
(:meth:`SqliteStore.commit_now`): the fsync then blocks the loop for about as
long as the thread hop and the GIL hand-overs it saves, and the confirms and
deliveries it releases go out in the same loop pass. A disk whose commits are
slow turns this off, so a slow fsync never stalls the loop.

The tables and their upgrades are in :mod:`zq.persistence.schema`, the SQL a
batch becomes in :mod:`zq.persistence.sql`, checkpoints and the full-disk cycle in
:mod:`zq.persistence.upkeep`, the disk reserve in :mod:`zq.persistence.reserve`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite
import msgpack

from zq.errors import StorageError, StorageFull
from zq.persistence import entries as stream_entries
from zq.persistence.base import Recovered, Rewrite, StoredMessage, WriteBatch
from zq.persistence.reserve import DiskReserve
from zq.persistence.schema import SCHEMA_VERSION, migrate
from zq.persistence.sql import (
    NEW_QUEUE,
    PAGE,
    id_runs,
    insert_rows,
    statements,
    update_runs,
    write,
    write_all,
)
from zq.persistence.upkeep import DiskUpkeep
from zq.schedules import from_map as schedule_from_map

__all__ = ["DB_NAME", "LOCK_NAME", "SCHEMA_VERSION", "SqliteStore", "id_runs", "insert_rows",
           "statements", "storage_error", "update_runs"]

log = logging.getLogger("zq.store")

DB_NAME = "zq.db"
LOCK_NAME = "zq.lock"
NOW_ROWS = 64  # rows a batch may change to be committed on the loop's thread
# Bodies several messages share (a topic's copies), as read: each is one object in memory
# however many of its messages are paged in, in any queue (cleared past this many).
SHARED_KEPT = 100_000
NOW_SLOW = 0.002  # seconds: commits slower than this on average go to the thread
NOW_PAUSE = 10.0  # seconds before a disk found slow is tried again


def storage_error(exc: sqlite3.Error, doing: str) -> StorageError | StorageFull:
    """The zq error for an SQLite failure: STORAGE_FULL for a full disk or database."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return StorageFull(f"{doing}: the disk or the database is full ({exc})")
    return StorageError(f"{doing}: {exc} ({name or type(exc).__name__})")


class SqliteStore(DiskUpkeep):
    """Messages in ``<data>/zq.db``; ``<data>/zq.lock`` keeps a second broker out.
    Checkpoints and the full-disk cycle are in :class:`DiskUpkeep`."""

    durable = True
    one_hop = hasattr(aiosqlite.Connection, "_execute")

    def __init__(self, data_dir: str | Path, *, fsync: str = "full", max_bytes: int = 0,
                 checkpoint_interval: float = 30.0, wal_limit: int = 64 * 1024 * 1024,
                 reserve_bytes: int = 16 * 1024 * 1024) -> None:
        if fsync not in ("full", "normal"):
            raise ValueError(f"fsync must be 'full' or 'normal', got {fsync!r}")
        self.dir = Path(data_dir)
        self.path = self.dir / DB_NAME
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.checkpoint_interval = checkpoint_interval
        self.wal_limit = wal_limit
        self.reserve = DiskReserve(self.dir, reserve_bytes)
        # The disk is full: publishes are refused (the broker does not even try them)
        # while acks and settlements commit in the space the reserve gave back.
        self.full = False
        self._wal_room = 4 << 20  # set at open from the filesystem's size
        self._quiet_until = 0.0  # no checkpoint warning before this (monotonic)
        self._db: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None
        self._qids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._shared: dict[int, bytes] = {}  # body id -> the body read (SHARED_KEPT)
        self._next_qid = 1
        self._last_checkpoint = time.monotonic()
        self._dirty_since_checkpoint = False
        self.commits = 0
        self.commits_now = 0  # of them, on the loop's thread
        self.messages_written = 0
        self.pages_read = 0
        self._now_cost = 0.0  # moving average of commit_now's duration (seconds)
        self._now_off_until = 0.0  # monotonic: slow commits, no commit_now before this

    # ------------------------------------------------------------- lifecycle

    async def open(self, window: int) -> Recovered:
        """Open or create the database; load up to ``window`` messages per queue."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data folder {self.dir}: {exc}") from None
        self._lock()
        # Room to open and recover even on a full disk (see zq.persistence.reserve).
        self.reserve.discard()
        try:
            # check_same_thread=False: commit_now uses the connection from the loop's
            # thread, only while no call on aiosqlite's thread is under way.
            self._db = await aiosqlite.connect(self.path, isolation_level="DEFERRED",
                                               check_same_thread=False)
            rec = await self._open(window)
            self._hold_reserve()
            return rec
        except sqlite3.Error as exc:
            await self.close()
            raise storage_error(exc, f"opening {self.path}") from None
        except BaseException:
            await self.close()
            raise

    async def _open(self, window: int) -> Recovered:
        await self._configure()
        await migrate(self.db, self.path)
        if self.max_bytes:
            page_size = int(await self._pragma("page_size"))
            pages = max(1, self.max_bytes // page_size)
            await self.db.execute_fetchall(f"PRAGMA max_page_count = {pages}")
        return await self._recover(window)

    async def _configure(self) -> None:
        """The connection's settings: WAL, the fsync level, the WAL's size."""
        db = self.db
        if await self._pragma("user_version") == 0 and not await db.execute_fetchall(
                "SELECT 1 FROM sqlite_master"):
            # A new database, before its first page is written: pages that acks free can
            # then be given back to the filesystem (incremental_vacuum) on a full disk.
            await db.execute_fetchall("PRAGMA auto_vacuum = INCREMENTAL")
        mode = await self._pragma("journal_mode = WAL")
        if str(mode).lower() != "wal":
            raise StorageError(f"{self.path}: the database is not in WAL mode (journal_mode "
                               f"is {mode!r}); zq needs WAL for crash safety")
        await db.execute_fetchall(f"PRAGMA synchronous = {self.fsync.upper()}")
        sync = await self._pragma("synchronous")
        if sync != (2 if self.fsync == "full" else 1):
            raise StorageError(f"{self.path}: synchronous is {sync}, asked for {self.fsync}")
        await self._size_wal()

    async def _recover(self, window: int) -> Recovered:
        """What the broker starts from: queues, up to ``window`` messages per queue
        (the rest is its backlog, paged in later), dedup ids, results and schedules."""
        db = self.db
        settings = await self._load_queues()
        now = time.time()
        dedups = [(self._names[qid], key, mid, until) for qid, key, mid, until in
                  await db.execute_fetchall("SELECT qid, key, id, expires_at FROM dedup "
                                            "WHERE expires_at > ?", (now,))]
        seq = list(await db.execute_fetchall(
            "SELECT seq FROM sqlite_sequence WHERE name = 'messages'"))
        streams = await stream_entries.totals(db, self._names)
        # (entries raise the sequence as they are stored: this is for a store that did not)
        next_id = max([int(seq[0][0]) if seq else 0, *(t[2] for t in streams.values())]) + 1
        messages, backlog = await self._load_messages(window)
        now = time.time()
        results = [(mid, self._names[qid], state, msgpack.unpackb(data), until)
                   for mid, qid, state, data, until in await db.execute_fetchall(
                       "SELECT id, qid, state, data, expires_at FROM results "
                       "WHERE expires_at > ?", (now,))]
        schedules = [schedule_from_map(msgpack.unpackb(spec)) for (spec,) in
                     await db.execute_fetchall("SELECT spec FROM schedules ORDER BY name")]
        return Recovered(messages=messages, next_id=next_id, backlog=backlog,
                         settings=settings, dedups=dedups, results=results,
                         schedules=schedules, producers=await self._load_producers(),
                         streams=streams)

    async def _load_producers(self) -> list[tuple[bytes, float, list[tuple[int, int, int]]]]:
        """Each producer's stored seqs, oldest first, and when it last published."""
        out: dict[bytes, tuple[float, list[tuple[int, int, int]]]] = {}
        for pid, entries, at in await self.db.execute_fetchall(
                "SELECT pid, entries, at FROM producers ORDER BY pid, last"):
            seen, kept = out.get(pid, (0.0, []))
            kept.extend((int(s), int(f), int(n)) for s, f, n in msgpack.unpackb(entries))
            out[pid] = (max(seen, at), kept)
        return [(pid, seen, kept) for pid, (seen, kept) in out.items()]

    async def _load_queues(self) -> dict[str, dict[str, Any]]:
        """Number every stored queue; the settings of those that have any."""
        settings: dict[str, dict[str, Any]] = {}
        for qid, name, blob in await self.db.execute_fetchall(
                "SELECT qid, name, settings FROM queues"):
            self._qids[name] = qid
            self._names[qid] = name
            if blob is not None:
                settings[name] = msgpack.unpackb(blob)
        self._next_qid = max(self._names, default=0) + 1
        return settings

    async def _load_messages(self, window: int) -> tuple[list[StoredMessage], dict[str, int]]:
        """The first ``window`` messages of each queue, and how many more each has."""
        counts = list(await self.db.execute_fetchall(
            "SELECT qid, count(*) FROM messages GROUP BY qid"))
        messages: list[StoredMessage] = []
        backlog: dict[str, int] = {}
        for qid, count in counts:
            page = await self._page(qid, 0, window)
            messages.extend(page)
            if count > len(page):
                backlog[self._names[qid]] = count - len(page)
        log.info("opened %s: %d message(s) in %d queue(s), %d loaded", self.path,
                 sum(c for _, c in counts), len(counts), len(messages))
        return messages, backlog

    def stats(self) -> dict[str, Any]:
        return {"kind": "sqlite", "fsync": self.fsync, "commits": self.commits,
                "commits_now": self.commits_now,
                "messages_written": self.messages_written, "pages_read": self.pages_read,
                "full": self.full, "reserve_bytes": self.reserve.size if self.reserve.held
                else 0}

    async def close(self) -> None:
        if self._db is not None:
            log.info("closing %s: %s", self.path, self.stats())
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error, ValueError):
                await db.close()
        if self._lock_fd is not None:
            self.reserve.discard()  # a stopped broker holds no disk back
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ----------------------------------------------------------------- writes

    async def commit(self, batch: WriteBatch) -> None:
        """One transaction for the whole batch; on failure nothing of it is stored."""
        await self.apply([batch])

    async def apply(self, batches: list[WriteBatch]) -> None:
        """Several batches, in order, as one transaction (a standby applying what its
        primary shipped); on failure nothing of them is stored."""
        db = self.db
        new_queues: list[tuple[int, str]] = []
        for batch in batches:
            new_queues += self._assign_qids(batch)
        try:
            if self.one_hop:
                # The whole transaction in one call on aiosqlite's thread: one thread
                # hop instead of one per statement. aiosqlite has no public API for
                # it, so this uses its ``_execute``; ``one_hop`` is False (and the
                # statements go one call each) if that ever disappears.
                await db._execute(  # type: ignore[no-untyped-call]
                    write_all, db._conn, new_queues, batches, self._qids)
            else:
                await self._commit_per_statement(db, new_queues, batches)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await db.rollback()
            self._unassign(new_queues)
            err = storage_error(exc, "commit")
            if isinstance(err, StorageFull):
                await self._disk_full()
            raise err from None
        for batch in batches:
            self._stored(batch)

    def apply_now(self, batches: list[WriteBatch]) -> None:
        """:meth:`apply` on the calling thread (a standby, whose loop has nothing else to
        do meanwhile: no thread hop per commit). The caller must know that no other
        call on the connection is under way. Raises StorageError or StorageFull."""
        if not self.one_hop or self._db is None:
            raise StorageError("apply_now needs an open store and aiosqlite's connection")
        new_queues: list[tuple[int, str]] = []
        for batch in batches:
            new_queues += self._assign_qids(batch)
        try:
            write_all(self._db._conn, new_queues, batches, self._qids)
        except sqlite3.Error as exc:
            self._unassign(new_queues)
            raise storage_error(exc, "commit") from None
        for batch in batches:
            self._stored(batch)

    def commit_now(self, batch: WriteBatch) -> bool:
        """Commit ``batch`` on the calling thread if it is small and commits are fast;
        the caller must know that no other call on the connection is under way.

        Returns False when it did not apply or the commit failed (rolled back, nothing
        of it stored): the caller then awaits :meth:`commit`, which tries again and
        turns a failure into STORAGE_FULL or STORAGE_ERROR.
        """
        if not self.one_hop or self.full or self._db is None or not _small(batch):
            return False
        start = time.monotonic()
        if start < self._now_off_until:
            return False
        new_queues = self._assign_qids(batch)
        try:
            write(self._db._conn, new_queues, batch, self._qids)
        except sqlite3.Error:
            self._unassign(new_queues)
            return False
        took = time.monotonic() - start
        self._now_cost += (took - self._now_cost) / 8
        if self._now_cost > NOW_SLOW:
            self._now_off_until = start + NOW_PAUSE
            self._now_cost = 0.0
            log.info("commits take %.1f ms: committing on the store's thread for %.0f s",
                     took * 1000, NOW_PAUSE)
        self.commits_now += 1
        self._stored(batch)
        return True

    def _stored(self, batch: WriteBatch) -> None:
        self.commits += 1
        self.messages_written += sum(len(e[3]) for e in batch.inserts)
        self._dirty_since_checkpoint = True

    def _unassign(self, new_queues: list[tuple[int, str]]) -> None:
        """Forget the queue numbers of a batch that was not stored."""
        for qid, name in new_queues:
            del self._qids[name]
            del self._names[qid]
        self._next_qid -= len(new_queues)

    async def _commit_per_statement(self, db: aiosqlite.Connection,
                                    new_queues: list[tuple[int, str]],
                                    batches: list[WriteBatch]) -> None:
        if new_queues:
            await db.executemany(NEW_QUEUE, new_queues)
        for batch in batches:
            for sql, rows in statements(batch, self._qids):
                await db.executemany(sql, rows)
        await db.commit()

    def _assign_qids(self, batch: WriteBatch) -> list[tuple[int, str]]:
        """Number the queues this batch creates (rows for the ``queues`` table)."""
        new: list[tuple[int, str]] = []
        qids = self._qids
        names = [e[1] for e in batch.inserts]
        names += [u.queue for u in batch.updates if type(u) is Rewrite]
        names += [name for name, _ in batch.settings] + [e[0] for e in batch.purges]
        names += [e[0] for e in batch.dedups] + [e[1] for e in batch.results]
        for q in names:
            if q not in qids:
                qids[q] = self._next_qid
                self._names[self._next_qid] = q
                new.append((self._next_qid, q))
                self._next_qid += 1
        return new

    # ------------------------------------------------------------------ reads

    async def load(self, queue: str, after_id: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` stored messages of ``queue`` with ids above ``after_id`` (a
        group's key: its stream's entries)."""
        if queue.startswith(stream_entries.GROUP_PREFIX):
            key = stream_entries.stream_of(queue)
            sid = self._qids.get(key)
            if sid is None:
                return []
            try:
                self.pages_read += 1
                name = key[len(stream_entries.STREAM_PREFIX):]
                return await stream_entries.page(self.db, sid, name, after_id, limit)
            except sqlite3.Error as exc:
                raise storage_error(exc, "reading a stream") from None
        qid = self._qids.get(queue)
        if qid is None:
            return []
        try:
            return await self._page(qid, after_id, limit)
        except sqlite3.Error as exc:
            raise storage_error(exc, f"reading queue {queue!r}") from None

    async def seek(self, group: str, start: tuple[Any, ...]) -> tuple[int, int]:
        """Where a group of a stream starts: (first entry at or after ``start``, 0 if
        none; entries from there on). See :func:`zq.persistence.stream_entries.seek`."""
        sid = self._qids.get(stream_entries.stream_of(group))
        if sid is None:
            return 0, 0
        try:
            return await stream_entries.seek(self.db, sid, start)
        except sqlite3.Error as exc:
            raise storage_error(exc, "looking up a stream's offset") from None

    async def trim_point(self, key: str, floor: int, cutoff: float, excess: int, most: int
                         ) -> stream_entries.Trim:
        """How far a stream's retention goes (see zq.persistence.entries.trim_point)."""
        sid = self._qids.get(key)
        if sid is None:
            return 0, 0, 0, 0, 0.0
        try:
            return await stream_entries.trim_point(self.db, sid, floor, cutoff, excess, most)
        except sqlite3.Error as exc:
            raise storage_error(exc, "reading a stream for its retention") from None

    async def _page(self, qid: int, after_id: int, limit: int) -> list[StoredMessage]:
        name = self._names[qid]
        unpack = msgpack.unpackb
        rows = await self.db.execute_fetchall(PAGE, (qid, after_id, limit))
        self.pages_read += 1
        shared = self._shared
        if len(shared) > SHARED_KEPT:
            shared.clear()
        return [StoredMessage(mid, name, body if ref is None else shared.setdefault(ref, body),
                              None if h is None else unpack(h), attempts, ready_at, created,
                              None if o is None else unpack(o), state)
                for mid, attempts, ready_at, h, body, created, o, state, ref in rows]

    # ---------------------------------------------------------------- helpers

    def _lock(self) -> None:
        path = self.dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(f"{self.dir} is in use by another zq broker "
                               f"(could not lock {path})") from None
        self._lock_fd = fd


def _small(batch: WriteBatch) -> bool:
    """Whether ``batch`` changes at most NOW_ROWS rows (a purge may change any number)."""
    if batch.purges or len(batch.inserts) + len(batch.updates) > NOW_ROWS:
        return False
    rows = len(batch.deletes) + len(batch.dedups) + len(batch.results)
    for e in batch.inserts:
        rows += len(e[3])
    for u in batch.updates:
        rows += 1 if isinstance(u, Rewrite) else len(u[0])
    return rows <= NOW_ROWS
