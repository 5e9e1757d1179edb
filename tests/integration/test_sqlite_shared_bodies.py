"""A topic's copies share their bodies in the SQLite store (schema 6): one ``bodies`` row
per body with a count of the messages that point at it, counted down by a trigger as
they are deleted (ack, purge, dead letter without a DLQ), and read back through them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.unit.test_core import A, Harness, P, delivers
from zq.persistence.sqlite import DB_NAME, SqliteStore
from zq.protocol import frames as f


async def commit(h: Harness, store: SqliteStore) -> None:
    c = h.core.take_commit()
    await store.commit(c.batch)
    h.core.committed(c.pending)
    h.core.release(c.deliveries)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path / DB_NAME) as db:
        return list(db.execute(sql))


async def edge(tmp_path: Path) -> tuple[Harness, SqliteStore]:
    store = SqliteStore(tmp_path)
    h = Harness()
    h.core.recover(await store.open(1000), h.now)
    h.core.durable = True
    h.hello(P, A)
    for q in ("a", "b", "c"):
        h.send(P, f.Manage(1, "bind", {"topic": "t", "queue": q}))
    await commit(h, store)
    h.take()
    return h, store


async def test_bodies_are_stored_once_and_go_with_the_last_copy(tmp_path: Path) -> None:
    h, store = await edge(tmp_path)
    try:
        big = b"x" * 10_000
        h.send(P, f.Publish("t", 1, [big, b"small"], [], f.Options(key="")))
        await commit(h, store)
        assert rows(tmp_path, "SELECT id, length(data), refs FROM bodies ORDER BY id") == [
            (h.core.next_id - 6, 10_000, 3), (h.core.next_id - 5, 5, 3)]
        assert rows(tmp_path, "SELECT count(*), sum(length(body)) FROM messages") == [(6, 0)]
        h.send(A, f.Credit("a", 10))
        h.core.dispatch()
        (d,) = delivers(h.take())
        assert d[1].bodies == [big, b"small"]
        h.send(A, f.Ack(d[1].ids, d[1].attempts))
        await commit(h, store)
        assert [r[0] for r in rows(tmp_path, "SELECT refs FROM bodies")] == [2, 2]
        h.send(P, f.Manage(2, "purge", {"queue": "b"}))
        await commit(h, store)
        assert [r[0] for r in rows(tmp_path, "SELECT refs FROM bodies")] == [1, 1]
    finally:
        await store.close()
    store = SqliteStore(tmp_path)  # the last copies are read back through their bodies
    try:
        h2 = Harness()
        h2.core.recover(await store.open(1000), h2.now)
        h2.core.durable = True
        h2.hello(A)
        h2.send(A, f.Credit("c", 10))
        h2.core.dispatch()
        (d,) = delivers(h2.take())
        assert d[1].bodies == [big, b"small"]
        h2.send(A, f.Ack(d[1].ids, d[1].attempts))
        await commit(h2, store)
        assert rows(tmp_path, "SELECT count(*) FROM bodies") == [(0,)]
        assert rows(tmp_path, "SELECT count(*) FROM messages") == [(0,)]
    finally:
        await store.close()


async def test_a_dead_letter_keeps_its_shared_body(tmp_path: Path) -> None:
    h, store = await edge(tmp_path)
    try:
        h.send(P, f.Publish("t", 1, [b"poison"], [], f.Options(key="")))
        await commit(h, store)
        h.send(A, f.Credit("a", 1))
        h.core.dispatch()
        (d,) = delivers(h.take())
        h.send(A, f.Nack(d[1].ids, d[1].attempts, False, 0, "bad"))  # dead: a.dlq
        await commit(h, store)
        assert [r[0] for r in rows(tmp_path, "SELECT refs FROM bodies")] == [3]
    finally:
        await store.close()
    store = SqliteStore(tmp_path)
    try:
        h2 = Harness()
        h2.core.recover(await store.open(1000), h2.now)
        h2.hello(A)
        h2.send(A, f.Credit("a.dlq", 1))
        h2.core.dispatch()
        (d,) = delivers(h2.take())
        assert d[1].bodies == [b"poison"]
    finally:
        await store.close()


async def test_a_single_match_stores_its_body_in_its_row(tmp_path: Path) -> None:
    h, store = await edge(tmp_path)
    try:
        h.send(P, f.Manage(3, "unbind", {"topic": "t", "queue": "b"}))
        h.send(P, f.Manage(4, "unbind", {"topic": "t", "queue": "c"}))
        h.send(P, f.Publish("t", 1, [b"alone"], [], f.Options(key="")))
        await commit(h, store)
        assert rows(tmp_path, "SELECT count(*) FROM bodies") == [(0,)]
        assert rows(tmp_path, "SELECT body, body_ref FROM messages") == [(b"alone", None)]
    finally:
        await store.close()


async def test_a_standby_fed_the_replication_stream_stores_each_copy_whole(
        tmp_path: Path) -> None:
    """The stream (zq.ha.wire) ships each copy's bodies; the standby's store keeps them
    in the rows, and reads the same messages back."""
    from zq.ha import wire

    h, store = await edge(tmp_path / "primary")
    try:
        h.send(P, f.Publish("t", 1, [b"one", b"two"], [], f.Options(key="")))
        c = h.core.take_commit()
        assert c.batch.shared
        shipped = wire.decode(wire.encode(1, 1, c.batch))
        await store.commit(c.batch)
    finally:
        await store.close()
    standby = SqliteStore(tmp_path / "standby")
    await standby.open(1000)
    try:
        await standby.commit(shipped.batch)
    finally:
        await standby.close()
    assert rows(tmp_path / "standby", "SELECT count(*) FROM bodies") == [(0,)]
    back = SqliteStore(tmp_path / "standby")
    try:
        rec = await back.open(1000)
        got = sorted((m.queue, m.body) for m in rec.messages)
        assert got == [(q, b) for q in ("a", "b", "c") for b in (b"one", b"two")]
    finally:
        await back.close()
