"""``zq cluster status | check | reload`` against real brokers and a router."""

from __future__ import annotations

import json
from pathlib import Path

import zq
from tests.cluster_helpers import (
    ports_of,
    start_cluster_broker,
    start_router,
    write_cluster,
    zq_cli,
)
from tests.helpers import eventually
from tests.procs import Proc, zq_argv
from zq.cluster import load, place


async def test_status_check_and_reload(tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    eps = write_cluster(file, ["b1", "b2"])
    b1 = await start_cluster_broker(tmp_path, file, "b1")
    b2 = await start_cluster_broker(tmp_path, file, "b2")
    router = await start_router(tmp_path, file)
    procs: list[Proc] = [router, b1, b2]
    try:
        async with zq.Client(router.endpoint) as c:
            await c.publish("status-q", b"x")
        rc, out = await zq_cli("cluster", "status", "--cluster", str(file), "--router",
                               router.endpoint)
        assert rc == 0, out
        assert "broker b1" in out
        assert "broker b2" in out
        assert "DOWN" not in out
        rc, out = await zq_cli("cluster", "status", "--cluster", str(file), "--router",
                               router.endpoint, "--json")
        doc = json.loads(out)
        links = doc["nodes"][f"router {router.endpoint}"]["links"]
        assert {b: links[b]["state"] for b in ("b1", "b2")} == {"b1": "up", "b2": "up"}
        rc, out = await zq_cli("cluster", "check", "--cluster", str(file))
        assert rc == 0, out
        assert "0 conflict(s)" in out

        await b2.kill()  # down: status says so, the router's link too; check fails

        async def b2_down() -> bool:
            _, text = await zq_cli("cluster", "status", "--cluster", str(file), "--router",
                                   router.endpoint, "--json", "--timeout", "0.5")
            d = json.loads(text)
            return ("error" in d["nodes"]["b2"]
                    and d["nodes"][f"router {router.endpoint}"]["links"]["b2"]["state"]
                    != "up")

        await eventually(b2_down, "status to show b2 down", 10, 0.2)
        rc, out = await zq_cli("cluster", "check", "--cluster", str(file), "--timeout", "0.5")
        assert rc == 1
        assert "DOWN b2" in out

        # Version 2 adds b3 (not running): brokers and the router take it; b3 cannot be
        # reached, so reload exits 1 and says so.
        b2 = await start_cluster_broker(tmp_path, file, "b2")
        procs.append(b2)
        write_cluster(file, ["b1", "b2", "b3"], version=2, ports=ports_of(eps))
        rc, out = await zq_cli("cluster", "reload", "--cluster", str(file), "--router",
                               router.endpoint, "--timeout", "0.5")
        assert rc == 1, out
        for node in ("b1:", "b2:", f"router {router.endpoint}:"):
            line = next(ln for ln in out.splitlines() if ln.startswith(node))
            assert "version 2" in line, out
        assert any(ln.startswith("b3:") for ln in out.splitlines())
    finally:
        for p in procs:
            await p.kill()


async def test_check_reports_a_queue_held_by_two_brokers(tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    eps = write_cluster(file, ["b1", "b2"])
    cfg = load(file)
    name = next(n for n in (f"dup-{i}" for i in range(100)) if place(n, cfg) == "b1")
    # b2's folder gets the queue while b2 runs alone, before it joins the cluster.
    argv = zq_argv("broker", "--bind", eps["b2"], "--data", str(tmp_path / "data-b2"))
    alone = await Proc.start(argv, tmp_path / "alone.log")
    await alone.ready_line()
    async with zq.Client(eps["b2"]) as c:
        await c.publish(name, b"old")
    await alone.terminate_and_expect_exit(0)
    b1 = await start_cluster_broker(tmp_path, file, "b1")
    b2 = await start_cluster_broker(tmp_path, file, "b2")
    try:
        async with zq.Client(eps["b1"]) as c:
            await c.publish(name, b"new")  # placed on b1: made there too
        rc, out = await zq_cli("cluster", "check", "--cluster", str(file))
        assert rc == 1, out
        assert f"QUEUE_CONFLICT {name}: held by b1, b2" in out
    finally:
        await b1.kill()
        await b2.kill()
