"""Queue features with real broker processes: leases and time limits, fair share and
caps, deduplication, overflow, policy plugins (acceptance 5-9)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import zq
from tests.helpers import eventually, install_distribution
from tests.procs import Proc

HERE = Path(__file__).resolve().parent
WORKER = HERE / "scripts" / "qb_worker.py"
PLUGIN_SRC = HERE / "plugin_pkg" / "zq_test_policy"

Factory = Callable[..., Awaitable[Proc]]


# ------------------------------------------------------------------ 5. leases, time limits


async def test_heartbeating_consumer_keeps_a_long_job(broker_factory: Factory,
                                                      tmp_path: Path) -> None:
    hb, liveness = 0.2, 3
    broker = await broker_factory("--heartbeat", str(hb), "--liveness", str(liveness))
    work = max(2.0, 3 * hb * liveness)  # three times as long as a silent peer would live
    async with zq.Client(broker.endpoint, name="observer") as obs:
        mid = await obs.publish("long", b"job")
        worker = await Proc.start([sys.executable, str(WORKER), broker.endpoint, "long",
                                   str(work)], tmp_path / "worker.log")
        try:
            line = await worker.wait_for_line("GOT ", timeout=15)
            assert line.split()[1:] == [str(mid), "1"], line
            async with zq.Client(broker.endpoint, name="idle") as c2, \
                    c2.consume("long", prefetch=10) as other:
                await c2.sync()  # its credit is at the broker: it waits with 10 to spare
                s = await obs.stats()
                subs = [p["subs"]["long"] for p in s["peers"].values() if p["name"] == "idle"]
                assert subs
                assert subs[0]["available"] == 10, subs
                stolen = asyncio.create_task(other.get())
                try:
                    done = await worker.wait_for_line("ACK", timeout=work + 10)
                    assert not stolen.done(), f"redelivered while leased: {stolen.result()}"
                finally:
                    stolen.cancel()
                assert done.startswith("ACKED "), f"{done}\n{worker.stderr()}"
                assert float(done.split()[1]) >= work
                assert await worker.wait(10) == 0, worker.stderr()
                assert other.received == 0
                s = await obs.stats()
                c = s["counters"]
                assert s["queues"]["long"]["acked"] == 1, s["queues"]["long"]
                assert c["acked"] == 1
                assert c["redelivered"] == 0
                assert c["time_limited"] == 0
                assert "no sign of life" not in broker.stderr()  # it left with BYE
        finally:
            await worker.kill()


async def test_control_a_consumer_that_blocks_its_loop_loses_the_job(
        broker_factory: Factory, tmp_path: Path) -> None:
    """The same job with the worker's loop blocked: no heartbeats, so the lease ends.

    Shows that the test above would see a redelivery if the lease did not follow
    the heartbeats.
    """
    hb, liveness = 0.2, 3
    broker = await broker_factory("--heartbeat", str(hb), "--liveness", str(liveness))
    work = max(2.0, 3 * hb * liveness)
    async with zq.Client(broker.endpoint, name="observer") as obs:
        mid = await obs.publish("long", b"job")
        worker = await Proc.start([sys.executable, str(WORKER), broker.endpoint, "long",
                                   str(work), "blocking"], tmp_path / "worker.log")
        try:
            await worker.wait_for_line("GOT ", timeout=15)
            async with zq.Client(broker.endpoint, name="idle") as c2, \
                    c2.consume("long", prefetch=10) as other:
                m = await other.get(timeout=work)  # while the worker is still blocked
                assert (m.id, m.attempt) == (mid, 2)
                assert [h["outcome"] for h in m.history] == ["consumer lost"], m.history
                done = await worker.wait_for_line("ACK", timeout=work + 10)
                assert done.startswith("ACKERR "), done  # its lease had ended
                await m.ack(wait=True)
        finally:
            await worker.kill()


@pytest.mark.parametrize("where", ["queue", "publish"])
async def test_time_limit_fails_the_attempt_and_redelivers(broker_factory: Factory,
                                                           where: str) -> None:
    broker = await broker_factory("--heartbeat", "0.2")
    async with zq.Client(broker.endpoint, name="admin") as admin, \
            zq.Client(broker.endpoint, name="slow") as c1, \
            zq.Client(broker.endpoint, name="fast") as c2:
        if where == "queue":
            await admin.declare_queue("limited", time_limit=1)
            mid = await admin.publish("limited", b"job")
        else:
            mid = await admin.publish("limited", b"job", time_limit=1.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()  # before the first delivery, so the limit runs out after t0 + 1
        async with c1.consume("limited", prefetch=1) as first:
            m1 = await first.get(timeout=5)
            assert (m1.id, m1.attempt) == (mid, 1)
            async with c2.consume("limited", prefetch=1) as second:
                m2 = await second.get(timeout=5)  # the first one neither acks nor nacks
                elapsed = loop.time() - t0
                assert (m2.id, m2.attempt, m2.body) == (mid, 2, b"job")
                assert 1.0 <= elapsed < 1.5, elapsed
                limited = [h for h in m2.history if h.get("outcome") == "time limit"]
                assert len(limited) == 1, m2.history
                assert limited[0]["attempt"] == 1
                assert limited[0].get("consumer") == "slow", limited
                assert limited[0]["end"] - limited[0]["start"] >= 0.99, limited
                with pytest.raises(zq.StaleDelivery):
                    await m1.ack(wait=True)
                await m2.ack(wait=True)
            assert first.received == 1  # the redelivery went to the other consumer
        s = await admin.stats()
        assert s["counters"]["time_limited"] == 1
        assert s["counters"]["acked"] == 1
        assert s["queues"]["limited"]["acked"] == 1


# ------------------------------------------------------------------ 6. fair share, caps


async def test_weighted_fair_share_3_to_1(broker_factory: Factory) -> None:
    broker = await broker_factory("--storage", "memory")
    async with zq.Client(broker.endpoint, name="fair") as c:
        await c.declare_queue("fair", weights={"X": 3, "Y": 1})
        await c.publish_many("fair", [b"X%d" % i for i in range(8000)], tenant="X")
        await c.publish_many("fair", [b"Y%d" % i for i in range(8000)], tenant="Y")
        info = await c.queue_info("fair")
        assert info["stats"]["ready"] == 16_000, info["stats"]
        order: list[bytes] = []
        async with asyncio.timeout(40), c.consume("fair", prefetch=1) as consumer:
            while len(order) < 10_000:
                m = await consumer.get(timeout=5)
                order.append(m.body)
                await m.ack()
            assert consumer.peak_held == 1
    got = Counter(b[:1] for b in order)
    assert got[b"X"] + got[b"Y"] == 10_000
    ratio = got[b"X"] / got[b"Y"]
    assert 2.7 <= ratio <= 3.3, got
    for start in range(0, 10_000, 1000):  # fair all along, not only in total
        part = Counter(b[:1] for b in order[start:start + 1000])
        assert 2.7 <= part[b"X"] / max(1, part[b"Y"]) <= 3.3, (start, part)
    for t in (b"X", b"Y"):  # FIFO within a tenant
        mine = [int(b[1:]) for b in order if b[:1] == t]
        assert mine == list(range(len(mine)))


class Tally:
    """What two consumers hold, counted as messages arrive and as we ack them."""

    def __init__(self) -> None:
        self.held: list[zq.Message] = []
        self.a_held = 0
        self.peak_a = 0
        self.got: Counter[bytes] = Counter()
        self.acked = 0

    async def pump(self, consumer: zq.Consumer) -> None:
        while True:
            m = await consumer.get()
            self.held.append(m)
            self.got[m.body[:1]] += 1
            if m.body[:1] == b"A":
                self.a_held += 1
                self.peak_a = max(self.peak_a, self.a_held)

    async def ack(self, m: zq.Message) -> None:
        self.held.remove(m)
        if m.body[:1] == b"A":
            self.a_held -= 1  # before the ack leaves, so our count never undercounts
        await m.ack(wait=True)
        self.acked += 1


async def test_tenant_cap_bounds_in_flight_while_others_flow(broker_factory: Factory) -> None:
    cap = 5
    broker = await broker_factory("--storage", "memory")
    async with zq.Client(broker.endpoint, name="admin") as admin:
        await admin.declare_queue("capped", caps={"A": cap})
        await admin.publish_many("capped", [b"A%d" % i for i in range(100)], tenant="A")
        await admin.publish_many("capped", [b"B%d" % i for i in range(100)], tenant="B")
        peak_broker = 0

        async def broker_a_in_flight() -> int:
            nonlocal peak_broker
            info = await admin.queue_info("capped")
            n = int(info["stats"]["tenants"]["A"]["in_flight"])
            peak_broker = max(peak_broker, n)
            return n

        tally = Tally()
        async with zq.Client(broker.endpoint, name="ca") as ca, \
                zq.Client(broker.endpoint, name="cb") as cb, \
                ca.consume("capped", prefetch=50) as c1, cb.consume("capped", prefetch=50) as c2:
            tasks = [asyncio.create_task(tally.pump(c1)), asyncio.create_task(tally.pump(c2))]
            try:
                async def full() -> bool:
                    await broker_a_in_flight()
                    return len(tally.held) == 100

                # Nothing acked yet: both windows fill, A stops at its cap, B takes the rest.
                await eventually(full, "both windows (100) full")
                await admin.sync()
                info = await admin.queue_info("capped")
                st = info["stats"]
                assert st["in_flight"] == 100, st
                assert st["tenants"]["A"]["in_flight"] == cap, st["tenants"]
                assert tally.got == {b"A": cap, b"B": 100 - cap}, tally.got
                assert c1.received + c2.received == 100

                # Ack a few at a time, A first, until every message is done.
                a_rounds = 0
                async with asyncio.timeout(30):
                    while tally.acked < 200:
                        if not tally.held:
                            await eventually(lambda: bool(tally.held),
                                             f"more deliveries ({tally.acked} acked)")
                        a = [m for m in tally.held if m.body[:1] == b"A"][:2]
                        b = [m for m in tally.held if m.body[:1] == b"B"][:3]
                        for m in a + b:
                            await tally.ack(m)
                        a_rounds += bool(a)
                        assert await broker_a_in_flight() <= cap
                        assert tally.a_held <= cap
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        assert tally.got == {b"A": 100, b"B": 100}
        assert tally.peak_a == cap, tally.peak_a  # reached, never passed (consumers' count)
        assert peak_broker == cap, peak_broker  # ... and the broker's
        assert a_rounds >= 100 // 2
        info = await admin.queue_info("capped")
        assert info["stats"]["ready"] == 0
        assert info["stats"]["acked"] == 200
        assert info["stats"]["tenants"]["A"]["in_flight"] == 0


# ------------------------------------------------------------------ 7. deduplication


async def test_same_dedup_id_from_two_clients_is_one_message(broker: Proc) -> None:
    async with zq.Client(broker.endpoint, name="p1") as p1, \
            zq.Client(broker.endpoint, name="p2") as p2:
        id1, id2 = await asyncio.gather(
            p1.publish("dd", b"from-p1", dedup_id="order-42"),
            p2.publish("dd", b"from-p2", dedup_id="order-42"))
        assert id1 == id2
        assert await p2.publish("dd", b"again", dedup_id="order-42") == id1
        info = await p1.queue_info("dd")
        assert info["stats"]["ready"] == 1, info["stats"]
        assert info["stats"]["published"] == 1
        other = await p1.publish("dd", b"other", dedup_id="order-43")
        assert other != id1
        end = await p1.publish("dd", b"end")
        got: list[zq.Message] = []
        async with p1.consume("dd", prefetch=10) as consumer:
            while not got or got[-1].id != end:
                m = await consumer.get(timeout=5)
                got.append(m)
                await m.ack()
        assert [m.id for m in got] == [id1, other, end]
        assert got[0].body in (b"from-p1", b"from-p2")
        s = await p1.stats()
        assert s["counters"]["deduplicated"] == 2
        assert s["queues"]["dd"]["published"] == 3


# ------------------------------------------------------------------ 8. overflow


async def test_overflow_reject_then_room_again(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as c:
        await c.declare_queue("q1", max_length=10, overflow="reject")
        ids = [await c.publish("q1", b"m%d" % i) for i in range(10)]
        with pytest.raises(zq.QueueFull) as err:
            await c.publish("q1", b"m10")
        assert err.value.retriable
        assert err.value.name == "QUEUE_FULL"
        assert (await c.queue_info("q1"))["stats"]["ready"] == 10
        async with c.consume("q1", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            assert m.id == ids[0]
            await m.ack(wait=True)
        new = await c.publish("q1", b"m10")  # one consumed: room for one
        assert new > ids[-1]
        await c.sync()
        assert (await c.queue_info("q1"))["stats"]["ready"] == 10
        with pytest.raises(zq.QueueFull):
            await c.publish("q1", b"m11")


async def test_overflow_drop_oldest_dead_letters_them(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as c:
        await c.declare_queue("q2", max_length=10, overflow="drop-oldest")
        ids = [await c.publish("q2", b"n%d" % i) for i in range(15)]
        info = await c.queue_info("q2")
        assert info["stats"]["ready"] == 10, info["stats"]
        assert info["dlq"] == "q2.dlq"
        kept = await c.peek("q2", limit=20)
        assert [m["id"] for m in kept] == ids[5:]
        assert [m["body"] for m in kept] == [b"n%d" % i for i in range(5, 15)]
        dead = await c.peek("q2.dlq", limit=20)
        assert [m["id"] for m in dead] == ids[:5]
        assert [m["body"] for m in dead] == [b"n%d" % i for i in range(5)]
        for m in dead:
            assert "overflow" in m["headers"]["zq-reason"], m["headers"]
            assert m["headers"]["zq-origin"] == "q2"
        assert (await c.queue_info("q2.dlq"))["stats"]["ready"] == 5


# ------------------------------------------------------------------ 9. policy plugins


def install_plugin(root: Path) -> dict[str, str]:
    """tests/system/plugin_pkg as an installed distribution in ``root/site``; the
    environment that puts it on a child's path."""
    return install_distribution(root, PLUGIN_SRC, {
        "reverse-alpha": "zq_test_policy:ReverseAlpha", "pin-first": "zq_test_policy:PinFirst"})


