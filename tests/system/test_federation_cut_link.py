"""A cut router-broker link, real processes (issue 12, acceptance 3).

Three brokers and a router; the router reaches broker b1 through a TCP relay that the
test controls (its cluster file names the relay as b1's endpoint; b1 binds its real
port, which brokers, consumers and ``zq cluster`` use). Two producers publish through
the router at a fixed rate to two queues on each broker, while the relay blackholes
the router-b1 link three times for 5 s (under ``-m slow``; twice by default): bytes
discarded (twice) or held until the heal (once, what TCP makes of a few seconds of
dropped packets). It proves:

* every publish ends as a CONFIRM or as UNAVAILABLE or a timeout, nothing else;
* a confirm is the broker's commit: each confirmed message is in its broker's
  database file (read after SIGTERM) under the id it was confirmed with;
* lost = 0 (every confirmed message is delivered, consumed from each broker directly),
  stored duplicates = 0, delivered duplicates = 0, and a message stored without a
  confirm is one whose publish ended in UNAVAILABLE or a timeout (it may have been
  stored before the cut with its CONFIRM lost in it);
* the queues on b2 and b3 keep >= 90 % of their throughput during each cut;
* ``zq cluster status`` shows the router's link to b1 not up while it is cut (b1
  itself up), and b1's queues are confirmed again soon after each heal.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

import zq
from tests.cluster_helpers import (
    ports_of,
    start_cluster_broker,
    start_router,
    write_cluster,
    zq_cli,
)
from tests.helpers import eventually
from tests.procs import Proc
from tests.tcp_relay import TcpRelay
from zq.cluster import load, place

IDS = ("b1", "b2", "b3")
HEARTBEAT = 0.2  # liveness 3: a silent link is lost after 0.6 s
CUT_S = 5.0
Cuts = tuple[Literal["drop", "hold"], ...]
CUTS: Cuts = ("drop", "hold", "drop")  # the full run (-m slow); by default the first two
PRODUCERS = 2
BATCH = 5  # messages per PUBLISH
PERIOD = 0.05  # seconds between the PUBLISH frames of one producer to one queue
PUBLISH_TIMEOUT = 10.0


@dataclass
class Outcomes:
    """What became of each message (by body), and when queues got their confirms."""

    confirmed: dict[bytes, int] = field(default_factory=dict)
    unavailable: set[bytes] = field(default_factory=set)
    timed_out: set[bytes] = field(default_factory=set)
    other: list[str] = field(default_factory=list)
    confirms: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # q: (t, n)
    refusals: dict[str, list[float]] = field(default_factory=dict)  # q: t of UNAVAILABLE

    def count(self, queues: list[str], t0: float, t1: float) -> int:
        return sum(n for q in queues for t, n in self.confirms.get(q, ()) if t0 <= t < t1)


class Net:
    """Brokers on their cluster file, a router on another that reaches b1 via a relay."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.file = tmp / "cluster.toml"  # the brokers', and zq cluster's
        self.router_file = tmp / "router-cluster.toml"
        self.endpoints = write_cluster(self.file, list(IDS))
        self.relay = TcpRelay(ports_of(self.endpoints)["b1"])
        self.brokers: dict[str, Proc] = {}
        self.router: Proc | None = None

    async def start(self) -> None:
        await self.relay.start()
        write_cluster(self.router_file, list(IDS),
                      ports={**ports_of(self.endpoints), "b1": self.relay.port})
        await self.start_brokers()
        self.router = await start_router(self.tmp, self.router_file,
                                         heartbeat=str(HEARTBEAT))

    async def start_brokers(self) -> None:
        procs = await asyncio.gather(*(start_cluster_broker(
            self.tmp, self.file, b, heartbeat=str(HEARTBEAT)) for b in IDS))
        self.brokers = dict(zip(IDS, procs, strict=True))

    def rows(self) -> dict[str, list[tuple[str, int, bytes]]]:
        """Each broker's stored messages (queue, id, body), read from its file."""
        out = {}
        for b in IDS:
            db = self.tmp / f"data-{b}" / "zq.db"
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                out[b] = [(str(q), int(i), bytes(body)) for q, i, body in conn.execute(
                    "SELECT q.name, m.id, m.body FROM messages m JOIN queues q USING (qid)")]
        return out

    async def close(self) -> None:
        for p in [*([self.router] if self.router else []), *self.brokers.values()]:
            await p.kill()
        await self.relay.close()


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    n = Net(tmp_path)
    try:
        await n.start()
        yield n
    finally:
        await n.close()


