"""A stream's entries in the SQLite store (zq.core.streams): reading them for a group,
finding where a group starts, and how far retention goes. Writes are in
:mod:`zq.persistence.sql` (appends are inserts, retention a purge, in a batch).

Entries are rows of ``entries(id, sid, headers, body, created)``: ``sid`` numbers the
stream's key (``STREAM_PREFIX + name``) in the ``queues`` table, as a queue is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from zq.persistence.base import StoredMessage

if TYPE_CHECKING:
    import aiosqlite

STREAM_PREFIX = "\x00stream\x00"  # as zq.core.streams names them
GROUP_PREFIX = "\x00group\x00"
PAGE = ("SELECT id, headers, body, created FROM entries WHERE sid = ? AND id > ? "
        "ORDER BY id LIMIT ?")
FROM_ID = "SELECT min(id) FROM entries WHERE sid = ? AND id >= ?"
FROM_TIME = "SELECT min(id) FROM entries WHERE sid = ? AND created >= ?"
COUNT_FROM = "SELECT count(*) FROM entries WHERE sid = ? AND id >= ?"
OLDEST = ("SELECT id, length(body), created FROM entries WHERE sid = ? AND id > ? "
          "ORDER BY id LIMIT ?")
TOTALS = ("SELECT sid, count(*), min(id), max(id), total(length(body)) FROM entries "
          "GROUP BY sid")
CREATED = "SELECT created FROM entries WHERE id = ?"

# What retention found: (remove up to this id, how many, their bytes, the first id
# left (0: none), when it was stored (wall)).
Trim = tuple[int, int, int, int, float]


def stream_of(key: str) -> str:
    """The stream's storage key for a group's key (``GROUP_PREFIX + stream + NUL + g``)."""
    return STREAM_PREFIX + key[len(GROUP_PREFIX):].partition("\x00")[0]


async def page(db: aiosqlite.Connection, sid: int, name: str, after: int, limit: int
               ) -> list[StoredMessage]:
    unpack = msgpack.unpackb
    return [StoredMessage(mid, name, body, None if h is None else unpack(h), 0, 0.0, created)
            for mid, h, body, created in await db.execute_fetchall(PAGE, (sid, after, limit))]


async def seek(db: aiosqlite.Connection, sid: int, start: tuple[Any, ...]
               ) -> tuple[int, int]:
    """The first entry at or after ``start`` (("offset", id) or ("time", wall)), 0 if
    none, and how many entries there are from it on."""
    sql = FROM_TIME if start[0] == "time" else FROM_ID
    rows = list(await db.execute_fetchall(sql, (sid, start[1])))
    first = int(rows[0][0]) if rows and rows[0][0] is not None else 0
    if not first:
        return 0, 0
    rows = list(await db.execute_fetchall(COUNT_FROM, (sid, first)))
    return first, int(rows[0][0])


async def trim_point(db: aiosqlite.Connection, sid: int, floor: int, cutoff: float,
                     excess: int, most: int) -> Trim:
    """The oldest entries above ``floor`` that retention removes: those stored before
    ``cutoff`` (wall clock; 0: no age limit), and then as many more as make ``excess``
    bytes; at most ``most`` of them."""
    rows = list(await db.execute_fetchall(OLDEST, (sid, floor, most + 1)))
    upto = count = size = 0
    for mid, length, created in rows:
        if count >= most or not ((cutoff and created < cutoff) or size < excess):
            return upto, count, size, int(mid), float(created)
        upto, count, size = int(mid), count + 1, size + int(length)
    return upto, count, size, 0, 0.0


async def totals(db: aiosqlite.Connection, names: dict[int, str]
                 ) -> dict[str, tuple[int, int, int, int, float]]:
    """Per stream key: (entries, first id, last id, bytes of bodies, first's time)."""
    out: dict[str, tuple[int, int, int, int, float]] = {}
    for sid, count, first, last, size in await db.execute_fetchall(TOTALS):
        rows = list(await db.execute_fetchall(CREATED, (first,)))
        created = float(rows[0][0]) if rows else 0.0
        name = names.get(sid)
        if name is not None:
            out[name] = (int(count), int(first), int(last), int(size), created)
    return out
