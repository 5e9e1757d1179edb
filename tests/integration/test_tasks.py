"""Tasks and workers against a real broker in the test's loop: results, retries with
backoff, dead tasks, states, and a graceful stop that gives prefetched work back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import zq
from zq.broker import Broker
from zq.worker import BAD_RESULT, UNKNOWN_TASK

# A module-level app for the process pool: a pool process imports this module and
# finds the function behind the task by name. Its endpoint is set per test.
shared = zq.App(name="shared", default_queue="proc")


@shared.task(executor="process")
def pid_and_square(x: int) -> list[int]:
    return [os.getpid(), x * x]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def app(inproc_broker: Broker) -> AsyncIterator[zq.App]:
    a = zq.App(inproc_broker.endpoint, name="test-app", result_ttl=60)
    yield a
    await a.close()


@contextlib.asynccontextmanager
async def running(worker: zq.Worker) -> AsyncIterator[zq.Worker]:
    """Run ``worker`` in this loop until the block ends, then stop and drain it."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(worker.run())
        ready = tg.create_task(worker.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises why it did not start
        try:
            yield worker
        finally:
            worker.stop()
            async with asyncio.timeout(10):
                await task


def make_worker(app: zq.App, **kw: Any) -> zq.Worker:
    return zq.Worker(app, handle_signals=False, **kw)


# ------------------------------------------------------------------ results


async def test_async_and_sync_tasks_return_results(app: zq.App) -> None:
    threads: list[str] = []

    @app.task
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    @app.task(queue="cpu")
    def join(parts: list[str], sep: str = "-") -> dict[str, Any]:
        import threading

        threads.append(threading.current_thread().name)
        return {"text": sep.join(parts), "raw": b"\x00\x01"}

    async with running(make_worker(app)):
        h1 = await add.delay(2, 3)
        h2 = await join.delay(["a", "b"], sep="+")
        assert await h1.result(timeout=5) == 5
        assert await h2.result(timeout=5) == {"text": "a+b", "raw": b"\x00\x01"}
        assert (await h1.status())["state"] == "succeeded"
        assert (await h2.status())["result"] == {"text": "a+b", "raw": b"\x00\x01"}
    assert threads[0].startswith("zq-task")  # the sync one ran off the loop
    settings = (await (await app.client()).queue_info("cpu"))["settings"]
    assert settings["result_ttl"] == 60  # the app declared its queues


async def test_delay_is_honoured_and_shows_as_delayed(app: zq.App) -> None:
    ran_at: list[float] = []

    @app.task
    async def stamp() -> float:
        ran_at.append(time.time())
        return ran_at[-1]

    async with running(make_worker(app)):
        sent = time.time()
        h = await stamp.apply(delay=0.3)
        assert (await h.status())["state"] == "delayed"
        assert await h.result(timeout=5) == ran_at[0]
    assert ran_at[0] - sent >= 0.3


async def test_process_executor_runs_in_another_process(app: zq.App,
                                                        inproc_broker: Broker) -> None:
    shared.endpoint = inproc_broker.endpoint
    try:
        async with running(make_worker(shared, concurrency=2)):
            h = await pid_and_square.delay(7)
            pid, sq = await h.result(timeout=60)  # the pool process starts with spawn
        assert sq == 49
        assert pid != os.getpid()
    finally:
        await shared.close()


async def test_unknown_task_and_bad_result_fail_at_once(app: zq.App) -> None:
    @app.task(max_attempts=2)
    async def weird() -> object:
        return object()

    client = await app.client()
    await app.declare(client, "tasks")
    mid = await client.publish("tasks", b"\x80", headers={"zq-task": "no.such.task"})
    async with running(make_worker(app)):
        state = await client.wait_result("tasks", mid, 5)
        assert state["state"] == "dead"
        assert state["error"]["type"] == UNKNOWN_TASK
        assert "no.such.task" in state["error"]["message"]
        with pytest.raises(zq.TaskFailed) as info:
            await (await weird.delay()).result(timeout=5)
    assert info.value.type == BAD_RESULT
    assert "object" in info.value.message


# ------------------------------------------------------------------ retries and dead tasks


async def test_fails_twice_then_succeeds_with_exponential_backoff(app: zq.App) -> None:
    starts: list[float] = []

    @app.task(retry=zq.Retry("exponential", base=0.2), max_attempts=5)
    async def flaky() -> str:
        starts.append(time.monotonic())
        if len(starts) < 3:
            raise ConnectionError(f"try {len(starts)}")
        return "done"

    async with running(make_worker(app)):
        h = await flaky.delay()
        assert await h.result(timeout=10) == "done"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 2
    assert 0.2 * 0.8 <= gaps[0] <= 0.2 * 1.2, gaps
    assert 0.4 * 0.8 <= gaps[1] <= 0.4 * 1.2, gaps
    assert (await h.status())["attempt"] == 3


async def test_always_failing_task_ends_dead_with_the_remote_traceback(app: zq.App) -> None:
    class QuotaExceeded(Exception):
        pass

    def check_quota(user: str) -> None:
        raise QuotaExceeded(f"{user} is over quota")

    @app.task(retry=zq.Retry("fixed", base=0.01), max_attempts=3)
    def send(user: str) -> None:
        check_quota(user)

    async with running(make_worker(app)):
        h = await send.delay("ann")
        with pytest.raises(zq.TaskFailed) as info:
            await h.result(timeout=10)
    exc = info.value
    assert exc.type.endswith("QuotaExceeded")
    assert exc.message == "ann is over quota"
    assert "in check_quota" in exc.traceback
    assert 'raise QuotaExceeded(f"{user} is over quota")' in exc.traceback
    assert "zq/worker.py" not in exc.traceback  # the worker's own frames are left out
    assert (exc.id, exc.queue) == (h.id, "tasks")
    assert (await h.status())["state"] == "dead"


async def test_result_times_out(app: zq.App) -> None:
    @app.task
    async def never() -> None: ...

    h = await never.delay()  # no worker
    with pytest.raises(zq.OperationTimeout, match="not finished"):
        await h.result(timeout=0.2)


# ------------------------------------------------------------------ states


async def test_states_from_pending_to_dead(app: zq.App) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    @app.task
    async def blocked() -> str:
        entered.set()
        await gate.wait()
        return "ok"

    @app.task(retry=zq.Retry("fixed", base=30), max_attempts=2)
    async def failing() -> None:
        raise RuntimeError("first attempt fails")

    @app.task(retry=zq.Retry("fixed", base=0.01), max_attempts=1)
    async def doomed() -> None:
        raise RuntimeError("no retries")

    await app.client()
    h = blocked.delay()
    assert (await h.status())["state"] == "pending"  # not confirmed yet
    await h
    assert (await h.status())["state"] == "ready"
    later = await blocked.apply(delay=30)
    assert (await later.status())["state"] == "delayed"
    worker = make_worker(app, concurrency=4)
    async with running(worker):
        await asyncio.wait_for(entered.wait(), 5)
        st = await h.status()
        assert st["state"] == "running"
        assert st["worker"] == worker.name
        assert st["attempt"] == 1
        gate.set()
        assert await h.result(timeout=5) == "ok"
        assert (await h.status())["state"] == "succeeded"
        f = await failing.delay()

        async def failed() -> bool:
            return (await f.status())["state"] == "failed"

        await until(failed)
        st = await f.status()
        assert st["error"]["message"] == "first attempt fails"
        d = await doomed.delay()
        with pytest.raises(zq.TaskFailed):
            await d.result(timeout=5)
        assert (await d.status())["state"] == "dead"


# ------------------------------------------------------------------ credit and shutdown


async def test_graceful_stop_releases_prefetched_messages(app: zq.App,
                                                         inproc_broker: Broker) -> None:
    gate = asyncio.Event()
    running_now: set[int] = set()

    @app.task(queue="held")
    async def hold(i: int) -> int:
        running_now.add(i)
        await gate.wait()
        return i

    handles = [await hold.delay(i) for i in range(10)]
    worker = make_worker(app, concurrency=2, prefetch=10, drain_timeout=10)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 5)
        client = await app.client()

        async def all_delivered() -> bool:
            stats = (await client.queue_info("held"))["stats"]
            return stats["in_flight"] == 10 and len(running_now) == 2

        await until(all_delivered)
        worker.stop()

        async def given_back() -> bool:
            return (await client.queue_info("held"))["stats"]["ready"] == 8

        await until(given_back, timeout=1.0)
        assert not task.done()  # the two running ones are still draining
        peeked = await client.peek("held", 100)
        assert len(peeked) == 8
        assert all(m["attempts"] == 0 for m in peeked)  # released: attempt not counted
        gate.set()
        await asyncio.wait_for(task, 5)
    finally:
        worker.stop()
        await task
    assert worker.counters["succeeded"] == 2
    assert worker.counters["released"] == 8
    done = [h for h in handles if (await h.status())["state"] == "succeeded"]
    assert sorted([await h.result(timeout=1) for h in done]) == sorted(running_now)


