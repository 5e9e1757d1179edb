"""Issue 15, acceptance 2 to 4, on real nodes and a real etcd: a primary paused or cut
off confirms nothing after its lease's deadline and loses nothing confirmed; a lost
standby is taken out of ``sync`` (or, strict, publishes are refused) and a node out of
sync is never promoted; etcd lost for 10 s stops confirms with UNAVAILABLE and they
resume within 3 s of its return. Also: an old primary that stored batches its standby
never acked takes a backup when it comes back, and ends up with the same rows."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import zq
from tests.etcd import Etcd
from tests.helpers import eventually, free_port
from tests.procs import Proc, zq_argv
from tests.system.durability_helpers import read_db
from tests.system.ha_helpers import HaPair, Producers, check_stored, same_rows
from tests.tcp_relay import TcpRelay
from zq.errors import ZqError

pytestmark = pytest.mark.timeout(180)
TTL = 5
ATTEMPT = "SELECT attempts, state FROM messages"



class Observer:
    """One client on one node only (no failover): when each of its confirms arrived."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.confirms: list[float] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        async with zq.Client(self.endpoint, name="observer", connect_timeout=5) as c:
            k = 0
            while not self._stop.is_set():
                k += 1
                try:
                    await asyncio.wait_for(c.publish("obs", b"o%d" % k), 1.0)
                except (ZqError, TimeoutError) as exc:
                    self.errors.append(type(exc).__name__)
                    await asyncio.sleep(0.05)
                    continue
                self.confirms.append(time.monotonic())


async def test_a_primary_with_batches_its_standby_never_got_takes_a_backup_when_back(
        tmp_path: Path, etcd: Etcd) -> None:
    repl_port = free_port()
    to_repl = await TcpRelay(repl_port).start()  # n1 replicates from n0 through it
    pair = HaPair(tmp_path, etcd, "--ha-liveness", "4")
    try:
        await pair.start(0, "--ha-bind", f"tcp://127.0.0.1:{repl_port}",
                         "--ha-advertise", to_repl.endpoint)
        await pair.wait_leader("n0")
        await pair.start(1)
        await pair.wait_sync("n1")
        async with zq.Client(pair.endpoints, connect_timeout=30) as c:
            for i in range(200):
                await c.publish("q", b"before-%d" % i)
            to_repl.cut()  # n1 gets nothing more from n0
            pending = asyncio.ensure_future(c.publish("q", b"unacked"))
            await eventually(lambda: b"unacked" in pair.bodies(0), "stored on n0 alone", 3)
            assert not pending.done()  # not confirmed: n1 has not acked it
            pair.kill(0)  # within the liveness: n1 is still in sync
            await pair.reap(0)
            assert b"unacked" not in pair.bodies(1)
            await pair.wait_leader("n1")
            await pending  # sent again to n1 with its seq, and confirmed there
            to_repl.heal()
            await pair.start(0)  # n0's history goes past n1's: it must start over
            await pair.wait_sync("n0")
            await c.publish("q", b"after")
        confirmed = {b"before-%d" % i: 0.0 for i in range(200)}
        confirmed.update({b"unacked": 0.0, b"after": 0.0})
        check_stored(pair, confirmed, 1)
        await same_rows(pair)
        assert "installed a backup" in pair.procs[0].stderr()  # type: ignore[union-attr]
    finally:
        await pair.stop()
        await to_repl.close()


@contextlib.asynccontextmanager
async def traffic(pair: HaPair) -> AsyncIterator[tuple[Producers, Observer]]:
    """Four producers through both endpoints and an observer on n0 only, publishing;
    stopped on the way out (stopping twice is harmless)."""
    producers = Producers(pair.endpoints, n=4)
    observer = Observer(pair.endpoints[0])
    producers.start()
    observer.start()
    try:
        await eventually(lambda: len(observer.confirms) > 50 and producers.count > 200,
                         "publishing", 20)
        yield producers, observer
    finally:
        await producers.stop()
        await observer.stop()


async def nothing_late_nothing_lost(pair: HaPair, producers: Producers, observer: Observer,
                                    since: float) -> None:
    """No confirm reached the observer from the old primary after its lease; n1 holds
    every confirmed message once, and n0 the same rows."""
    await producers.stop()
    await observer.stop()
    late = [t - since for t in observer.confirms if t > since + TTL]
    assert not late, f"confirms from the old primary after its lease: {late}"
    check_stored(pair, producers.confirmed, 1)
    await same_rows(pair)


