"""Issue 17, acceptance 4: chain, group and chord with a worker killed (SIGKILL) while
they run, real processes: the results are as if nothing failed, and no step of a chain
is stored twice (each is published once, under its dedup id, however often the step
before it ran)."""

from __future__ import annotations

import signal
from pathlib import Path

import zq
from tests.helpers import eventually
from tests.procs import Proc, start_broker
from tests.system.apps._record import read
from tests.system.test_workers import start_worker

SPEC = "tests.system.apps.canvas:app"


async def test_workflows_survive_a_killed_worker(tmp_path: Path) -> None:
    from tests.system.apps.canvas import add, app, mul, total

    broker = await start_broker(tmp_path)
    procs: list[Proc] = []
    app.endpoint = broker.endpoint
    log = tmp_path / "canvas.jsonl"
    try:
        w1 = await start_worker(procs, tmp_path, SPEC, "--concurrency", "4",
                                endpoint=broker.endpoint)
        await start_worker(procs, tmp_path, SPEC, "--concurrency", "4",
                           endpoint=broker.endpoint)
        chains = [await zq.chain(add.s(i, 2), mul.s(10), add.s(5)).delay() for i in range(6)]
        grp = await zq.group(*(add.s(i, i) for i in range(10))).delay()
        chd = await zq.chord(zq.group(*(mul.s(i, i) for i in range(10))),
                             total.s(plus=1)).delay()
        await eventually(lambda: any(r["pid"] == w1.pid for r in read(log)),
                         "the first worker to be running tasks", 20, 0.02)
        w1.signal(signal.SIGKILL)  # with tasks running and held: they come back
        await w1.wait(10)
        await start_worker(procs, tmp_path, SPEC, endpoint=broker.endpoint)
        assert [await h.result(timeout=60) for h in chains] == [(i + 2) * 10 + 5
                                                                for i in range(6)]
        assert await grp.result(timeout=60) == [2 * i for i in range(10)]
        assert await chd.result(timeout=60) == sum(i * i for i in range(10)) + 1
        async with zq.Client(broker.endpoint) as c:
            st = await c.stats()
        # 6 chains x 3 steps + 10 + 10 members + the chord's waiter and its callback
        published = sum(q["published"] for n, q in st["queues"].items()
                        if n in ("canvas", "canvas.join"))
        assert published == 6 * 3 + 10 + 10 + 2, st["queues"]
        assert sum(1 for r in read(log) if r["task"] == "total") >= 1
        runs = read(log)
        print(f"canvas: {len(runs)} runs for 6 x 3 + 10 + 10 + 1 steps; "
              f"{sum(1 for r in runs if r['pid'] == w1.pid)} on the killed worker")
    finally:
        await app.close()
        for p in procs:
            if p.proc.returncode is None:
                await p.terminate_and_expect_exit(0, within=20)
        await broker.terminate_and_expect_exit(0)
