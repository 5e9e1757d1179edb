"""Issue 14, acceptance 2: an edge broker's uplink through outages, real processes.

The centre is two brokers and a router; the edge broker forwards ``edge.#`` to the
router through a TCP relay the test controls. A producer publishes at the edge (batches
of several bodies, and single messages with options) while the relay cuts the link
three times (bytes dropped, held, dropped) and the edge broker is SIGKILLed once
mid-stream and restarted on its data folder. Consumers take everything from the centre
as it arrives. It proves:

* lost = 0: every message the edge confirmed reaches the centre's consumers;
* stored duplicates = 0: the centre stored each message once (its brokers' ``published``
  counters sum to the distinct messages), and delivered duplicates = 0;
* a message the edge did not confirm (its publish failed while the edge was down) is
  at the centre at most once;
* the edge holds none afterwards (its uplink backlog is 0, and its database file has no
  message of a forwarded queue), and it counted resent frames after the kill and cuts;
* while cut, the edge's STATS show the uplink not up and a backlog growing.

Default: 6,000 messages and cuts of 3 s; full size (20,000 messages, 10 s cuts) under
``-m slow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

import zq
from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
from tests.helpers import eventually, free_port
from tests.procs import Proc, zq_argv
from tests.tcp_relay import TcpRelay
from zq.cluster import load, place

QUEUES = ("edge.a", "edge.b", "edge.c", "edge.d")
BATCH = 10  # bodies per PUBLISH frame at the edge (one run each)


@dataclass(frozen=True)
class Size:
    messages: int
    cut_s: float
    rate: float  # messages per second the producer aims at


REDUCED = Size(messages=6_000, cut_s=3.0, rate=600.0)
FULL = Size(messages=20_000, cut_s=10.0, rate=500.0)
CUTS: tuple[Literal["drop", "hold"], ...] = ("drop", "hold", "drop")


@dataclass
class Outcomes:
    confirmed: set[bytes] = field(default_factory=set)
    failed: set[bytes] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0


class Edge:
    """The edge broker on a fixed port and data folder, restartable."""

    def __init__(self, tmp: Path, uplink: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.centre = uplink
        self.proc: Proc | None = None
        self.starts = 0

    async def start(self) -> None:
        argv = zq_argv("--log-level", "info", "broker", "--bind", self.endpoint, "--data",
                       str(self.tmp / "edge-data"), "--heartbeat", "0.2", "--uplink",
                       self.centre, "--uplink-queues", "edge.#")
        self.proc = await Proc.start(argv, self.tmp / f"edge-{self.starts}.log")
        self.starts += 1
        await self.proc.ready_line()

    async def stats(self) -> dict[str, Any]:
        async with zq.Client(self.endpoint, connect_timeout=5.0) as c:
            return await c.stats()

    async def uplink(self) -> dict[str, Any]:
        st: dict[str, Any] = (await self.stats())["uplink"]
        return st


async def produce(edge: Edge, size: Size, out: Outcomes, stop: asyncio.Event) -> None:
    """Paced frames of BATCH bodies round the queues, and every tenth a single message
    with options; a publish that fails is recorded, not repeated."""
    async with zq.Client(edge.endpoint, connect_timeout=8.0) as c:
        t0, n, i = time.monotonic(), 0, 0
        while n < size.messages and not stop.is_set():
            q = QUEUES[i // 3 % len(QUEUES)]  # three frames in a row per queue: runs that
            i += 1  # follow each other, which must not merge into one after the kill
            if i % 10 == 0:
                bodies = [f"m{n:06d}".encode()]
                job = c.publish(q, bodies[0], priority=5, tenant="t1", ttl=600.0,
                                headers={"k": n})
            else:
                k = min(BATCH, size.messages - n)
                bodies = [f"m{j:06d}".encode() for j in range(n, n + k)]
                job = c.publish_many(q, bodies)
            out.sent += len(bodies)
            n += len(bodies)
            try:
                await job
                out.confirmed.update(bodies)
            except (zq.ZqError, TimeoutError) as exc:
                out.errors[type(exc).__name__] += 1
                out.failed.update(bodies)
            ahead = t0 + n / size.rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)


async def consume(router: str, got: list[bytes], stop: asyncio.Event) -> None:
    async with zq.Client(router, connect_timeout=10.0) as c:
        async def one(q: str) -> None:
            async with c.consume(q, prefetch=500) as consumer:
                async for m in consumer:
                    got.append(m.body)
                    await m.ack()
        tasks = [asyncio.create_task(one(q)) for q in QUEUES]
        await stop.wait()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, zq.ZqError):
                await t


async def centre_published(brokers: dict[str, str]) -> tuple[int, int]:
    """Messages the centre's brokers stored in the forwarded queues (each broker's own),
    and the frames they confirmed as resends (not stored again)."""
    total = resent = 0
    for ep in brokers.values():
        async with zq.Client(ep, connect_timeout=5.0) as c:
            st = await c.stats()
        total += sum(v["published"] for k, v in st["queues"].items() if k in QUEUES)
        resent += st["counters"]["resent"]
    return total, resent


@pytest.mark.parametrize("size", [REDUCED, pytest.param(FULL, marks=pytest.mark.slow)],
                         ids=["reduced", "full"])
@pytest.mark.timeout(600)
async def test_uplink_through_cuts_and_a_kill_loses_nothing_and_doubles_nothing(
        tmp_path: Path, size: Size) -> None:
    cluster = tmp_path / "cluster.toml"
    brokers = write_cluster(cluster, ["b1", "b2"])
    owners = {place(q, load(cluster)) for q in QUEUES}
    assert owners == {"b1", "b2"}, f"the queues should live on both brokers: {owners}"
    procs: list[Proc] = []
    relay: TcpRelay | None = None
    edge: Edge | None = None
    stop_p, stop_c = asyncio.Event(), asyncio.Event()
    out, got = Outcomes(), []
    passed = False
    try:
        for b in brokers:
            procs.append(await start_cluster_broker(tmp_path, cluster, b))
        router = await start_router(tmp_path, cluster)
        procs.append(router)
        relay = await TcpRelay(int(router.endpoint.rsplit(":", 1)[1])).start()
        edge = Edge(tmp_path, relay.endpoint)
        await edge.start()
        consumer = asyncio.create_task(consume(router.endpoint, got, stop_c))
        producer = asyncio.create_task(produce(edge, size, out, stop_p))
        third = size.messages // 4

        async def confirmed_past(n: int) -> bool:
            return len(out.confirmed) >= n or producer.done()

        for k, mode in enumerate(CUTS):
            await eventually(lambda n=(k + 1) * third: confirmed_past(n),
                             "the producer to get on", 120, 0.05)
            forwarded = (await edge.uplink())["confirmed"]
            relay.cut(mode)
            cut_at = time.monotonic()
            await eventually(lambda: _down(edge), "the edge to see the link down", 30, 0.1)
            before = await edge.uplink()
            await asyncio.sleep(max(0.0, size.cut_s - (time.monotonic() - cut_at)))
            during = await edge.uplink()
            assert during["state"] != "up", during
            assert during["backlog"] >= before["backlog"], (before, during)
            relay.heal()
            await eventually(lambda f=forwarded: _forwarding(edge, f), "forwarding again",
                             60, 0.1)
            if k == 0:  # once, mid-stream: SIGKILL the edge and start it on its data
                await kill_with_frames_in_flight(edge, procs[:2])
        await producer
        await eventually(lambda: _drained(edge), "the edge to hold nothing", 120, 0.1)
        up = await edge.uplink()
        assert up["frames_resent"] > 0 or up["sessions"] > 1, up
        await eventually(lambda: out.confirmed <= set(got), "every confirmed message "
                         "consumed at the centre", 120, 0.1)
        stored, resends = await centre_published(brokers)
        stop_c.set()
        await consumer
        counts = Counter(got)
        doubled = [b for b, n in counts.items() if n > 1]
        lost = out.confirmed - set(got)
        strays = set(got) - out.confirmed - out.failed
        print(f"uplink: sent {out.sent}, confirmed {len(out.confirmed)}, failed "
              f"{len(out.failed)} {dict(out.errors)}, stored at the centre {stored} "
              f"(and {resends} frames confirmed as resends), "
              f"consumed {len(got)} ({len(counts)} distinct); edge {up}")
        assert not lost, f"{len(lost)} confirmed messages lost, e.g. {sorted(lost)[:5]}"
        assert not doubled, f"{len(doubled)} delivered twice, e.g. {doubled[:5]}"
        assert not strays, f"messages nobody published: {sorted(strays)[:5]}"
        assert stored == len(counts), f"the centre stored {stored} for {len(counts)} messages"
        assert resends > 0, "no frame was sent again after the kill: the test missed its case"
        assert len(out.confirmed) >= size.messages * 0.9, "too few publishes got through"
        passed = True
    finally:
        stop_p.set()
        stop_c.set()
        if not passed:  # the failure says what went wrong: stop everything, quickly
            for p in [*procs, *([edge.proc] if edge is not None and edge.proc else [])]:
                await p.kill()
            if relay is not None:
                await relay.close()
    assert edge is not None
    assert edge.proc is not None
    assert relay is not None
    await edge.proc.terminate_and_expect_exit(0, within=15)
    await relay.close()
    for p in reversed(procs):
        await p.terminate_and_expect_exit(0, within=15)
    _edge_db_empty(tmp_path / "edge-data")


async def kill_with_frames_in_flight(edge: Edge, brokers: list[Proc]) -> None:
    """SIGKILL the edge while frames it sent are unconfirmed, and let the centre store
    them after it died: the centre's brokers are stopped (SIGSTOP) until the edge has
    frames in flight, then the edge is killed, the brokers go on (storing those frames,
    whose confirms find nobody), and the edge starts again on its data folder. Its
    frames sent again are then resends at the centre (counted ``resent`` there)."""
    assert edge.proc is not None
    for b in brokers:
        b.signal(signal.SIGSTOP)
    try:
        await eventually(lambda: _in_flight(edge), "frames in flight", 10, 0.01)
        await edge.proc.kill()
    finally:
        for b in brokers:
            b.signal(signal.SIGCONT)
    await edge.start()


async def _in_flight(edge: Edge) -> bool:
    return bool((await edge.uplink())["in_flight_frames"] > 0)


async def _down(edge: Edge) -> bool:
    return bool((await edge.uplink())["state"] != "up")


async def _forwarding(edge: Edge, before: int) -> bool:
    up = await edge.uplink()
    return bool(up["state"] == "up" and (up["confirmed"] > before or up["backlog"] == 0))


async def _drained(edge: Edge) -> bool:
    st = await edge.stats()
    left = sum(v["ready"] + v["delayed"] + v["in_flight"] for k, v in st["queues"].items()
               if k in QUEUES)
    return bool(st["uplink"]["backlog"] == 0 and left == 0)


def _edge_db_empty(data: Path) -> None:
    """After the edge stopped: its database holds no message of a forwarded queue."""
    db = sqlite3.connect(data / "zq.db")
    try:
        rows = db.execute("SELECT q.name, count(*) FROM messages m JOIN queues q "
                          "ON q.qid = m.qid GROUP BY q.name").fetchall()
    finally:
        db.close()
    left = {name: n for name, n in rows if name in QUEUES and n}
    assert not left, f"the edge still stores {left}"