async def test_a_paused_primary_confirms_nothing_after_its_lease_and_loses_nothing(
        tmp_path: Path, etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd)
    try:
        await pair.start_both()
        async with traffic(pair) as (producers, observer):
            pair.kill(0, signal.SIGSTOP)
            stopped = time.monotonic()
            await pair.wait_leader("n1")
            await eventually(lambda: time.monotonic() - stopped >= 10, "10 s of SIGSTOP",
                             20, 0.1)
            pair.kill(0, signal.SIGCONT)
            count = producers.count
            await eventually(lambda: producers.count > count + 100, "confirms after the heal",
                             30)
            await pair.wait_sync("n0")  # the old primary steps down and follows
            await nothing_late_nothing_lost(pair, producers, observer, stopped)
    finally:
        await pair.stop()


async def test_a_primary_cut_from_etcd_and_standby_stops_confirming_and_loses_nothing(
        tmp_path: Path, etcd: Etcd) -> None:
    to_etcd = await TcpRelay(etcd.port).start()
    repl_port = free_port()
    to_repl = await TcpRelay(repl_port).start()
    pair = HaPair(tmp_path, etcd, etcd_port=to_etcd.port)
    try:
        await pair.start(0, "--ha-bind", f"tcp://127.0.0.1:{repl_port}",
                         "--ha-advertise", to_repl.endpoint)
        await pair.wait_leader("n0")
        await pair.start(1)
        await pair.wait_sync("n1")
        async with traffic(pair) as (producers, observer):
            to_etcd.cut()
            to_repl.cut()
            cut = time.monotonic()
            await pair.wait_leader("n1")
            count = producers.count
            await eventually(lambda: producers.count > count + 100, "confirms from n1", 30)
            await eventually(lambda: time.monotonic() - cut >= 10, "10 s cut off", 20, 0.1)
            to_etcd.heal()
            to_repl.heal()
            await pair.wait_sync("n0", timeout=40)  # n0 stepped down, follows, caught up
            await nothing_late_nothing_lost(pair, producers, observer, cut)
    finally:
        await pair.stop()
        await to_etcd.close()
        await to_repl.close()


async def test_a_lost_standby_leaves_sync_and_a_node_out_of_sync_is_never_promoted(
        tmp_path: Path, etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd)  # liveness 1 s
    producers = Producers(pair.endpoints, n=4)
    try:
        await pair.start_both()
        producers.start()
        await eventually(lambda: producers.count > 200, "publishing", 20)
        pair.kill(1)
        killed = time.monotonic()
        await pair.reap(1)
        await pair.wait_sync(None, timeout=10)
        assert time.monotonic() - killed <= 2 * 1.0  # within 2 x liveness (1 s)
        count = producers.count
        await eventually(lambda: producers.count > count + 200, "confirms alone", 10)
        assert producers.largest_gap(killed, time.monotonic()) <= 2 * 1.0
        pair.kill(0)
        await pair.reap(0)
        await pair.start(1)  # out of sync: it must not lead
        await asyncio.sleep(0)  # (the assertion below waits on etcd's lease, 2 TTLs)
        with pytest.raises(AssertionError, match="timed out"):
            await pair.wait_leader("n1", timeout=2 * TTL)
        assert await pair.leader() is None
        await producers.stop()  # their last publishes wait for n0
        await pair.start(0)  # the last primary may lead again: it has everything
        await pair.wait_leader("n0")
        await pair.wait_sync("n1")
        check_stored(pair, producers.confirmed, 0)
        await same_rows(pair)
    finally:
        if not producers._stop.is_set():
            await producers.stop()
        await pair.stop()


async def test_strict_refuses_publishes_while_no_standby_is_in_sync(
        tmp_path: Path, etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd, "--ha-strict")
    try:
        await pair.start(0)
        await pair.wait_leader("n0")
        async with zq.Client(pair.endpoints[0], connect_timeout=10) as c:
            with pytest.raises(zq.errors.Unavailable, match="ha-strict"):
                await c.publish("q", b"alone")
            await pair.start(1)
            await pair.wait_sync("n1")
            await c.publish("q", b"with a standby")
            pair.kill(1)
            await pair.reap(1)

            async def refused() -> bool:
                try:
                    await c.publish("q", b"x")
                except zq.errors.Unavailable:
                    return True
                return False
            await eventually(refused, "UNAVAILABLE without a standby", 10, 0.1)
            assert (await pair.sync())["standby"] == "n1"  # strict: it stays in sync
            await pair.start(1)
            await eventually(lambda: pair.rows(1) == pair.rows(0), "n1 caught up", 10, 0.1)
            await eventually(lambda: _publishes(c), "publishes taken again", 10, 0.1)
        assert b"alone" not in pair.bodies(0)
    finally:
        await pair.stop()


async def _publishes(c: zq.Client) -> bool:
    try:
        await c.publish("q", b"again")
    except zq.errors.Unavailable:
        return False
    return True


