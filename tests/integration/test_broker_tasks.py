"""The broker's task and schedule operations (MANAGE complete, status, wait,
schedule_add/ls/rm) against a real broker, through the SDK's connection."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import zq
from zq.broker import Broker
from zq.config import BrokerConfig


async def op(c: zq.Client, operation: str, **args: Any) -> dict[str, Any]:
    return await c.conn.manage(operation, args)


@contextlib.asynccontextmanager
async def running(data: Path) -> AsyncIterator[Broker]:
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:*", heartbeat=0.2, data=str(data)))
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(broker.run(lambda _ep: ready.set()))
        await ready.wait()
        try:
            yield broker
        finally:
            broker.request_stop()
            await asyncio.wait_for(task, 5)


async def test_complete_keeps_the_result_and_wait_answers_when_it_is_final(
        inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="w1") as c:
        await c.declare_queue("t", result_ttl=60)
        mid = await c.publish("t", b"job")
        assert (await op(c, "status", queue="t", id=mid))["state"] == "ready"
        waiter = asyncio.ensure_future(op(c, "wait", queue="t", id=mid, timeout_ms=5000))
        async with c.consume("t", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            st = await op(c, "status", queue="t", id=mid)
            assert (st["state"], st["worker"], st["attempt"]) == ("running", "w1", 1)
            assert not waiter.done()
            reply = await op(c, "complete", queue="t", id=m.id, attempt=m.attempt, ok=True,
                             result={"answer": 42, "raw": b"\x00"})
            assert reply == {"state": "succeeded"}
        done = await asyncio.wait_for(waiter, 5)
        assert (done["state"], done["result"]) == ("succeeded", {"answer": 42, "raw": b"\x00"})
        again = await op(c, "wait", queue="t", id=mid, timeout_ms=5000)  # final: at once
        assert again["result"] == {"answer": 42, "raw": b"\x00"}
        with pytest.raises(zq.StaleDelivery):
            await op(c, "complete", queue="t", id=m.id, attempt=m.attempt, ok=True)


async def test_failures_are_kept_and_the_last_one_is_the_dead_error(
        inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="w2") as c:
        await c.declare_queue("f", result_ttl=60, max_attempts=2)
        mid = await c.publish("f", b"job")
        err = {"type": "ValueError", "message": "bad", "traceback": "Traceback ...\nValueError"}
        # (complete settles at the broker only; the SDK's credit does not know: prefetch 2)
        async with c.consume("f", prefetch=2) as consumer:
            m = await consumer.get(timeout=5)
            r = await op(c, "complete", queue="f", id=m.id, attempt=1, ok=False, error=err,
                         delay_ms=300)
            assert r == {"state": "failed"}
            st = await op(c, "status", queue="f", id=mid)
            assert (st["state"], st["error"]["type"]) == ("failed", "ValueError")
            m = await consumer.get(timeout=5)
            assert m.attempt == 2
            r = await op(c, "complete", queue="f", id=m.id, attempt=2, ok=False, error=err)
            assert r == {"state": "dead"}
        st = await op(c, "wait", queue="f", id=mid, timeout_ms=100)
        assert st["state"] == "dead"
        assert st["error"] == err
        unknown = await op(c, "wait", queue="f", id=10**9, timeout_ms=100)
        assert unknown["state"] == "unknown"
        pending = await c.publish("f", b"nobody takes it")
        t0 = time.monotonic()
        timed = await op(c, "wait", queue="f", id=pending, timeout_ms=300)
        assert timed["state"] == "ready"
        assert 0.29 <= time.monotonic() - t0 < 2.0


async def test_a_schedule_fires_once_per_due_time_and_survives_a_restart(
        tmp_path: Path) -> None:
    async with running(tmp_path / "data") as broker, zq.Client(broker.endpoint) as c:
        reply = await op(c, "schedule_add", name="tick", queue="ticks", body=b"t",
                         every_ms=200, headers={"k": "v"}, options={"priority": 3})
        assert reply["next_due"] > time.time()
        dues = []
        async with c.consume("ticks", prefetch=10) as consumer:
            for _ in range(3):
                m = await consumer.get(timeout=5)
                assert (m.headers["zq-schedule"], m.headers["k"]) == ("tick", "v")
                dues.append(m.headers["zq-due"])
                await m.ack()
        assert dues == sorted(set(dues))
        assert all(abs((b - a) - 0.2) < 0.01 for a, b in itertools.pairwise(dues))
        [s] = (await op(c, "schedule_ls"))["schedules"]
        assert (s["name"], s["every_ms"], s["fired"] >= 3) == ("tick", 200, True)
    async with running(tmp_path / "data") as broker, zq.Client(broker.endpoint) as c:
        async with c.consume("ticks", prefetch=10) as consumer:
            later = []
            while len(later) < 2:
                m = await consumer.get(timeout=5)
                later.append(m.headers["zq-due"])
                await m.ack()
        assert all(d > dues[-1] for d in later)
        assert (await op(c, "schedule_rm", name="tick")) == {"removed": True}
        assert (await op(c, "schedule_ls"))["schedules"] == []


async def test_bad_schedules_are_refused(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        for args in ({"name": "x", "queue": "q"},  # neither every nor cron
                     {"name": "x", "queue": "q", "every_ms": 1000, "cron": "* * * * *"},
                     {"name": "x", "queue": "q", "cron": "61 * * * *"},
                     {"name": "x", "queue": "q", "every_ms": 1},
                     {"name": "x", "queue": "q", "every_ms": 1000, "misfire": "later"},
                     {"name": "x", "queue": "q", "every_ms": 1000, "options": {"nope": 1}}):
            with pytest.raises(zq.InvalidArgument):
                await op(c, "schedule_add", **args)
        reply = await op(c, "schedule_add", name="c", queue="q", cron="*/5 * * * *")
        assert reply["next_due"] % 300 == 0


async def test_status_of_an_id_in_another_queue_is_unknown(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="w3") as c:
        await c.declare_queue("mine", result_ttl=60)
        mid = await c.publish("mine", b"job")
        async with c.consume("mine", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            await op(c, "complete", queue="mine", id=m.id, attempt=1, ok=True, result=1)
        assert (await op(c, "status", queue="mine", id=mid))["state"] == "succeeded"
        assert (await op(c, "status", queue="other", id=mid))["state"] == "unknown"
        assert (await op(c, "wait", queue="other", id=mid, timeout_ms=100))["state"] == "unknown"
