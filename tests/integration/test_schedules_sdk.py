"""Schedules through the SDK (``add_schedule``, ``schedules``, ``remove_schedule``)
against the real broker core, in process (``zq.testing.Broker``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import pytest

import zq
import zq.testing


@pytest.fixture
async def client() -> AsyncIterator[zq.Client]:
    async with zq.testing.Broker() as broker, broker.client(name="sched-test") as c:
        yield c


async def test_every_fires_at_each_due_time_with_its_headers_and_options(
        client: zq.Client) -> None:
    before = time.time()
    first = await client.add_schedule("tick", "ticks", b"ping", every="100ms",
                                      headers={"kind": "tick"}, priority=7, ttl=30)
    assert before < first <= time.time() + 0.1 + 0.01
    async with client.consume("ticks", prefetch=10) as consumer:
        got = []
        for _ in range(3):
            m = await consumer.get(timeout=2)
            got.append(m)
            await m.ack()
    assert [m.body for m in got] == [b"ping"] * 3
    dues = [m.headers["zq-due"] for m in got]
    assert dues[0] == pytest.approx(first, abs=0.002)
    assert [b - a for a, b in itertools.pairwise(dues)] == pytest.approx([0.1, 0.1],
                                                                     abs=0.0015)
    for m in got:
        assert m.headers["zq-schedule"] == "tick"
        assert m.headers["kind"] == "tick"
        assert time.time() >= m.headers["zq-due"]  # never early
    (s,) = await client.schedules()
    assert s["name"] == "tick"
    assert s["queue"] == "ticks"
    assert s["every_ms"] == 100
    assert s["misfire"] == "once"
    assert s["options"] == {"priority": 7, "ttl_ms": 30_000}
    assert s["fired"] >= 3
    assert s["last_fired"] is not None
    assert s["next_due"] > dues[-1]


async def test_cron_schedules_are_due_on_the_minute(client: zq.Client) -> None:
    due = await client.add_schedule("five", "reports", b"", cron="*/5 * * * *",
                                    misfire="skip")
    assert due > time.time()
    assert due % 300 == 0  # cron is in UTC; epoch seconds are too
    (s,) = await client.schedules()
    assert (s["cron"], s["misfire"], s["every_ms"]) == ("*/5 * * * *", "skip", 0)


async def test_add_replaces_by_name_and_remove_says_whether_it_was_there(
        client: zq.Client) -> None:
    await client.add_schedule("job", "a", b"1", every=3600)
    await client.add_schedule("other", "a", b"2", every="1h")
    await client.add_schedule("job", "b", b"3", every="2h", max_attempts=2, tenant="t1",
                              time_limit=5)
    by_name = {s["name"]: s for s in await client.schedules()}
    assert set(by_name) == {"job", "other"}
    assert by_name["job"]["queue"] == "b"
    assert by_name["job"]["every_ms"] == 7_200_000
    assert by_name["job"]["options"] == {"max_attempts": 2, "tenant": "t1",
                                         "time_limit_ms": 5000}
    assert await client.remove_schedule("job") is True
    assert await client.remove_schedule("job") is False
    assert [s["name"] for s in await client.schedules()] == ["other"]


async def test_a_removed_schedule_stops_firing(client: zq.Client) -> None:
    await client.add_schedule("fast", "fast", b"x", every=0.05)
    async with client.consume("fast", prefetch=100) as consumer:
        m = await consumer.get(timeout=2)
        await m.ack()
        assert await client.remove_schedule("fast")
        # What fired before the removal was read may still arrive; then nothing.
        last_due = m.headers["zq-due"]
        removed_at = time.time()
        while True:
            try:
                m = await consumer.get(timeout=0.3)
            except TimeoutError:
                break
            assert m.headers["zq-due"] <= removed_at
            assert m.headers["zq-due"] > last_due
            last_due = m.headers["zq-due"]
            await m.ack()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "exactly one of"),
    ({"every": 1, "cron": "* * * * *"}, "exactly one of"),
    ({"every": "soon"}, "every must be"),
    ({"every": "5ms"}, "at least 10 ms"),
    ({"cron": "* * * *"}, "5 fields"),
    ({"cron": "0 25 * * *"}, "hour"),
    ({"every": 1, "misfire": "always"}, "misfire must be"),
    ({"every": 1, "priority": 10}, "priority"),
    ({"every": 1, "ttl": -1}, "ttl"),
])
async def test_bad_arguments_fail_before_anything_is_sent(
        client: zq.Client, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(zq.InvalidArgument, match=match):
        await client.add_schedule("bad", "q", b"", **kwargs)  # type: ignore[arg-type]
    assert await client.schedules() == []


async def test_the_broker_refuses_what_the_sdk_lets_through(client: zq.Client) -> None:
    """The SDK's checks are a convenience; the broker checks every argument itself."""
    with pytest.raises(zq.InvalidArgument, match="every_ms"):
        await client.conn.manage("schedule_add", {"name": "raw", "queue": "q", "body": b"",
                                                  "every_ms": 1})
    with pytest.raises(zq.InvalidArgument, match="options"):
        await client.conn.manage("schedule_add", {"name": "raw", "queue": "q", "body": b"",
                                                  "every_ms": 1000,
                                                  "options": {"dedup_id": "x"}})
    assert await client.schedules() == []