async def test_drain_timeout_nacks_what_is_still_running(app: zq.App) -> None:
    @app.task(queue="stuck", max_attempts=3)
    async def forever() -> None:
        await asyncio.Event().wait()

    h = await forever.delay()
    worker = make_worker(app, drain_timeout=0.1)
    async with running(worker):

        async def started() -> bool:
            return (await h.status())["state"] == "running"

        await until(started)
    assert worker.counters["abandoned"] == 1
    st = await h.status()
    assert st["state"] in ("ready", "delayed", "failed")
    assert st["attempt"] == 1
    assert "worker stopped" in str(st.get("history"))


async def test_two_workers_split_100ms_tasks_evenly(app: zq.App) -> None:
    by: dict[str, int] = {}
    current: list[str] = []

    @app.task(queue="even")
    async def work(i: int) -> None:
        await asyncio.sleep(0.1)

    w1, w2 = make_worker(app, concurrency=4, name="w1"), make_worker(app, concurrency=4,
                                                                     name="w2")
    for w in (w1, w2):
        current.append(w.name)
    handles = [await work.delay(i) for i in range(80)]
    async with running(w1), running(w2):
        for h in handles:
            await h.result(timeout=20)
            st = await h.status()
            by[st["worker"]] = by.get(st["worker"], 0) + 1
    assert set(by) == {"w1", "w2"}
    assert 0.4 * 80 <= by["w1"] <= 0.6 * 80, by
    assert w1._consumers[0].prefetch == 4  # 100 ms tasks: no extra credit


async def test_credit_grows_for_short_tasks_only(app: zq.App) -> None:
    @app.task(queue="quick")
    async def noop(i: int) -> int:
        return i

    handles = [noop.delay(i) for i in range(300)]
    for h in handles:
        await h
    worker = make_worker(app, concurrency=2)
    async with running(worker):
        for h in handles:
            await h.result(timeout=10)
    # Each task takes microseconds and a completion's round trip about a millisecond.
    assert worker._consumers[0].prefetch > 2 * worker.concurrency