async def test_selection_plugin_from_an_installed_distribution(broker_factory: Factory,
                                                               tmp_path: Path) -> None:
    broker = await broker_factory("--storage", "memory", env=install_plugin(tmp_path))
    async with zq.Client(broker.endpoint) as c:
        settings: dict[str, Any] = await c.declare_queue("rev", selection="reverse-alpha")
        assert settings["selection"] == "reverse-alpha"
        for i in range(5):
            for t in "abc":
                await c.publish("rev", f"{t}{i}".encode(), tenant=t)
        order: list[str] = []
        async with c.consume("rev", prefetch=1) as consumer:
            for _ in range(15):
                m = await consumer.get(timeout=5)
                order.append(m.body.decode())
                await m.ack()
        assert order == [f"{t}{i}" for t in "cba" for i in range(5)]


async def test_unknown_selection_policy_is_refused(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as c:
        with pytest.raises(zq.InvalidArgument) as err:
            await c.declare_queue("rev", selection="reverse-alpha")
        assert "reverse-alpha" in str(err.value)
        with pytest.raises(zq.UnknownQueue):
            await c.queue_info("rev")  # nothing was created


async def test_dispatch_plugin_from_an_installed_distribution(broker_factory: Factory,
                                                              tmp_path: Path) -> None:
    # One message per DELIVER frame: round-robin would alternate between the two.
    broker = await broker_factory("--storage", "memory", "--max-batch", "1",
                                  "--dispatch", "pin-first", env=install_plugin(tmp_path))
    async with zq.Client(broker.endpoint, name="first") as c1, \
            zq.Client(broker.endpoint, name="second") as c2, \
            zq.Client(broker.endpoint, name="producer") as p, \
            c1.consume("pinned", prefetch=50) as first:
        await c1.sync()  # subscribed before the second one
        async with c2.consume("pinned", prefetch=50) as second:
            await c2.sync()
            ids = await p.publish_many("pinned", [b"%d" % i for i in range(50)])
            got = [await first.get(timeout=5) for _ in range(50)]
            assert [m.id for m in got] == ids
            assert second.received == 0
            for m in got:
                await m.ack()
