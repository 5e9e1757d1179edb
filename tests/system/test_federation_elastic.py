"""A fourth broker joins at runtime (issue 12, acceptance 5), real processes.

The cluster file gains b4 (version 2); `zq cluster reload` hands it to the brokers and
to one router only, so the other router still places with version 1. Of 1,000 new
names 25 % +- 4 points land on b4; no existing queue changes owner; both routers
create the same 200 new queues at once, the old one recovering through STALE_CONFIG,
and every one of those queues ends on exactly one broker.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import zq
from tests.cluster_helpers import (
    ports_of,
    start_cluster_broker,
    start_router,
    write_cluster,
)
from tests.helpers import free_port
from tests.procs import ROOT, Proc, zq_argv
from zq.cluster import load, place


def queues_of(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {str(n) for (n,) in conn.execute("SELECT name FROM queues")}


async def test_a_broker_added_at_runtime_takes_its_share_of_new_names(tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    eps = write_cluster(file, ["b1", "b2", "b3"])
    procs: list[Proc] = []
    try:
        for b in ("b1", "b2", "b3"):
            procs.append(await start_cluster_broker(tmp_path, file, b))
        r1 = await start_router(tmp_path, file, router_id="r1")
        r2 = await start_router(tmp_path, file, router_id="r2")
        procs += [r1, r2]
        old = [f"old-{i}" for i in range(100)]
        async with zq.Client(r1.endpoint) as c:
            await asyncio.gather(*(c.publish(q, b"x") for q in old))
            before = {q: (await c.locate(q))["broker"] for q in old}
        # Version 2 adds b4, which starts on it; brokers and r1 take it, r2 does not.
        ports = {**ports_of(eps), "b4": free_port()}
        write_cluster(file, ["b1", "b2", "b3", "b4"], version=2, ports=ports)
        procs.append(await start_cluster_broker(tmp_path, file, "b4"))
        reload = await asyncio.create_subprocess_exec(
            *zq_argv("cluster", "reload", "--cluster", str(file), "--router", r1.endpoint),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(ROOT))
        out, _ = await asyncio.wait_for(reload.communicate(), 30)
        assert reload.returncode == 0, out.decode()
        cfg2 = load(file)
        async with zq.Client(r1.endpoint) as c1, zq.Client(r2.endpoint) as c2:
            assert (await c1.stats())["cluster"]["version"] == 2
            assert (await c2.stats())["cluster"]["version"] == 1
            names = [f"new-{i}" for i in range(1000)]
            locs = await asyncio.gather(*(c1.locate(n) for n in names))
            share = Counter(loc["broker"] for loc in locs)
            assert abs(share["b4"] / len(names) - 0.25) <= 0.04, share
            after = {q: (await c1.locate(q))["broker"] for q in old}
            assert after == before, "an existing queue changed owner"
            both = names[:200]  # created through both routers at once
            ids1, ids2 = await asyncio.gather(
                asyncio.gather(*(c1.publish(q, b"via r1") for q in both)),
                asyncio.gather(*(c2.publish(q, b"via r2") for q in both)))
            assert len(ids1) == len(ids2) == 200
            assert (await c2.stats())["cluster"]["version"] == 2  # it took the newer file
        holders: Counter[str] = Counter()
        for b in ("b1", "b2", "b3", "b4"):
            for q in queues_of(tmp_path / f"data-{b}" / "zq.db"):
                holders[q] += 1
                if q in both:
                    assert place(q, cfg2) == b, f"{q} created on {b}"
        assert all(holders[q] == 1 for q in both), [q for q in both if holders[q] != 1]
        assert all(holders[q] == 1 for q in old)
    finally:
        for p in procs:
            await p.kill()
