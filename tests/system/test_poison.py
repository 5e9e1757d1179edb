"""A message that kills its worker uses up its own attempts, not its neighbours'.

Issue 10, acceptance 4: a poison task among 9 healthy ones, a worker with
prefetch 10 and concurrency 1, killed by the poison each time it runs it. The
poison must die after its 5 attempts and every healthy task must be processed,
none dead. The ones queued behind the poison were never started when a worker
died, so they run exactly once, at attempt 1. (One that ran just before the
poison may run again: its completion can die with the process, at least once.)
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import zq
from tests.procs import Proc
from tests.system.apps import poison
from tests.system.apps._record import read
from tests.system.test_workers import start_worker

Factory = Callable[..., Awaitable[Proc]]


@pytest.fixture
async def workers() -> AsyncIterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        await p.kill()


@pytest.mark.parametrize("where", [0, 4])
async def test_a_poison_task_dies_alone(broker_factory: Factory, workers: list[Proc],
                                        tmp_path: Path, where: int) -> None:
    broker = await broker_factory("--heartbeat", "0.2", "--storage", "sqlite")
    poison.app.endpoint = broker.endpoint
    async with zq.Client(broker.endpoint) as c:
        await poison.app.declare(c, "poison")
        for n in range(10):
            await poison.work.delay(n, n == where)
        await poison.app.close()
        kills = 0
        w = await start_worker(workers, tmp_path, "tests.system.apps.poison:app",
                               "--concurrency", "1", "--prefetch", "10",
                               endpoint=broker.endpoint)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            done = {r["n"] for r in read(tmp_path / "done.jsonl")}
            dead = await c.peek("poison.dlq") if "poison.dlq" in await c.queues() else []
            if done == set(range(10)) - {where} and dead:
                break
            assert loop.time() < deadline, f"stuck: {kills} kills, done {done}, dead {dead}"
            if w.proc.returncode is not None:
                assert w.proc.returncode == -signal.SIGKILL, w.stderr()
                kills += 1
                w = await start_worker(workers, tmp_path, "tests.system.apps.poison:app",
                                       "--concurrency", "1", "--prefetch", "10",
                                       endpoint=broker.endpoint)
            await asyncio.sleep(0.05)
        w.signal(signal.SIGTERM)
        assert await w.wait(10) == 0
    # At least 5: a kill whose START died with the process may not be charged to the
    # poison (PROTOCOL.md 12.5); it then comes back uncharged and kills again.
    assert kills >= 5
    started = read(tmp_path / "started.jsonl")
    runs = Counter(r["n"] for r in started)
    assert runs[where] == kills
    behind = [r for r in started if r["n"] > where]
    assert sorted(r["n"] for r in behind) == list(range(where + 1, 10))  # once each
    assert all(r["attempt"] == 1 for r in behind), behind  # never charged for the poison
    [d] = dead  # the poison, and no healthy task
    hist = d["headers"]["zq-history"]
    assert [(e["attempt"], e["outcome"]) for e in hist] == [(i, "consumer lost")
                                                            for i in range(1, 6)]
    assert d["headers"]["zq-reason"].startswith("5 attempt(s) failed")
