"""The SQLite store's tables, and the upgrades from older versions of them.

Layout (``PRAGMA user_version`` 7; versions 1 to 6 are upgraded in place)::

    queues(qid INTEGER PRIMARY KEY, name TEXT UNIQUE, settings BLOB)
    messages(id INTEGER PRIMARY KEY AUTOINCREMENT, qid, attempts, ready_at, headers, body,
             created, opts, state, body_ref)
    bodies(id INTEGER PRIMARY KEY, data, refs)  -- a body several messages share (the
                                         copies of a topic's publish): a message with
                                         ``body_ref`` has an empty ``body`` and reads
                                         ``bodies.data``; a trigger counts ``refs`` down
                                         as such messages are deleted, and deletes the
                                         body with the last
    index messages(qid)      -- rows of one queue in id order, for paging a backlog in
    entries(id INTEGER PRIMARY KEY, sid, headers, body, created)  -- a stream's entries
                                         (zq.core.streams): kept until retention removes
                                         them; ``sid`` numbers the stream's key in
                                         ``queues``; index entries(sid)
    dedup(qid, key, id, expires_at)   -- dedup ids remembered for their window
    results(id, qid, state, data, expires_at)   -- outcomes kept for result_ttl
    schedules(name, spec)             -- durable schedules and their next due times
    producers(pid, last, entries, at) -- idempotent producers' stored PUBLISH seqs: one
                                         row per producer per commit, ``entries`` the
                                         msgpack'd [seq, first id, count] of its frames
    replica(one, term, seq)           -- a replicated broker's place in its primary's
                                         stream (zq.ha): one row, written with each batch

``settings`` is the queue's msgpack'd settings and paused flag; ``opts`` a
message's msgpack'd publish options (priority, tenant, limits, expiry), NULL
for a plain message. ``state`` says what ``attempts`` counts (see
``zq.persistence.base``: WAITING, DELIVERED, AHEAD), so that a restart counts only
attempts that were made.

AUTOINCREMENT keeps the highest id ever used in ``sqlite_sequence``, so ids are
never reused after a restart even when every message was acked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zq.errors import StorageError

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger("zq.store")

SCHEMA_VERSION = 7

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    qid INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    settings BLOB
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    qid INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    ready_at REAL NOT NULL,
    headers BLOB,
    body BLOB NOT NULL,
    created REAL NOT NULL DEFAULT 0,
    opts BLOB,
    state INTEGER NOT NULL DEFAULT 0,
    body_ref INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (qid);
CREATE TABLE IF NOT EXISTS bodies (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    refs INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS messages_body_refs AFTER DELETE ON messages
WHEN old.body_ref IS NOT NULL BEGIN
    UPDATE bodies SET refs = refs - 1 WHERE id = old.body_ref;
    DELETE FROM bodies WHERE id = old.body_ref AND refs <= 0;
END;
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    sid INTEGER NOT NULL,
    headers BLOB,
    body BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_stream ON entries (sid);
CREATE TABLE IF NOT EXISTS dedup (
    qid INTEGER NOT NULL,
    key TEXT NOT NULL,
    id INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (qid, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    qid INTEGER NOT NULL,
    state TEXT NOT NULL,
    data BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    spec BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS producers (
    pid BLOB NOT NULL,
    last INTEGER NOT NULL,
    entries BLOB NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (pid, last)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replica (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    term INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
"""
# The script that takes a database of the version in the key to the next version.
UPGRADES = {
    1: """
ALTER TABLE queues ADD COLUMN settings BLOB;
ALTER TABLE messages ADD COLUMN created REAL NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN opts BLOB;
""",
    2: """
ALTER TABLE messages ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
""",
    3: "",  # version 4 adds a table (the producers), which SCHEMA creates
    4: "",  # version 5 adds a table (replica), which SCHEMA creates
    5: "ALTER TABLE messages ADD COLUMN body_ref INTEGER;",  # SCHEMA adds bodies, trigger
    6: "",  # version 7 adds a table (a stream's entries), which SCHEMA creates
}


async def pragma(db: aiosqlite.Connection, name: str) -> Any:
    """The value ``PRAGMA <name>`` answers (None if no row)."""
    rows = list(await db.execute_fetchall(f"PRAGMA {name}"))
    return rows[0][0] if rows else None


async def migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Create the tables of a new database, or upgrade an older one to SCHEMA_VERSION.

    Only a new or older database is written to: a broker restarted on a full disk
    must be able to open its current one without writing.
    """
    version = await pragma(db, "user_version")
    if version not in (0, *UPGRADES, SCHEMA_VERSION):
        raise StorageError(f"{path} has schema version {version}; this zq knows "
                           f"version {SCHEMA_VERSION}")
    if version == SCHEMA_VERSION:
        return
    if version:
        log.info("upgrading %s from schema version %d to %d", path, version, SCHEMA_VERSION)
        for step in range(version, SCHEMA_VERSION):
            await db.executescript(UPGRADES[step])
    await db.executescript(SCHEMA)
    await db.execute_fetchall(f"PRAGMA user_version = {SCHEMA_VERSION}")
    await db.commit()
