"""``zq cluster rebalance --plan`` against real brokers (the real command line).

Three brokers take queues of different sizes under version 1 of the cluster file
(all active, no pins). Version 2, which the command reads, makes b3 draining and pins
``billing.`` to b1. The plan printed, one ``zq queue move QUEUE --to BROKER`` a line
after comment lines, is the planner's for what the brokers report: b3 emptied, the
misplaced billing queue to b1, and the shares of b1 and b2 made even. Without
``--plan`` it exits 2; with a broker down it makes no plan and exits 1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import zq
from tests.cluster_helpers import start_cluster_broker, write_cluster, zq_cli
from tests.procs import Proc
from zq.cluster import load, place
from zq.cluster.rebalance import plan

IDS = ("b1", "b2", "b3")


@pytest.fixture
async def brokers(tmp_path: Path) -> AsyncIterator[tuple[Path, dict[str, str], dict[str, Proc]]]:
    file = tmp_path / "cluster.toml"
    endpoints = write_cluster(file, list(IDS))
    procs: dict[str, Proc] = {}
    try:
        for b in IDS:
            procs[b] = await start_cluster_broker(tmp_path, file, b)
        yield file, endpoints, procs
    finally:
        for p in procs.values():
            await p.kill()


def _version_2(path: Path, endpoints: dict[str, str]) -> None:
    lines = ['cluster_id = "test"', "version = 2"]
    for b in IDS:
        lines += ["[[brokers]]", f'id = "{b}"', f'endpoint = "{endpoints[b]}"',
                  f'state = "{"draining" if b == "b3" else "active"}"']
    lines += ["[pins]", '"billing." = "b1"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def test_rebalance_plan_prints_the_moves_to_run(
        brokers: tuple[Path, dict[str, str], dict[str, Proc]], tmp_path: Path) -> None:
    file, endpoints, procs = brokers
    v1 = load(file)
    # Queues and sizes per broker, as placed by version 1.
    sizes = {"b1": [400, 300, 0], "b2": [50], "b3": [120, 80, 0]}
    held: dict[str, dict[str, int]] = {b: {} for b in IDS}
    names = iter(f"rb-{i}" for i in range(10_000))
    for b, wanted in sizes.items():
        for n in wanted:
            q = next(x for x in names if place(x, v1) == b)
            held[b][q] = n
    billing = next(x for x in (f"billing.{i}" for i in range(100)) if place(x, v1) == "b2")
    held["b2"][billing] = 30
    for b, queues in held.items():
        async with zq.Client(endpoints[b]) as c:
            for q, n in queues.items():
                if n:
                    await c.publish_many(q, [f"{q}/{i}".encode() for i in range(n)])
                else:
                    await c.declare_queue(q)

    v2_file = tmp_path / "cluster-v2.toml"
    _version_2(v2_file, endpoints)
    expected = plan(load(v2_file), held)
    rc, out = await zq_cli("cluster", "rebalance", "--cluster", str(v2_file), "--plan")
    assert rc == 0, out
    commands = [ln for ln in out.splitlines() if not ln.startswith("#")]
    assert commands == [m.command for m in expected.moves], out
    assert f"zq queue move {billing} --to b1" in commands
    assert all(ln.startswith("zq queue move ") for ln in commands)
    assert not any(ln.endswith("--to b3") for ln in commands)
    moved = {ln.split()[3] for ln in commands}
    assert set(held["b3"]) <= moved, "the draining broker is emptied"
    assert "# broker b3" in out

    rc, text = await zq_cli("cluster", "rebalance", "--cluster", str(v2_file), "--plan",
                            "--json")
    assert rc == 0, text
    doc = json.loads(text)
    assert [(m["queue"], m["to"]) for m in doc["moves"]] == \
        [(m.queue, m.target) for m in expected.moves]
    assert doc["brokers"]["b3"]["messages"] == {"before": 200, "after": 0, "target": 0.0}
    total = sum(sum(q.values()) for q in held.values())
    assert sum(doc["brokers"][b]["messages"]["after"] for b in IDS) == total
    after = [doc["brokers"][b]["messages"]["after"] for b in ("b1", "b2")]
    assert abs(after[0] - after[1]) < min(after), after  # b1 and b2 closer than before

    rc, out = await zq_cli("cluster", "rebalance", "--cluster", str(v2_file))
    assert rc == 2
    assert "only plans" in out

    await procs["b2"].kill()
    rc, out = await zq_cli("cluster", "rebalance", "--cluster", str(v2_file), "--plan",
                           "--timeout", "0.5")
    assert rc == 1, out
    assert "DOWN b2" in out
    assert "zq queue move" not in out
    for b in ("b1", "b3"):
        await procs[b].terminate_and_expect_exit(0)
