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
import sys
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
    await _poison_run(broker_factory, workers, tmp_path, where, concurrency=1)


async def test_a_poison_task_among_concurrent_ones_kills_no_healthy_task(
        broker_factory: Factory, workers: list[Proc], tmp_path: Path) -> None:
    """Tasks running beside it when it first strikes are charged that once; then each
    suspect runs alone, so none of them uses up its attempts."""
    await _poison_run(broker_factory, workers, tmp_path, 5, concurrency=4)


async def _poison_run(broker_factory: Factory, workers: list[Proc], tmp_path: Path,
                      where: int, concurrency: int) -> None:
    broker = await broker_factory("--heartbeat", "0.2", "--storage", "sqlite")
    poison.app.endpoint = broker.endpoint
    async with zq.Client(broker.endpoint) as c:
        await poison.app.declare(c, "poison")
        for n in range(10):
            await poison.work.delay(n, n == where)
        await poison.app.close()
        kills = 0
        args = ("--concurrency", str(concurrency), "--prefetch", "10")
        w = await start_worker(workers, tmp_path, "tests.system.apps.poison:app", *args,
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
                                       *args, endpoint=broker.endpoint)
            await asyncio.sleep(0.05)
        w.signal(signal.SIGTERM)
        assert await w.wait(10) == 0
    # At least 5: a kill whose START died with the process is not charged to the
    # poison; it comes back a suspect, alone, and the next kill is (PROTOCOL.md 12.5).
    assert kills >= 5
    started = read(tmp_path / "started.jsonl")
    runs = Counter(r["n"] for r in started)
    assert runs[where] == kills
    if concurrency == 1:
        behind = [r for r in started if r["n"] > where]
        assert sorted(r["n"] for r in behind) == list(range(where + 1, 10))  # once each
        assert all(r["attempt"] == 1 for r in behind), behind  # not charged for the poison
    [d] = dead  # the poison, and no healthy task
    hist = d["headers"]["zq-history"]
    assert [(e["attempt"], e["outcome"]) for e in hist] == [(i, "consumer lost")
                                                            for i in range(1, 6)]
    assert d["headers"]["zq-reason"].startswith("5 attempt(s) failed")


async def test_a_plain_consumer_that_dies_on_a_message_does_not_take_its_acked_ones_along(
        broker_factory: Factory, workers: list[Proc], tmp_path: Path) -> None:
    """The hostile check's case: a consume() loop acking without awaiting, killed by
    message 5 before its acks of 0..4 (and the poison's START) could leave it."""
    broker = await broker_factory("--heartbeat", "0.2", "--storage", "sqlite")
    argv = [sys.executable, "-m", "tests.system.apps.plain_consumer", broker.endpoint, "jobs",
            "100"]
    async with zq.Client(broker.endpoint) as c:
        await c.publish_many("jobs", [b"poison" if i == 5 else b"m%d" % i for i in range(20)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        kills = 0
        p: Proc | None = None
        while True:
            q = (await c.queues()).get("jobs", {})
            if not (q.get("ready") or q.get("in_flight")):
                break
            assert loop.time() < deadline, f"stuck after {kills} kills: {q}"
            if p is not None and p.proc.returncode is not None:
                assert p.proc.returncode == -signal.SIGKILL, p.stderr()
                kills += 1
                p = None
            if p is None:
                p = await Proc.start(argv, tmp_path / f"consumer{kills}.log",
                                     {"ZQ_TEST_DIR": str(tmp_path)})
                workers.append(p)
                await p.wait_for_line("CONSUMING")
            await asyncio.sleep(0.05)
        dead = await c.peek("jobs.dlq")
    assert kills >= 5
    assert [d["body"] for d in dead] == [b"poison"]
    assert [e["attempt"] for e in dead[0]["headers"]["zq-history"]] == [1, 2, 3, 4, 5]
    taken = read(tmp_path / "taken.jsonl")
    assert {r["body"] for r in taken} == {"poison"} | {f"m{i}" for i in range(20) if i != 5}
