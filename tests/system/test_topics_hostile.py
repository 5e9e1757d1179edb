"""Topics and broadcast tasks (issue 17) under hostile conditions, real processes.

An independent review's tests: each starts real brokers and workers on loopback and
tries to lose, double or orphan a topic's copies, their shared bodies, or a broadcast
worker's binding.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path
from typing import Any

import zq
from tests.helpers import eventually, free_port
from tests.procs import Proc, start_broker, zq_argv
from tests.system.apps._record import read
from tests.system.test_workers import start_worker

SPEC = "tests.system.apps.broadcast:app"


def rows(tmp: Path, sql: str) -> list[Any]:
    """Rows of ``sql`` on the broker's database (read directly, WAL included)."""
    conn = sqlite3.connect(tmp / "data" / "zq.db")
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


async def start_at(tmp: Path, port: int, *args: str) -> Proc:
    """A broker on a fixed loopback port (so that clients find it again after a kill)."""
    n = len(list(tmp.glob("broker*.log")))
    proc = await Proc.start(zq_argv("--log-level", "info", "broker", "--bind",
                                    f"tcp://127.0.0.1:{port}", "--data", str(tmp / "data"),
                                    *args), tmp / f"broker{n}.log")
    await proc.ready_line(30)
    return proc


async def bindings(c: zq.Client, topic: str) -> list[str]:
    for t in await c.topics():
        if t["topic"] == topic:
            return sorted(b["queue"] for b in t["bindings"])
    return []


# ------------------------------------------------------------- broadcast: a paused worker


async def test_a_broadcast_worker_paused_past_its_idle_ttl_gets_calls_again_when_resumed(
        tmp_path: Path) -> None:
    """A worker SIGSTOPped long enough for the broker to drop it and delete its queue
    (idle TTL) comes back on SIGCONT and reconnects: it must be bound again (and its
    queue must have the idle TTL again), not consume a fresh unbound queue forever."""
    from tests.system.apps.broadcast import app, reload_config

    broker = await start_broker(tmp_path, "--heartbeat", "0.3", "--liveness", "3")
    procs: list[Proc] = []
    app.endpoint = broker.endpoint
    log = tmp_path / "broadcast.jsonl"
    env = {"ZQ_WORKER_BROADCAST_IDLE_TTL": "1"}
    try:
        a = await start_worker(procs, tmp_path, SPEC, endpoint=broker.endpoint, env=env)
        b = await start_worker(procs, tmp_path, SPEC, endpoint=broker.endpoint, env=env)
        async with zq.Client(broker.endpoint) as c:
            topic = app.broadcast_topics()[0]
            await eventually(lambda: _count(c, topic, 2), "two bindings", 10, 0.1)
            before = await bindings(c, topic)
            b.signal(signal.SIGSTOP)
            await eventually(lambda: _count(c, topic, 1), "the paused worker's queue to go",
                             20, 0.2)
            b.signal(signal.SIGCONT)

            async def b_back() -> bool:  # its consumer is back at the broker
                s = await c.stats()
                return sum(1 for p in s["peers"].values()
                           if any(q in before for q in p["subs"])) >= 2

            await eventually(b_back, "the resumed worker to reconnect", 20, 0.2)
            # ... and to bind its queue again (calls before that are not its own)
            await eventually(lambda: _count(c, topic, 2), "two bindings again", 20, 0.1)
            for q in await bindings(c, topic):  # the idle TTL again, on both
                assert (await c.queue_info(q))["settings"]["idle_ttl"] == 1.0, q
            await reload_config.delay(1)
            await eventually(lambda: sum(1 for r in read(log) if r["n"] == 1) >= 1,
                             "the call on the running worker", 20, 0.05)
            # The resumed worker must run it too: give it a fair while, then look.
            try:
                await eventually(lambda: {r["pid"] for r in read(log) if r["n"] == 1}
                                 == {a.pid, b.pid}, "the call on both workers", 10, 0.1)
            except AssertionError:
                raise AssertionError(
                    f"the resumed worker {b.pid} is not bound again: bindings now "
                    f"{await bindings(c, topic)}, before {before}; runs "
                    f"{[r for r in read(log) if r['n'] == 1]}") from None
    finally:
        await app.close()
        for p in procs:
            p.signal(signal.SIGCONT)
            if p.proc.returncode is None:
                await p.terminate_and_expect_exit(0, within=20)
        await broker.terminate_and_expect_exit(0)


async def _count(c: zq.Client, topic: str, n: int) -> bool:
    return len(await bindings(c, topic)) == n


