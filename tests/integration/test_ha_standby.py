"""The standby's applier (zq.ha.standby.Follower) against a scripted primary: a real
SQLite store and real ZeroMQ sockets in one process. It applies shipped batches in
order and acks them cumulatively, keeps its position across a restart, refuses a
batch of an older term (``stale``), names its position again after a gap or a bad
message, and puts a backup sent in chunks in place of its database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from zq.ha import wire
from zq.ha.lease import Leader
from zq.ha.standby import Follower
from zq.persistence import WriteBatch
from zq.persistence import replica as files
from zq.persistence.sqlite import SqliteStore


class Primary:
    """The test's side of the replication socket."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.standby = b""

    async def expect(self, op: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next control message of kind ``op`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                identity, *parts = await self.sock.recv_multipart()
                self.standby = identity
                m = wire.decode_control(parts)
                if m["op"] == op:
                    return m

    async def send(self, parts: list[bytes]) -> None:
        await self.sock.send_multipart([self.standby, *parts])

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def batch(first: int, *bodies: bytes, deletes: tuple[int, ...] = ()) -> WriteBatch:
    return WriteBatch(inserts=[(first, "q", None, list(bodies))], deletes=list(deletes),
                      created=1.0)


def rows(data: Path) -> list[tuple[int, bytes]]:
    conn = sqlite3.connect(f"file:{data / 'zq.db'}?mode=ro", uri=True)
    try:
        return [(int(i), bytes(b)) for i, b in conn.execute(
            "SELECT id, body FROM messages ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
async def primary() -> AsyncIterator[Primary]:
    p = Primary()
    yield p
    p.close()


@contextlib.asynccontextmanager
async def following(data: Path, primary: Primary, term: int = 7
                    ) -> AsyncIterator[Follower]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    f = Follower(data, "s1", ctx, liveness=0.5)
    await f.open()
    stop = asyncio.Event()

    async def changed() -> bool:
        return stop.is_set()

    task = asyncio.create_task(f.follow(Leader("p", "tcp://127.0.0.1:1", term,
                                               primary.endpoint), changed))
    try:
        yield f
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await f.close()
        ctx.term()


async def test_batches_are_applied_in_order_acked_and_the_position_survives(
        tmp_path: Path, primary: Primary) -> None:
    async with following(tmp_path, primary) as f:
        assert await primary.expect("follow") == {"op": "follow", "node": "s1", "term": 0,
                                                  "seq": 0}
        await primary.send(wire.encode(7, 1, batch(1, b"a", b"b")))
        await primary.send(wire.encode(7, 2, batch(3, b"c", deletes=(1,))))
        acks = [await primary.expect("ack")]
        while (acks[-1]["term"], acks[-1]["seq"]) != (7, 2):
            acks.append(await primary.expect("ack"))
        assert f.position == (7, 2)
        await primary.send(wire.encode(7, 2, batch(3, b"c")))  # again: acked, not applied
        assert (await primary.expect("ack"))["seq"] == 2
    assert rows(tmp_path) == [(2, b"b"), (3, b"c")]
    store = SqliteStore(tmp_path)
    await store.open(1)
    try:
        assert await files.position(store) == (7, 2)  # stored with the batch
    finally:
        await store.close()


async def test_an_older_term_is_refused_and_a_gap_or_a_bad_batch_asks_again(
        tmp_path: Path, primary: Primary) -> None:
    async with following(tmp_path, primary) as f:
        await primary.expect("follow")
        await primary.send(wire.encode(7, 1, batch(1, b"a")))
        await primary.expect("ack")
        await primary.send(wire.encode(6, 9, batch(2, b"old")))  # a deposed primary's
        assert await primary.expect("stale") == {"op": "stale", "term": 7}
        await primary.send(wire.encode(7, 3, batch(5, b"gap")))  # seq 2 is missing
        assert (await primary.expect("follow"))["seq"] == 1
        bad = wire.encode(7, 2, batch(2, b"x"))
        await primary.send([bad[0], b"\xc1", *bad[2:]])  # a header that is not msgpack
        assert (await primary.expect("follow"))["seq"] == 1
        assert f.position == (7, 1)
    assert rows(tmp_path) == [(1, b"a")]


async def test_a_backup_in_chunks_replaces_the_database(tmp_path: Path,
                                                       primary: Primary) -> None:
    source = tmp_path / "primary"
    store = SqliteStore(source)
    await store.open(1)
    b = batch(1, *(b"m%d" % i for i in range(3000)))
    b.position = (9, 40)
    await store.commit(b)
    copy = tmp_path / "copy.db"
    assert files.backup(source, copy) == (9, 40)
    await store.close()
    data = copy.read_bytes()
    assert len(data) > 2 * 65536
    mine = tmp_path / "standby"
    async with following(mine, primary, term=9) as f:
        await primary.expect("follow")
        await primary.send(wire.encode(3, 1, batch(1, b"diverged")))  # its old history
        await primary.expect("ack")
        n = 65536
        await primary.send(wire.control("chunk", data[:n], term=9, seq=40, at=0, last=False))
        await primary.send(wire.control("chunk", data[2 * n:3 * n], term=9, seq=40, at=2 * n,
                                        last=False))  # out of place: it starts over
        assert (await primary.expect("follow"))["seq"] == 1
        assert not (mine / "replica-in.db").exists()
        broken = bytearray(data)
        broken[n + 100:n + 4000] = b"\xff" * 3900  # a page of the copy damaged
        for copy in (bytes(broken), data):
            for at in range(0, len(copy), n):
                await primary.send(wire.control("chunk", copy[at:at + n], term=9, seq=40,
                                                at=at, last=at + n >= len(copy)))
            if copy is not data:  # refused: SQLite's check fails; it asks again
                assert (await primary.expect("follow"))["seq"] == 1
                assert f.backups == 0
        ack = await primary.expect("ack")
        assert (ack["term"], ack["seq"]) == (9, 40)
        assert f.position == (9, 40)
        assert f.backups == 1
        await primary.send(wire.encode(9, 41, batch(3001, b"after")))
        assert (await primary.expect("ack"))["seq"] == 41
    got = rows(mine)
    assert len(got) == 3001
    assert got[0] == (1, b"m0")
    assert got[-1] == (3001, b"after")
    assert not (mine / "replica-in.db").exists()
