"""Issue 17, acceptance 2: a broadcast task, real processes. Three workers: each call
runs exactly once on each worker; a fourth worker that joins later gets the calls made
from then on; a worker that stops cleanly takes its queue and binding with it, and one
killed with SIGKILL has its queue removed by the broker after its idle TTL. A plain
task of the same app still runs once in all."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import zq
from tests.helpers import eventually
from tests.procs import Proc, start_broker
from tests.system.apps._record import read
from tests.system.test_workers import start_worker

SPEC = "tests.system.apps.broadcast:app"


async def test_each_call_runs_once_on_every_worker_and_late_joiners_get_later_ones(
        tmp_path: Path) -> None:
    from tests.system.apps.broadcast import app, plain_job, reload_config

    broker = await start_broker(tmp_path)
    procs: list[Proc] = []
    app.endpoint = broker.endpoint
    log = tmp_path / "broadcast.jsonl"
    try:
        workers = [await start_worker(procs, tmp_path, SPEC, endpoint=broker.endpoint,
                                      env={"ZQ_WORKER_BROADCAST_IDLE_TTL": "2"})
                   for _ in range(3)]
        first = {w.pid for w in workers}
        for n in range(20):
            await reload_config.delay(n)
        for n in range(6):
            await plain_job.delay(n)
        await eventually(lambda: len(read(log)) >= 60, "20 calls on 3 workers", 30, 0.05)
        late = await start_worker(procs, tmp_path, SPEC, endpoint=broker.endpoint,
                                  env={"ZQ_WORKER_BROADCAST_IDLE_TTL": "2"})
        for n in range(20, 30):
            await reload_config.delay(n)
        await eventually(lambda: len(read(log)) >= 60 + 40, "10 more on 4", 30, 0.05)
        await eventually(lambda: len(read(tmp_path / "plain.jsonl")) >= 6, "plain", 30, 0.05)
        runs = Counter((r["pid"], r["n"]) for r in read(log))
        assert all(c == 1 for c in runs.values()), [k for k, c in runs.items() if c > 1]
        assert {pid for pid, n in runs if n < 20} == first  # the late one: none before
        assert {n for pid, n in runs if pid == late.pid} == set(range(20, 30))
        for pid in first:
            assert {n for p, n in runs if p == pid} == set(range(30))
        assert sorted(r["n"] for r in read(tmp_path / "plain.jsonl")) == list(range(6))
        async with zq.Client(broker.endpoint) as c:
            (topic,) = await c.topics()
            assert len(topic["bindings"]) == 4
            await workers[0].terminate_and_expect_exit(0, within=20)  # takes its queue
            workers[1].signal(signal.SIGKILL)  # leaves it: the broker removes it, idle
            await workers[1].wait(10)

            async def two_left() -> bool:
                (t,) = await c.topics()
                return len(t["bindings"]) == 2

            await eventually(two_left, "the dead worker's queue to go", 20, 0.2)
            handle = await reload_config.delay(99)
            try:
                await handle.result()
                raise AssertionError("a broadcast call has no single result")
            except zq.ZqError:
                raise
            except LookupError:
                pass
        await eventually(lambda: sum(1 for r in read(log) if r["n"] == 99) == 2,
                         "the last call on the two workers left", 30, 0.05)
    finally:
        await app.close()
        for p in procs:
            if p.proc.returncode is None:
                await p.terminate_and_expect_exit(0, within=20)
        await broker.terminate_and_expect_exit(0)