async def test_etcd_lost_for_10s_stops_confirms_with_unavailable_and_they_resume(
        tmp_path: Path, etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd)
    producers = Producers(pair.endpoints, n=4)
    try:
        await pair.start_both()
        producers.start()
        await eventually(lambda: producers.count > 200, "publishing", 20)
        etcd.pause()
        paused = time.monotonic()
        await eventually(lambda: time.monotonic() - paused >= 10, "10 s without etcd", 20, 0.1)
        etcd.resume()
        back = time.monotonic()
        count = producers.count
        await eventually(lambda: producers.count > count, "a confirm after etcd is back", 10)
        resumed = min(t for t in producers.confirmed.values() if t > back)
        await producers.stop()
        last = max(t for t in producers.confirmed.values() if t < back)
        assert last <= paused + TTL, f"confirmed {last - paused:.1f}s into the outage"
        refused = [e for t, e in producers.errors if paused < t < back]
        assert refused, "no publish was refused during the outage"
        assert all(e.startswith("UNAVAILABLE") for e in refused), refused[:5]
        assert resumed - back <= 3.0, f"confirms resumed {resumed - back:.1f}s after etcd"
        leader = await pair.leader()
        assert leader is not None
        await pair.wait_sync(f"n{1 - int(leader[1])}", timeout=20)
        check_stored(pair, producers.confirmed, int(leader[1]))
        await same_rows(pair)
    finally:
        if not producers._stop.is_set():
            await producers.stop()
        await pair.stop()


async def test_a_client_that_tries_the_standby_first_goes_on_to_the_primary_at_once(
        tmp_path: Path, etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd)
    try:
        await pair.start_both()
        began = time.monotonic()
        async with zq.Client([pair.endpoints[1], pair.endpoints[0]], connect_timeout=30) as c:
            took = time.monotonic() - began
            await c.publish("q", b"x")
            assert c.endpoint == pair.endpoints[0]
        assert took < 1.0, f"connecting took {took:.1f}s: the standby did not refuse the HELLO"
        async with zq.Client(pair.endpoints[1], connect_timeout=30) as c:  # the standby only
            await c.publish("q", b"y")
            assert c.endpoint == pair.endpoints[0]  # it named its primary
    finally:
        await pair.stop()


async def test_a_delivery_of_the_old_primary_comes_again_and_its_late_ack_counts_for_nothing(
        tmp_path: Path, etcd: Etcd) -> None:
    """PROTOCOL.md 18: deliveries and acks are per session. The delivery's state, once
    stored (it may follow its DELIVER by up to 20 ms, as on one broker), is on the
    standby too; the new primary delivers it again with the same attempt number (a lost
    broker never costs a message an attempt, section 12.5). The old delivery's ack is
    refused, and only the new one's settles it."""
    pair = HaPair(tmp_path, etcd)
    try:
        await pair.start_both()
        async with zq.Client(pair.endpoints, connect_timeout=30) as c:
            await c.publish("q", b"one")
            async with c.consume("q", prefetch=1) as consumer:
                m = await consumer.get(timeout=10)
                assert m.attempt == 1
                await eventually(lambda: read_db(pair.data(1) / "zq.db", ATTEMPT) == [(1, 1)],
                                 "the attempt stored on n1", 5)
                pair.kill(0)
                await pair.reap(0)
                await pair.wait_leader("n1")
                again = await consumer.get(timeout=30)
                assert (again.body, again.id, again.attempt) == (b"one", m.id, 1)
                with pytest.raises(zq.errors.StaleDelivery, match="lost"):
                    await m.ack(wait=True)
                assert pair.bodies(1) == [b"one"]
                await again.ack(wait=True)
        await eventually(lambda: pair.bodies(1) == [], "the ack stored on n1", 5)
    finally:
        await pair.stop()


async def test_a_broker_that_was_never_replicated_gives_its_standby_a_backup(
        tmp_path: Path, etcd: Etcd) -> None:
    """Its database holds messages at position (0, 0), as an empty one does: a standby
    at (0, 0) must not be taken for having the same history."""
    pair = HaPair(tmp_path, etcd)
    solo = await Proc.start(zq_argv("broker", "--data", str(pair.data(0)), "--bind",
                                    pair.endpoints[0], "--storage", "sqlite"),
                            tmp_path / "solo.log")
    try:
        await solo.ready_line()
        async with zq.Client(pair.endpoints[0]) as c:
            for i in range(10):
                await c.publish("q", b"solo-%d" % i)
        await solo.terminate_and_expect_exit(0)
        await pair.start_both()
        await same_rows(pair)
        assert len(pair.rows(1)) == 10
        assert "installed a backup" in pair.procs[1].stderr()  # type: ignore[union-attr]
    finally:
        await pair.stop()
