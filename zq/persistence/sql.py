"""The SQL a :class:`WriteBatch` becomes: one transaction of ``executemany`` calls.

Each kind of change is one statement run over many rows, and runs of consecutive
ids are one row (``id BETWEEN ? AND ?``), so a batch of thousands of acks costs a
handful of statements. The order of :func:`statements` is the order they must run.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from itertools import groupby, repeat
from typing import Any, cast

import msgpack

from zq.persistence.base import ALL_SEQS, Insert, Rewrite, SharedBodies, Update, WriteBatch

_INSERT_INTO = "INSERT INTO messages (id, qid, attempts, ready_at, headers, body, created) VALUES "
_ROW = "(?, ?, 0, 0.0, ?, ?, ?)"
INSERT = _INSERT_INTO + _ROW
# Messages go in as rows of 64, 16, 4 and 1 per statement: sqlite3 lets go of the GIL
# for every step of a statement and takes it back after, so one row per step made
# the store's thread queue for the GIL once per message behind the broker's loop
# (measured: 2.8 us per row alone, 1.5 with 64 per statement; with a busy loop
# thread, orders of magnitude apart).
INSERT_SIZES = (64, 16, 4, 1)
INSERTS = {n: _INSERT_INTO + ", ".join([_ROW] * n) for n in INSERT_SIZES}
# A stream's entries (zq.core.streams): the same values, in a table of their own.
_ENTRY_INTO = "INSERT INTO entries (id, sid, headers, body, created) VALUES "
ENTRY_INSERTS = {n: _ENTRY_INTO + ", ".join(["(?, ?, ?, ?, ?)"] * n) for n in INSERT_SIZES}
ENTRY_PURGE = "DELETE FROM entries WHERE sid = ? AND id > ? AND id <= ?"
STREAM_KEY = "\x00stream\x00"  # the names a stream's entries are stored under
# Entries take ids from the messages' sequence but are not rows of ``messages``: the
# highest id they use goes into its AUTOINCREMENT counter, in the same transaction, so
# that no id is handed out twice after a restart (even once retention removed them).
ID_FLOOR_NEW = ("INSERT INTO sqlite_sequence (name, seq) SELECT 'messages', ? WHERE NOT "
                "EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages')")
ID_FLOOR = "UPDATE sqlite_sequence SET seq = ? WHERE name = 'messages' AND seq < ?"
PLACE = "UPDATE messages SET ready_at = ?, opts = ? WHERE id BETWEEN ? AND ?"
REWRITE = ("UPDATE messages SET qid = ?, attempts = ?, ready_at = ?, headers = ?, opts = ?, "
           "state = 0 WHERE id = ?")
SETTINGS = ("INSERT INTO queues (qid, name, settings) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET settings = excluded.settings")
PURGE = "DELETE FROM messages WHERE qid = ? AND id > ? AND id <= ?"
DEDUP = "INSERT OR REPLACE INTO dedup (qid, key, id, expires_at) VALUES (?, ?, ?, ?)"
RESULT = ("INSERT OR REPLACE INTO results (id, qid, state, data, expires_at) "
          "VALUES (?, ?, ?, ?, ?)")
SCHEDULE = "INSERT OR REPLACE INTO schedules (name, spec) VALUES (?, ?)"
UNSCHEDULE = "DELETE FROM schedules WHERE name = ?"
UPDATE = ("UPDATE messages SET attempts = ?, ready_at = ?, state = ? "
          "WHERE id BETWEEN ? AND ?")
DELETE = "DELETE FROM messages WHERE id BETWEEN ? AND ?"
FORGET_DEDUPS = "DELETE FROM dedup WHERE qid = ?"
FORGET_SETTINGS = "UPDATE queues SET settings = NULL WHERE qid = ?"
NEW_QUEUE = "INSERT INTO queues (qid, name) VALUES (?, ?)"
PRODUCED = "INSERT OR REPLACE INTO producers (pid, last, entries, at) VALUES (?, ?, ?, ?)"
TRIM = "DELETE FROM producers WHERE pid = ? AND last < ?"
FORGET_PRODUCER = "DELETE FROM producers WHERE pid = ?"
POSITION = "INSERT OR REPLACE INTO replica (one, term, seq) VALUES (1, ?, ?)"
PAGE = ("SELECT m.id, m.attempts, m.ready_at, m.headers, "
        "CASE WHEN m.body_ref IS NULL THEN m.body ELSE b.data END, m.created, m.opts, "
        "m.state, m.body_ref FROM messages m LEFT JOIN bodies b ON b.id = m.body_ref "
        "WHERE m.qid = ? AND m.id > ? ORDER BY m.id LIMIT ?")
# A topic's copies (zq.core.topics) share their bodies: one row each in ``bodies``.
SHARED_BODY = "INSERT INTO bodies (id, data, refs) VALUES (?, ?, ?)"
_SHARED_INTO = ("INSERT INTO messages (id, qid, attempts, ready_at, headers, body, created, "
                "body_ref) VALUES ")
_SHARED = "(?, ?, 0, 0.0, ?, X'', ?, ?)"
SHARED_ROWS = {n: _SHARED_INTO + ", ".join([_SHARED] * n) for n in INSERT_SIZES}

_packb = msgpack.Packer(use_bin_type=True).pack

Statement = tuple[str, Iterable[Any]]


def id_runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """``[lo, hi]`` runs of consecutive ids, in the order given: one statement per run."""
    runs: list[tuple[int, int]] = []
    lo = hi = -2
    for i in ids:
        if i == hi + 1:
            hi = i
        else:
            if hi >= 0:
                runs.append((lo, hi))
            lo = hi = i
    if hi >= 0:
        runs.append((lo, hi))
    return runs


def last_settings(batch: WriteBatch) -> list[tuple[str, bytes | None]]:
    """The batch's last word on each name's settings (a delete, then a new one of the
    same name, in one batch: the new one stays; the other way round, none)."""
    return list({name: blob for name, blob in batch.settings}.items())


def statements(batch: WriteBatch, qids: dict[str, int]) -> Iterator[Statement]:
    """The batch as (SQL, rows) pairs in the order they must run: one transaction."""
    yield from _message_statements(batch, qids)
    yield from _queue_statements(batch, qids)
    if batch.schedules:
        yield SCHEDULE, [(name, spec) for name, spec in batch.schedules if spec is not None]
        gone_s = [(name,) for name, spec in batch.schedules if spec is None]
        if gone_s:
            yield UNSCHEDULE, gone_s
    gone = [(qids[name],) for name, blob in last_settings(batch) if blob is None]
    if gone:  # deleted queues: their settings and dedup ids go, their name and qid stay
        yield FORGET_DEDUPS, gone
        yield FORGET_SETTINGS, gone
    if batch.position is not None:
        yield POSITION, [batch.position]


def _message_statements(batch: WriteBatch, qids: dict[str, int]) -> Iterator[Statement]:
    inserts = batch.inserts
    if batch.shared:  # a topic's copies: their bodies once, their rows pointing there
        yield SHARED_BODY, [(ref + i, body, refs) for ref, bodies, refs in batch.shared
                            for i, body in enumerate(bodies)]
        rows = shared_rows(inserts, qids, batch.created)
        at = 0
        for size in INSERT_SIZES:  # as many rows per statement as for plain messages
            count = (len(rows) - at) // size
            if count:
                yield SHARED_ROWS[size], [
                    [v for row in rows[i:i + size] for v in row]
                    for i in range(at, at + count * size, size)]
                at += count * size
        inserts = [e for e in inserts if not isinstance(e[3], SharedBodies)]
    if inserts and any(e[1][:1] == "\x00" for e in inserts):  # a stream's entries
        entries = [e for e in inserts if e[1].startswith(STREAM_KEY)]
        inserts = [e for e in inserts if not e[1].startswith(STREAM_KEY)]
        yield from insert_statements(entries, qids, batch.created, ENTRY_INSERTS)
        high = max(first + len(bodies) - 1 for first, _, _, bodies in entries)
        yield ID_FLOOR_NEW, [(high,)]
        yield ID_FLOOR, [(high, high)]
    if inserts:
        yield from insert_statements(inserts, qids, batch.created)
    if batch.placed:
        yield PLACE, [(ready_at, opts, lo, hi) for lo, hi, ready_at, opts in batch.placed]
    # Updates run in the order staged: each run of attempt updates or of whole rewrites
    # is one statement. (Each run's rows are built before groupby moves on.)
    for kind, run in groupby(batch.updates, type):
        if kind is Rewrite:
            yield REWRITE, rewrite_rows(cast("Iterable[Rewrite]", run), qids)
        else:
            yield UPDATE, update_runs(cast("Iterable[Update]", run))


def _queue_statements(batch: WriteBatch, qids: dict[str, int]) -> Iterator[Statement]:
    if batch.settings:
        yield SETTINGS, [(qids[name], name, blob) for name, blob in last_settings(batch)
                         if blob is not None]
    if batch.purges:
        yield PURGE, [(qids[name], after, upto) for name, after, upto in batch.purges
                      if not name.startswith(STREAM_KEY)]
        yield ENTRY_PURGE, [(qids[name], after, upto) for name, after, upto in batch.purges
                            if name.startswith(STREAM_KEY)]
    if batch.deletes:
        yield DELETE, id_runs(batch.deletes)
    if batch.dedups:
        yield DEDUP, [(qids[q], key, mid, until) for q, key, mid, until in batch.dedups]
    if batch.results:
        yield RESULT, [(mid, qids[q], state, data, until)
                       for mid, q, state, data, until in batch.results]
    if batch.produced:
        yield PRODUCED, produced_rows(batch)
    if batch.trims:
        yield TRIM, [(pid, below) for pid, below in batch.trims if below < ALL_SEQS]
        yield FORGET_PRODUCER, [(pid,) for pid, below in batch.trims if below >= ALL_SEQS]


def produced_rows(batch: WriteBatch) -> list[tuple[bytes, int, bytes, float]]:
    """One row per producer: the seqs of its frames in this batch, packed together
    (a row per frame would double the rows of one-message publishes)."""
    by_pid: dict[bytes, list[tuple[int, int, int]]] = {}
    for pid, seq, first, count in batch.produced:
        entries = by_pid.get(pid)
        if entries is None:
            entries = by_pid[pid] = []
        entries.append((seq, first, count))
    return [(pid, max(e[0] for e in entries), _packb(entries), batch.created)
            for pid, entries in by_pid.items()]


def rewrite_rows(rewrites: Iterable[Rewrite], qids: dict[str, int]
                 ) -> list[tuple[int, int, float, bytes | None, bytes | None, int]]:
    """Rows for ``REWRITE``, one per message."""
    return [(qids[r.queue], r.attempts, r.ready_at,
             None if r.headers is None else _packb(r.headers), r.opts, r.id) for r in rewrites]


def update_runs(updates: Iterable[Update]) -> list[tuple[int, float, int, int, int]]:
    """``(attempts, ready_at, state, lo, hi)`` rows for ``UPDATE``, in the order staged."""
    rows: list[tuple[int, float, int, int, int]] = []
    for ids, attempts, ready_at, state in updates:
        lo = hi = -2
        cur = -1
        for i, a in zip(ids, attempts, strict=True):
            if i == hi + 1 and a == cur:
                hi = i
            else:
                if hi >= 0:
                    rows.append((cur, ready_at, state, lo, hi))
                lo = hi = i
                cur = a
        if hi >= 0:
            rows.append((cur, ready_at, state, lo, hi))
    return rows


def insert_rows(inserts: Iterable[Insert], qids: dict[str, int], created: float = 0.0
                ) -> Iterator[tuple[int, int, bytes | None, bytes, float]]:
    """Rows for ``INSERT``, one per message, expanded from per-frame entries."""
    for first, queue, headers, bodies in inserts:
        qid = qids[queue]
        ids = range(first, first + len(bodies))
        if headers is None:
            yield from zip(ids, repeat(qid), repeat(None), bodies, repeat(created))
        else:
            packed = [None if h is None else _packb(h) for h in headers]
            yield from zip(ids, repeat(qid), packed, bodies, repeat(created))


def shared_rows(inserts: Iterable[Insert], qids: dict[str, int], created: float
                ) -> list[tuple[int, int, bytes | None, float, int]]:
    """Rows for ``SHARED_ROW``: the copies of a topic's publish, bodies by reference."""
    rows = []
    for first, queue, headers, bodies in inserts:
        if isinstance(bodies, SharedBodies):
            qid = qids[queue]
            for i in range(len(bodies)):
                h = headers[i] if headers else None
                rows.append((first + i, qid, None if h is None else _packb(h), created,
                             bodies.ref + i))
    return rows


