"""One failed commit, for every kind of change the broker stages (issue 11, acceptance 3).

A real broker on the real SQLite store, whose next commit carrying the change is
made to fail once (a disk error). Then the broker is stopped and started again on
the same data folder, and its state must be exactly what it told its clients:
a refused publish is not there, and every acked, nacked, declared, scheduled,
completed or purged change that was answered is there. The schedule case is the
bug that used to be: a ``schedule_add`` in a failed commit was answered as stored
and was gone after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import zq
from zq.broker import Broker
from zq.config import BrokerConfig
from zq.errors import StorageError
from zq.persistence.base import WriteBatch

Pick = Callable[[WriteBatch], bool]


class Node:
    """A broker in this process on ``data``, restartable; its store can fail once."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.broker: Broker | None = None
        self.task: asyncio.Task[None] | None = None
        self.pick: Pick | None = None
        self.failed: list[WriteBatch] = []

    async def start(self) -> str:
        b = Broker(BrokerConfig(bind="tcp://127.0.0.1:*", heartbeat=0.2, data=str(self.data)))
        ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(b.run(lambda _: ready.set()))
        await asyncio.wait_for(ready.wait(), 10)
        real = b.store.commit

        async def commit(batch: WriteBatch) -> None:
            if self.pick is not None and self.pick(batch):
                self.pick = None
                self.failed.append(batch)
                raise StorageError("disk I/O error (injected, once)")
            await real(batch)

        real_now = b.store.commit_now

        def commit_now(batch: WriteBatch) -> bool:
            # The failure hits the commit on the loop's thread too: it leaves the
            # batch to commit(), which fails and reports it (as SqliteStore does).
            if self.pick is not None and self.pick(batch):
                return False
            return real_now(batch)

        b.store.commit = commit  # type: ignore[method-assign]
        b.store.commit_now = commit_now  # type: ignore[method-assign]
        self.broker = b
        return b.endpoint

    def fail_once(self, pick: Pick) -> None:
        """The next commit whose batch ``pick`` selects fails."""
        self.pick = pick

    async def stop(self) -> None:
        assert self.broker is not None
        assert self.task is not None
        self.broker.request_stop()
        await asyncio.wait_for(self.task, 10)
        self.broker = self.task = None

    async def restart(self) -> str:
        await self.stop()
        return await self.start()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(tmp_path / "data")
    try:
        yield n
    finally:
        if n.task is not None:
            with contextlib.suppress(Exception):
                await n.stop()


async def _queue(c: zq.Client, name: str) -> dict[str, object]:
    q: dict[str, object] = (await c.queues()).get(name, {})
    return q


async def test_a_refused_publish_is_not_there_after_a_restart(node: Node) -> None:
    ep = await node.start()
    async with zq.Client(ep) as c:
        await c.publish("p", b"kept")
        node.fail_once(lambda b: bool(b.inserts))
        with pytest.raises(zq.StorageError):
            await c.publish("p", b"refused")
    ep = await node.restart()
    async with zq.Client(ep) as c, c.consume("p", prefetch=10) as con:
        m = await con.get(timeout=5)
        assert m.body == b"kept"
        await m.ack(wait=True)
        with pytest.raises(TimeoutError):
            await con.get(timeout=0.3)
    assert node.failed


async def test_an_ack_answered_is_gone_after_a_restart(node: Node) -> None:
    ep = await node.start()
    async with zq.Client(ep) as c:
        await c.publish_many("a", [b"1", b"2"])
        async with c.consume("a", prefetch=1) as con:
            m = await con.get(timeout=5)
            node.fail_once(lambda b: bool(b.deletes))
            await m.ack(wait=True)
    ep = await node.restart()
    async with zq.Client(ep) as c, c.consume("a", prefetch=10) as con:
        m = await con.get(timeout=5)
        assert m.body == b"2"  # 1 was acked, and stays acked
        await m.ack(wait=True)
    assert node.failed


async def test_a_nack_with_a_delay_keeps_its_attempt_history_and_due_time(node: Node) -> None:
    ep = await node.start()
    async with zq.Client(ep) as c:
        mid = await c.publish("n", b"later")
        async with c.consume("n", prefetch=1) as con:
            m = await con.get(timeout=5)
            node.fail_once(lambda b: any(not isinstance(u, tuple) for u in b.updates))
            await m.nack(delay=60, reason="not now", wait=True)
    ep = await node.restart()
    async with zq.Client(ep) as c:
        st = await c.task_status("n", mid)
        assert st["state"] == "delayed"
        assert [e["reason"] for e in st["history"]] == ["not now"]
    assert node.failed


async def test_queue_settings_and_a_purge_answered_are_there(node: Node) -> None:
    ep = await node.start()
    async with zq.Client(ep) as c:
        await c.publish_many("s", [b"x", b"y"])
        node.fail_once(lambda b: bool(b.settings))
        await c.declare_queue("s", max_attempts=7)
        node.fail_once(lambda b: bool(b.purges) or bool(b.deletes))
        assert await c.purge_queue("s") == 2
    ep = await node.restart()
    async with zq.Client(ep) as c:
        info = await c.queue_info("s")
        assert info["settings"]["max_attempts"] == 7
        assert info["stats"]["ready"] == 0
    assert len(node.failed) == 2


async def test_a_schedule_added_or_removed_in_a_failed_commit(node: Node) -> None:
    ep = await node.start()
    async with zq.Client(ep) as c:
        await c.add_schedule("gone", "jobs", b"x", every=3600)
        node.fail_once(lambda b: bool(b.schedules))
        await c.add_schedule("nightly", "jobs", b"y", every=3600)
        node.fail_once(lambda b: bool(b.schedules))
        assert await c.remove_schedule("gone")
    ep = await node.restart()
    async with zq.Client(ep) as c:
        names = [s["name"] for s in await c.schedules()]
        assert names == ["nightly"]
    assert len(node.failed) == 2


async def test_a_task_outcome_answered_is_kept(node: Node) -> None:
    ep = await node.start()
    async with zq.Client(ep) as c:
        await c.declare_queue("t", result_ttl=3600)
        mid = await c.publish("t", b"call")
        async with c.consume("t", prefetch=1) as con:
            m = await con.get(timeout=5)
            node.fail_once(lambda b: bool(b.results))
            assert await m.complete(True, result={"answer": 42}) == "succeeded"
    ep = await node.restart()
    async with zq.Client(ep) as c:
        st = await c.task_status("t", mid)
        assert (st["state"], st["result"]) == ("succeeded", {"answer": 42})
    assert node.failed


async def test_attempt_numbers_of_a_failed_commit(node: Node) -> None:
    """The commit storing a delivery's attempt number fails: the delivery still goes
    out (consumers are served), and after a restart the message is there, its
    attempt counted or not but never more than once."""
    ep = await node.start()
    async with zq.Client(ep) as c:
        await c.publish("d", b"m")
        node.fail_once(lambda b: bool(b.updates))
        async with c.consume("d", prefetch=1) as con:
            m = await con.get(timeout=5)
            assert m.attempt == 1
            await m.release()  # not processed: the attempt does not count
            await c.sync()
    ep = await node.restart()
    async with zq.Client(ep) as c, c.consume("d", prefetch=1) as con:
        m = await con.get(timeout=5)
        assert m.attempt == 1  # counted once, given back once: 1 again
        await m.ack(wait=True)
    assert node.failed
