"""One commit between publish and deliver (issue 13; PROTOCOL.md 12 and 12.5).

A DELIVER goes out without waiting for the commit that stores its attempt number;
that number is stored with the next commit. The test holds the database's write
lock from outside, so the broker's next commit cannot happen, and checks that the
DELIVER arrives anyway; then it kills the broker before that commit, starts it again,
and shows that the old delivery's ack is refused and the message is delivered again
with the same attempt number (an attempt in flight at a crash never counts).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import zq
from tests.cluster_helpers import Wire
from tests.system.durability_helpers import DurableBroker, read_db
from zq.errors import SessionUnknown, StaleDelivery
from zq.protocol import frames as f


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[DurableBroker]:
    n = DurableBroker(tmp_path)
    await n.start()
    try:
        yield n
    finally:
        await n.cleanup()


async def test_a_delivery_does_not_wait_for_a_commit_and_a_crash_before_it_costs_nothing(
        node: DurableBroker) -> None:
    async with zq.Client(node.endpoint, name="producer") as c:
        [mid] = await c.publish_many("one-fsync", [b"payload"])
    lock = sqlite3.connect(node.db, timeout=5)
    lock.execute("BEGIN IMMEDIATE")  # the broker's next commit waits for this lock
    wire = Wire(node.endpoint, b"zq-old-consumer")
    try:
        await wire.hello()
        await wire.send(f.Credit("one-fsync", 1))
        d = await wire.expect(f.Deliver, timeout=2.0)  # no commit could happen meanwhile
        assert (d.ids, d.attempts, d.bodies) == ([mid], [1], [b"payload"])
        await node.crash()  # before the commit that would store attempt 1
        lock.rollback()
        rows = read_db(node.db, "SELECT id, attempts, state FROM messages")
        assert rows == [(mid, 0, 0)], rows  # stored, never counted as delivered

        await node.start()
        await wire.send(f.Ack([mid], [1]))  # the old delivery's ack, after the restart
        codes = {(await wire.expect(f.Error)).code for _ in range(2)}
        assert codes == {StaleDelivery.code, SessionUnknown.code}
    finally:
        lock.close()
        wire.close()
    async with zq.Client(node.endpoint, name="consumer") as c:
        async with c.consume("one-fsync", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            assert (m.id, m.body, m.attempt) == (mid, b"payload", 1)  # delivered again
            await m.ack()
        info = await c.queue_info("one-fsync")
    assert info["stats"]["ready"] == 0