async def _produce(client: zq.Client, k: int, queue: str, out: Outcomes,
                   stop: asyncio.Event) -> None:
    """PUBLISH frames of BATCH messages to ``queue`` every PERIOD, each awaited; a slot
    missed by more than one period is skipped, not made up for by a burst."""
    loop = asyncio.get_running_loop()
    n = 0
    due = loop.time()
    while not stop.is_set():
        bodies = [f"{queue}/{k}/{i}".encode() for i in range(n, n + BATCH)]
        n += BATCH
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                ids = await client.publish_many(queue, bodies)
        except zq.Unavailable:
            out.unavailable.update(bodies)
            out.refusals.setdefault(queue, []).append(loop.time())
        except TimeoutError:
            out.timed_out.update(bodies)
        except zq.ZqError as exc:
            out.other.append(f"{queue}: {type(exc).__name__}: {exc}")
        else:
            out.confirmed.update(zip(bodies, ids, strict=True))
            out.confirms.setdefault(queue, []).append((loop.time(), len(ids)))
        due += PERIOD
        now = loop.time()
        if due < now - PERIOD:
            due = now
        await asyncio.sleep(due - now)  # the fixed rate


async def _link_shown_down(net: Net) -> bool:
    """``zq cluster status --json``: the router's link to b1 not up, b1 itself up."""
    assert net.router is not None
    rc, text = await zq_cli("cluster", "status", "--cluster", str(net.file), "--router",
                            net.router.endpoint, "--json", "--timeout", "1")
    assert rc == 0, text
    nodes = json.loads(text)["nodes"]
    link = nodes[f"router {net.router.endpoint}"]["links"]["b1"]
    return "error" not in nodes["b1"] and link["state"] != "up"


async def _first_confirm_after(out: Outcomes, queues: list[str], t: float) -> float:
    """Seconds from ``t`` to the first confirm for one of ``queues`` after it."""

    def after() -> list[float]:
        return [ct for q in queues for ct, _ in out.confirms.get(q, ()) if ct > t]

    await eventually(lambda: bool(after()), "a confirm from b1 after the heal", 15, 0.01)
    return min(after()) - t


@pytest.mark.parametrize("cuts", [CUTS[:2], pytest.param(CUTS, marks=pytest.mark.slow)],
                         ids=["reduced", "full"])
async def test_cut_link_loses_nothing_and_spares_the_other_brokers(net: Net,
                                                                   cuts: Cuts) -> None:
    assert net.router is not None
    cfg = load(net.file)
    names = (f"cut-{i}" for i in range(1000))
    by_broker: dict[str, list[str]] = {b: [] for b in IDS}
    for q in names:
        if len(by_broker[place(q, cfg)]) < 2:
            by_broker[place(q, cfg)].append(q)
    queues = [q for b in IDS for q in by_broker[b]]
    others = by_broker["b2"] + by_broker["b3"]
    loop = asyncio.get_running_loop()
    out = Outcomes()
    stop = asyncio.Event()
    clients = [zq.Client(net.router.endpoint, name=f"producer-{k}") for k in range(PRODUCERS)]
    for c in clients:
        await c.connect()
    producing = asyncio.gather(*(_produce(c, k, q, out, stop)
                                 for k, c in enumerate(clients) for q in queues))
    windows: list[tuple[float, float]] = []
    healed: list[float] = []
    refused: list[float] = []
    shown: list[bool] = []
    try:
        t_start = loop.time()
        await asyncio.sleep(3.0)  # the baseline, at the fixed rate
        for mode in cuts:
            t_cut = loop.time()
            net.relay.cut(mode)
            # While it is cut, zq cluster status (the real CLI) shows the link down.
            shown.append(await _wait_shown(net, t_cut + CUT_S - 0.3))
            await asyncio.sleep(t_cut + CUT_S - loop.time())
            net.relay.heal()
            t_heal = loop.time()
            windows.append((t_cut, t_heal))
            healed.append(await _first_confirm_after(out, by_broker["b1"], t_heal))
            refused.append(min((t for q in by_broker["b1"] for t in out.refusals.get(q, ())
                                if t > t_cut), default=math.inf) - t_cut)
            await asyncio.sleep(t_heal + 2.0 - loop.time())  # flowing again, between cuts
        t_end = loop.time()
        stop.set()
        async with asyncio.timeout(PUBLISH_TIMEOUT + 5):
            await producing
    finally:
        stop.set()
        producing.cancel()
        for c in clients:
            await c.close()
    assert not out.other, f"publishes that ended otherwise: {out.other[:5]}"
    assert all(shown), f"zq cluster status showed the cut link down in {shown}"

    # Throughput of b2's and b3's queues: each cut against the time outside the cuts.
    outside = sum(b - a for a, b in _gaps(t_start + 1.0, t_end, windows))
    base = sum(out.count(others, a, b) for a, b in _gaps(t_start + 1.0, t_end, windows))
    base_rate = base / outside
    ratios = [out.count(others, a, b) / (b - a) / base_rate for a, b in windows]
    offered = len(others) * PRODUCERS * BATCH / PERIOD
    print(f"\ncut link: b2+b3 {base_rate:.0f} msg/s outside the cuts (offered {offered:.0f}),"
          f" during the cuts {[f'{r:.1%}' for r in ratios]}; b1: first UNAVAILABLE after "
          f"{[f'{r:.2f} s' for r in refused]}, first confirm after the heal "
          f"{[f'{h:.2f} s' for h in healed]}; relay dropped {net.relay.dropped} B; "
          f"confirmed {len(out.confirmed)}, unavailable {len(out.unavailable)}, "
          f"timed out {len(out.timed_out)}")
    assert base_rate >= 0.8 * offered, "the cluster did not keep up with the fixed rate"
    assert min(ratios) >= 0.9, ratios
    assert max(healed) <= 5.0, healed
    assert max(refused) < CUT_S, f"b1's queues were not refused during each cut: {refused}"

    # Every confirm is a commit: stored, on disk, under the id it was confirmed with.
    await _stop(net)
    rows = net.rows()
    stored: Counter[bytes] = Counter()
    ids: dict[bytes, int] = {}
    for b, found in rows.items():
        for q, mid, body in found:
            assert place(q, cfg) == b, f"{q} has rows on {b}"
            stored[body] += 1
            ids[body] = mid
    dups = [b for b, n in stored.items() if n > 1]
    assert not dups, f"{len(dups)} stored twice, e.g. {dups[:3]}"
    lost = [b for b in out.confirmed if b not in stored]
    assert not lost, f"{len(lost)} confirmed and not stored, e.g. {lost[:3]}"
    wrong = [b for b, mid in out.confirmed.items() if ids[b] != mid]
    assert not wrong, f"{len(wrong)} confirmed with another id than stored: {wrong[:3]}"
    unknown = out.unavailable | out.timed_out
    strangers = [b for b in stored if b not in out.confirmed and b not in unknown]
    assert not strangers, f"{len(strangers)} stored and never published: {strangers[:3]}"
    print(f"cut link: stored without a confirm (their publish ended UNAVAILABLE or timed "
          f"out) {sum(1 for b in stored if b not in out.confirmed)}")

    # Consumed from each broker directly: everything stored, once.
    await net.start_brokers()
    got = await _drain(net, {b: Counter(q for q, _, _ in found) for b, found in rows.items()})
    assert set(got) == set(stored), "lost or unexpected deliveries"
    assert max(got.values()) == 1, "a message delivered twice"
    for p in net.brokers.values():
        await p.terminate_and_expect_exit(0)