def insert_statements(inserts: Iterable[Insert], qids: dict[str, int], created: float,
                      sql: dict[int, str] = INSERTS) -> Iterator[Statement]:
    """INSERT statements for the new messages, as many rows per statement as
    INSERT_SIZES allows (each statement's parameters flattened, row after row)."""
    flat: list[Any] = []
    for first, queue, headers, bodies in inserts:
        n = len(bodies)
        part: list[Any] = [created] * (5 * n)
        part[0::5] = range(first, first + n)
        part[1::5] = [qids[queue]] * n
        part[2::5] = ([None] * n if headers is None
                      else [None if h is None else _packb(h) for h in headers])
        part[3::5] = bodies
        flat += part
    rows, at = len(flat) // 5, 0
    for size in INSERT_SIZES:
        count = (rows - at // 5) // size
        if count:
            width = 5 * size
            yield sql[size], [flat[i:i + width] for i in range(at, at + count * width, width)]
            at += count * width


def write(conn: sqlite3.Connection, new_queues: list[tuple[int, str]], batch: WriteBatch,
          qids: dict[str, int]) -> None:
    """One transaction, run on aiosqlite's thread (Python's sqlite3 begins it implicitly)."""
    write_all(conn, new_queues, [batch], qids)


def write_all(conn: sqlite3.Connection, new_queues: list[tuple[int, str]],
              batches: list[WriteBatch], qids: dict[str, int]) -> None:
    """Several batches, in order, as one transaction (a standby applying what its
    primary shipped: one fsync for all that arrived together)."""
    try:
        if new_queues:
            conn.executemany(NEW_QUEUE, new_queues)
        for batch in batches:
            for sql, rows in statements(batch, qids):
                conn.executemany(sql, rows)
        conn.commit()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()
        raise