# ------------------------------------------------------------- fan-out size and memory


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_shared_bodies_stay_shared_in_memory_after_a_restart(tmp_path: Path) -> None:
    """300 queues bound to a topic, one publish of 50 bodies of 20 kB (1 MB): stored
    once on disk, and the live broker holds them once. After a restart the broker
    must not hold one copy of every body per queue (300 MB for 1 MB of bodies: a
    10 MB frame to 1,000 queues would be 10 GB, a broker that cannot start again)."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    broker = await start_at(tmp_path, port)
    try:
        async with zq.Client(endpoint) as c:
            await asyncio.gather(*(c.bind("big", f"q{i:03d}") for i in range(300)))
            bodies = [bytes([i]) * 20_000 for i in range(50)]
            await c.publish_many(None, bodies, topic="big", key="k")
            live = rss_mb(broker.pid)
        assert rows(tmp_path, "SELECT count(*) FROM bodies") == [(50,)]
        await broker.terminate_and_expect_exit(0, within=30)
        broker = await start_at(tmp_path, port)
        async with zq.Client(endpoint) as c:
            assert (await c.stats())["queues"]["q299"]["ready"] == 50
        after = rss_mb(broker.pid)
        assert after < live + 100, (f"broker RSS {after:.0f} MB after the restart, {live:.0f} "
                                    f"MB before: each queue's copy got a body of its own")
    finally:
        await broker.terminate_and_expect_exit(0, within=30)


async def test_one_topic_publish_cannot_stall_every_other_publish(tmp_path: Path) -> None:
    """1,000 bindings (the limit) and one PUBLISH of 3,000 one-byte bodies (the limit is
    10,000 a frame): 3 million rows in one transaction, 60 times --commit-max. Other
    clients' publishes to other queues must not wait many seconds behind it (with
    10,000 bodies: about 27 s, 2 GB of RSS, and 30 s to start again). Either the
    broker refuses a frame whose copies exceed what one commit takes (FRAME_TOO_LARGE,
    the SDK can split), or it does not hold everybody else up."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c, zq.Client(broker.endpoint) as other:
            await asyncio.gather(*(c.bind("big", f"q{i:04d}") for i in range(1000)))
            await other.publish("elsewhere", b"warm")
            worst = 0.0
            done = asyncio.Event()

            async def probe() -> None:
                nonlocal worst
                loop = asyncio.get_running_loop()
                while not done.is_set():
                    t0 = loop.time()
                    await other.publish("elsewhere", b"x")
                    worst = max(worst, loop.time() - t0)
                    await asyncio.sleep(0.05)

            task = asyncio.create_task(probe())
            await asyncio.sleep(0.3)
            with contextlib.suppress(zq.FrameTooLarge):  # refused: fine
                await c.publish_many(None, [b"x"] * 3000, topic="big", key="k")
            done.set()
            await asyncio.wait_for(task, 60)
            assert worst < 2.0, (f"a plain publish elsewhere waited {worst:.1f} s behind one "
                                 f"topic publish of 3 million copies")
    finally:
        await broker.terminate_and_expect_exit(0, within=30)


# ------------------------------------------------------------- shared bodies' refcount

# Each shared body's refs must equal the messages pointing at it, and no message may
# point at a body that is gone.
REFS_WRONG = ("SELECT b.id, b.refs, coalesce(m.n, 0) FROM bodies b LEFT JOIN (SELECT "
              "body_ref, count(*) n FROM messages WHERE body_ref IS NOT NULL GROUP BY "
              "body_ref) m ON m.body_ref = b.id WHERE coalesce(m.n, 0) != b.refs")
DANGLING = ("SELECT count(*) FROM messages m WHERE m.body_ref IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM bodies b WHERE b.id = m.body_ref)")


async def test_refcounts_hold_through_churn_and_a_kill_and_nothing_is_left(
        tmp_path: Path) -> None:
    """Four producers fan out to five queues while another client deletes, purges,
    unbinds and rebinds them and acks or dead-letters copies; the broker is SIGKILLed
    mid-run. Every shared body's refcount matches its messages, none dangles, and once
    every queue is purged the ``bodies`` table is empty (no disk leak)."""
    import random

    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    broker = await start_at(tmp_path, port)
    queues = [f"q{i}" for i in range(5)]
    rng = random.Random(17)
    try:
        async with zq.Client(endpoint, connect_timeout=15) as c, \
                zq.Client(endpoint, connect_timeout=15) as adm:
            for q in queues:
                await adm.bind("t", q)
            stop = asyncio.Event()
            published = asyncio.Event()
            count = 0

            async def produce() -> None:
                nonlocal count
                while not stop.is_set():
                    with contextlib.suppress(zq.ZqError):
                        await c.publish_many(None, [b"%d" % (count + j) for j in range(20)],
                                             topic="t", key="k")
                    count += 20
                    if count >= 4000:
                        published.set()

            async def churn() -> None:
                while not stop.is_set():
                    q, op = rng.choice(queues), rng.random()
                    try:
                        if op < 0.3:
                            await adm.delete_queue(q)
                            await adm.bind("t", q)
                        elif op < 0.6:
                            await adm.purge_queue(q)
                        elif op < 0.8:
                            await adm.unbind("t", q)
                            await adm.bind("t", q)
                        else:
                            async with adm.consume(q, prefetch=50) as con:
                                async with asyncio.timeout(0.3):
                                    async for m in con:
                                        await (m.ack() if rng.random() < 0.5
                                               else m.nack(requeue=False))
                    except (zq.ZqError, TimeoutError):
                        pass

            tasks = [asyncio.create_task(produce()) for _ in range(4)]
            tasks.append(asyncio.create_task(churn()))
            await asyncio.wait_for(published.wait(), 30)
            await broker.kill()
            broker = await start_at(tmp_path, port)
            published.clear()
            count = 0
            await asyncio.wait_for(published.wait(), 30)
            stop.set()
            await asyncio.gather(*tasks)
            assert rows(tmp_path, "SELECT count(*) FROM bodies")[0][0] > 0
            assert rows(tmp_path, REFS_WRONG) == []
            assert rows(tmp_path, DANGLING) == [(0,)]
            for q in (await adm.stats())["queues"]:
                await adm.purge_queue(q)
            assert rows(tmp_path, "SELECT count(*) FROM messages") == [(0,)]
            assert rows(tmp_path, "SELECT count(*) FROM bodies") == [(0,)]
    finally:
        await broker.terminate_and_expect_exit(0, within=15)
