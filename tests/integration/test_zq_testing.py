"""``zq.testing`` as a user's test suite uses it: an app's tasks run against the real
broker core in the test's own event loop, with no broker process, and keep the
broker's semantics (retries with their backoff, dead letters, leases, results)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path

import pytest

import zq
import zq.testing

app = zq.App("tcp://127.0.0.1:1", name="user-app")  # never reached: tests point it elsewhere
calls: Counter[str] = Counter()
started: dict[str, list[float]] = {}


class Flaky(Exception):
    pass


@app.task(queue="work", retry=zq.Retry("exponential", base=0.05, cap=1.0))
def flaky(key: str, fail_times: int) -> str:
    """Fails ``fail_times`` times for ``key``, then succeeds (a plain function: a thread)."""
    calls[key] += 1
    started.setdefault(key, []).append(time.monotonic())
    if calls[key] <= fail_times:
        raise Flaky(f"attempt {calls[key]} of {key} failed")
    return f"{key} done after {calls[key]}"


@app.task(queue="work", max_attempts=3, retry=zq.Retry("fixed", base=0.01))
async def always_fails(n: int) -> None:
    raise ValueError(f"bad input {n}")


@app.task(queue="slow", time_limit=0.3, retry=zq.Retry("fixed", base=0.0))
async def hangs_once(key: str) -> str:
    """The first attempt outlives its time limit; the broker gives the message out again."""
    calls[key] += 1
    if calls[key] == 1:
        await asyncio.sleep(1.0)
        return "too late"
    return "in time"


@app.task(queue="fan")
async def fan_out(n: int) -> int:
    for i in range(n):
        await square.delay(i)  # awaited: stored before this task completes
    return n


@app.task(queue="squares")
def square(i: int) -> int:
    return i * i


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    calls.clear()
    started.clear()


async def test_a_task_that_fails_twice_is_retried_with_its_backoff() -> None:
    async with zq.testing.Broker(app) as broker:
        assert broker.endpoint.startswith("inproc://")
        assert app.endpoint == broker.endpoint
        handle = await flaky.delay("a", 2)
        counts = await zq.testing.run_until_idle(app)
        assert await handle.result(timeout=1) == "a done after 3"
        assert (counts["started"], counts["failed"], counts["succeeded"]) == (3, 2, 1)
        status = await handle.status()
        assert (status["state"], status["attempt"]) == ("succeeded", 3)
    gaps = [b - a for a, b in itertools.pairwise(started["a"])]
    # exponential from 0.05 s with +-10% jitter, plus the time a retry takes to arrive
    assert 0.045 <= gaps[0] < 0.045 + 0.1
    assert 0.09 <= gaps[1] < 0.09 + 0.1
    assert app.endpoint == "tcp://127.0.0.1:1"  # given back


async def test_a_task_that_always_fails_ends_dead_with_its_traceback() -> None:
    async with zq.testing.Broker(app):
        handle = await always_fails.delay(7)
        counts = await zq.testing.run_until_idle(app)
        assert counts["failed"] == 3
        with pytest.raises(zq.TaskFailed) as info:
            await handle.result(timeout=1)
        assert (info.value.type, info.value.message) == ("ValueError", "bad input 7")
        assert "in always_fails" in info.value.traceback
        assert 'raise ValueError(f"bad input {n}")' in info.value.traceback
        async with zq.Client(app.endpoint) as client:
            (dead,) = await client.peek("work.dlq")
        assert [e["outcome"] for e in dead["headers"]["zq-history"]] == ["nacked"] * 3


async def test_an_attempt_past_its_time_limit_loses_its_lease() -> None:
    async with zq.testing.Broker(app):
        handle = await hangs_once.delay("h")
        counts = await zq.testing.run_until_idle(app, timeout=5)
        assert await handle.result(timeout=1) == "in time"
        # The first attempt finished after the broker gave the message to the second:
        # its completion was refused (STALE_DELIVERY) and changed nothing.
        assert counts["refused"] == 1
        assert calls["h"] == 2


async def test_run_until_idle_follows_tasks_that_queue_tasks() -> None:
    async with zq.testing.Broker(app):
        handle = await fan_out.delay(20)
        counts = await zq.testing.run_until_idle(app, concurrency=2)
        assert await handle.result(timeout=1) == 20
        assert counts["succeeded"] == 21
        async with zq.Client(app.endpoint) as client:
            queues = await client.queues()
        assert queues["squares"]["acked"] == 20


async def test_run_until_idle_gives_up_after_its_timeout() -> None:
    async with zq.testing.Broker(app):
        await flaky.apply(args=("slow", 1), delay=30)  # delayed: never idle in time
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError, match=r"not idle after 0.3s: .*'delayed': 1"):
            await zq.testing.run_until_idle(app, timeout=0.3)
        assert loop.time() - start < 2.0  # and the worker stopped at once


async def test_queue_settings_and_a_tcp_endpoint() -> None:
    async with zq.testing.Broker(endpoint="tcp://127.0.0.1:*",
                                 queues={"capped": {"max_length": 1}}) as broker:
        assert broker.endpoint.startswith("tcp://127.0.0.1:")
        async with broker.client() as client:
            await client.publish("capped", b"1")
            with pytest.raises(zq.QueueFull):
                await client.publish("capped", b"2")
            assert broker.broker.core.queues["capped"].ready_count() == 1


async def test_a_task_sees_its_message_in_async_and_thread_tasks() -> None:
    app = zq.App(name="seen")
    seen: list[tuple[str, int, int, str]] = []

    @app.task(name="seen.a", queue="seen")
    async def a() -> None:
        m = zq.current_message()
        assert m is not None
        seen.append(("async", m.id, m.attempt, m.headers["zq-task"]))

    @app.task(name="seen.b", queue="seen")
    def b() -> None:
        m = zq.current_message()
        assert m is not None
        seen.append(("thread", m.id, m.attempt, m.headers["zq-task"]))

    assert zq.current_message() is None
    async with zq.testing.Broker(app):
        ha, hb = await a.delay(), await b.delay()
        await zq.testing.run_until_idle(app)
    assert sorted(seen) == [("async", ha.id, 1, "seen.a"), ("thread", hb.id, 1, "seen.b")]


async def test_a_handle_from_a_stored_id_gets_the_result() -> None:
    app = zq.App(name="later")

    @app.task(name="later.square", queue="later")
    async def square(x: int) -> int:
        return x * x

    async with zq.testing.Broker(app):
        mid = (await square.delay(7)).id  # a producer keeps only the id ...
        await zq.testing.run_until_idle(app)
        handle = app.handle(square, mid)  # ... and asks again after a restart
        assert await handle.result(timeout=5) == 49
        assert (await app.handle("later", mid).status())["state"] == "succeeded"


# ---------------------------------------------------------------- with_broker: plain pytest

loops: list[asyncio.AbstractEventLoop] = []


@pytest.fixture
def recipient(tmp_path: Path) -> str:
    return f"ann@{tmp_path.name}.example"


@zq.testing.with_broker(app)
async def test_with_broker_gives_fixtures_and_a_broker_in_a_fresh_loop(
        recipient: str, tmp_path: Path) -> None:
    # Collected as a plain function (this suite's asyncio_mode=auto leaves it alone,
    # as strict mode or no plugin would), yet pytest still injected both fixtures.
    assert recipient == f"ann@{tmp_path.name}.example"
    assert app.endpoint is not None
    assert app.endpoint.startswith("inproc://zq-testing-")
    handle = await flaky.delay(recipient, 1)
    counts = await zq.testing.run_until_idle(app)
    assert await handle.result(timeout=1) == f"{recipient} done after 2"
    assert counts["failed"] == 1
    loops.append(asyncio.get_running_loop())


def test_with_broker_runs_each_call_in_a_loop_of_its_own_and_returns_its_result() -> None:
    endpoints: list[str] = []

    @zq.testing.with_broker(app, queues={"work": {"max_attempts": 1}})
    async def scenario(key: str, *, fail_times: int) -> tuple[str, int]:
        """A scenario for a script or a unittest.TestCase: a plain call."""
        assert app.endpoint is not None
        endpoints.append(app.endpoint)
        loops.append(asyncio.get_running_loop())
        handle = await flaky.delay(key, fail_times)
        counts = await zq.testing.run_until_idle(app)
        try:
            return await handle.result(timeout=1), counts["failed"]
        except zq.TaskFailed as e:
            return e.type.rsplit(".", 1)[-1], counts["failed"]

    assert scenario.__name__ == "scenario"
    assert scenario.__doc__ is not None
    assert scenario("b", fail_times=0) == ("b done after 1", 0)
    assert scenario("c", fail_times=1) == ("Flaky", 1)  # the queue setting: one attempt
    assert endpoints[0] != endpoints[1]  # a broker of its own each time
    assert app.endpoint == "tcp://127.0.0.1:1"  # given back
    assert len(loops) >= 2
    assert len(set(map(id, loops))) == len(loops)
    assert all(loop.is_closed() for loop in loops)


def test_with_broker_stops_the_broker_and_gives_the_endpoint_back_when_the_test_fails() -> None:
    @zq.testing.with_broker(app)
    async def failing() -> None:
        await flaky.delay("d", 0)
        raise AssertionError("the test failed")

    with pytest.raises(AssertionError, match="the test failed"):
        failing()
    assert app.endpoint == "tcp://127.0.0.1:1"


def test_with_broker_refuses_what_it_cannot_run() -> None:
    async def test_x() -> None:
        pass

    with pytest.raises(TypeError, match=r"with_broker\(app\)"):
        zq.testing.with_broker(test_x)  # type: ignore[arg-type]  # bare: no app named
    with pytest.raises(TypeError, match="'async def' function"):
        zq.testing.with_broker(app)(lambda: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match=r"each must be a zq\.App"):
        zq.testing.with_broker("tcp://127.0.0.1:1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in memory only"):
        zq.testing.with_broker(app, storage="sqlite")  # at import, not in every test


async def test_with_broker_says_what_to_use_inside_a_running_loop() -> None:
    @zq.testing.with_broker(app)
    async def nested() -> None:
        raise AssertionError("not run")

    with pytest.raises(RuntimeError, match=r"runs its own event loop.*async with zq\.testing"):
        nested()