async def _wait_shown(net: Net, deadline: float) -> bool:
    """Whether zq cluster status shows the link down before ``deadline``."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        if await _link_shown_down(net):
            return True
    return False


def _gaps(t0: float, t1: float, windows: list[tuple[float, float]]
          ) -> list[tuple[float, float]]:
    """The spans of [t0, t1) outside ``windows`` (sorted, disjoint)."""
    out, at = [], t0
    for a, b in windows:
        out.append((at, a))
        at = b
    out.append((at, t1))
    return [(a, b) for a, b in out if b > a]


async def _stop(net: Net) -> None:
    """Router and brokers stopped by SIGTERM, each exiting 0."""
    assert net.router is not None
    await net.router.terminate_and_expect_exit(0)
    for p in net.brokers.values():
        await p.terminate_and_expect_exit(0)


async def _drain(net: Net, counts: dict[str, Counter[str]]) -> Counter[bytes]:
    got: Counter[bytes] = Counter()

    async def one(b: str, q: str, n: int) -> None:
        async with zq.Client(net.endpoints[b], name=f"drain-{b}") as c, \
                c.consume(q, prefetch=500) as consumer:
            for _ in range(n):
                m = await consumer.get(timeout=10)
                got[m.body] += 1
                await m.ack()

    async with asyncio.timeout(60):
        await asyncio.gather(*(one(b, q, n) for b, per in counts.items()
                               for q, n in per.items()))
    return got


async def test_a_link_whose_connection_died_silently_is_dialed_again(net: Net) -> None:
    """The relay forgets the link's connection, as a firewall that lost its state: its
    bytes and its close are dropped for good, and neither end is told. The router
    finds the link silent, says HELLO in vain, and opens a new connection, which
    passes: b1's queues are served again within two silence limits and a second."""
    assert net.router is not None
    cfg = load(net.file)
    q = next(n for n in (f"dead-{i}" for i in range(200)) if place(n, cfg) == "b1")
    loop = asyncio.get_running_loop()
    async with zq.Client(net.router.endpoint, name="producer") as c:
        await c.publish(q, b"before")
        net.relay.forget()
        t0 = loop.time()
        outcomes: Counter[str] = Counter()

        async def served() -> bool:
            try:
                async with asyncio.timeout(2):
                    await c.publish(q, b"after")
            except (zq.Unavailable, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1
                return False
            return True

        await eventually(served, "b1's queue served through a new connection", 10, 0.05)
        took = loop.time() - t0
        stats = await c.stats()
    print(f"\nforgotten connection: served again after {took:.2f} s ({dict(outcomes)})")
    assert took <= 2 * HEARTBEAT * 3 + 1.0, f"{took:.2f} s ({outcomes})"
    assert stats["counters"]["links_renewed"] >= 1, stats["counters"]
    await _stop(net)
    stored = Counter(body for _, _, body in net.rows()["b1"])
    assert stored[b"before"] == 1
    assert stored[b"after"] >= 1
