"""Issue 17, acceptance 3: a stream read by consumer groups, real processes.

A stream of ``N`` entries (10,000 by default, 100,000 under ``slow``) read by three groups at
once, each in processes of its own: ``fast``, ``slow`` (it pauses as it goes), and
``shared``, read by two consumers of which one takes its window and never settles
it and is SIGKILLed. Then a group made from ``first`` after everything was published,
and the same group reset to a time between two batches. Then a stream capped by
size while two groups read it. It proves:

* every group gets every entry (lost = 0 per group), a lone consumer in order of
  offset, once;
* the killed consumer's unacked entries go to the other consumer of its group, as
  second attempts, and to no other group;
* a group started from ``first`` after the fact replays them all, in order; reset
  to a time, it restarts at the first entry stored after it;
* retention by size keeps the stream, as stored, under its limit while groups read
  it; a group misses only entries that retention removed, and reads the rest in
  order.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import zq
from tests.admin_helpers import scrape, value
from tests.cluster_helpers import zq_cli
from tests.helpers import eventually, free_port
from tests.procs import Proc, start_broker
from tests.system.apps._record import read

FRAME = 500
CAP = 100_000  # bytes of bodies the capped stream keeps
HOLD = 200  # the window of the consumer that is killed


def reader(tmp: Path, endpoint: str, group: str, prefetch: int, mode: str) -> list[str]:
    return [sys.executable, "-m", "tests.system.apps.stream_reader", endpoint, "events",
            group, "first", str(prefetch), mode]


async def start_reader(procs: list[Proc], tmp: Path, endpoint: str, group: str,
                       prefetch: int, mode: str) -> Proc:
    p = await Proc.start(reader(tmp, endpoint, group, prefetch, mode),
                         tmp / f"{group}-{len(procs)}.log", {"ZQ_TEST_DIR": str(tmp)})
    procs.append(p)
    await p.wait_for_line("READING", 20)
    return p


def records(tmp: Path, group: str, pid: int | None = None) -> list[dict[str, object]]:
    if pid is not None:
        return read(tmp / f"{group}-{pid}.jsonl")
    out: list[dict[str, object]] = []
    for path in sorted(tmp.glob(f"{group}-*.jsonl")):
        out += read(path)
    return out


def bodies(recs: list[dict[str, object]]) -> set[str]:
    return {str(r["body"]) for r in recs}


def in_order_once(recs: list[dict[str, object]]) -> bool:
    offsets = [int(str(r["offset"])) for r in recs]
    return all(a < b for a, b in itertools.pairwise(offsets))


async def run(tmp: Path, n: int) -> None:
    admin = free_port()
    broker = await start_broker(tmp, "--admin-bind", str(admin))
    procs: list[Proc] = [broker]
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("events")
            await start_reader(procs, tmp, broker.endpoint, "fast", 1000, "ack")
            await start_reader(procs, tmp, broker.endpoint, "slow", 50, "slow")
            survivor = await start_reader(procs, tmp, broker.endpoint, "shared", 100, "ack")
            holder = await start_reader(procs, tmp, broker.endpoint, "shared", HOLD, "hold")
            everything = {f"e{i:06d}" for i in range(n)}
            for i in range(0, n, FRAME):
                await c.publish_many("events", [b"e%06d" % j
                                                for j in range(i, min(n, i + FRAME))])
            await eventually(lambda: len(records(tmp, "shared", holder.pid)) >= HOLD,
                             "the holding consumer to fill its window", 30, 0.05)
            held = records(tmp, "shared", holder.pid)
            holder.signal(signal.SIGKILL)
            await holder.wait(10)
            for group in ("fast", "slow", "shared"):
                await eventually(lambda g=group: bodies(records(tmp, g)) >= everything,
                                 f"group {group} to read every entry", 120, 0.5)
            for group in ("fast", "slow"):
                recs = records(tmp, group)
                assert len(recs) == n, group
                assert in_order_once(recs), group  # once each, in order
            again = {str(r["body"]): r for r in records(tmp, "shared", survivor.pid)
                     if int(str(r["attempt"])) >= 2}
            assert len(held) == HOLD
            assert {str(r["body"]) for r in held} <= set(again)  # redelivered in the group
            assert bodies(records(tmp, "fast")) & {"x"} == set()
            info = await c.stream("events")
            groups = {g["group"]: g for g in info["groups"]}
            for group in ("fast", "slow", "shared"):
                await eventually(lambda g=group: _settled(c, g, info["last"]),
                                 f"group {group} to commit its last offset", 20, 0.05)
            assert info["entries"] == n
            assert groups["fast"]["redelivered"] == 0
            samples = await scrape(f"http://127.0.0.1:{admin}")
            assert value(samples, "zq_stream_entries", stream="events") == n
            assert value(samples, "zq_stream_group_pending", stream="events", group="slow") == 0
            assert value(samples, "zq_stream_group_committed_offset", stream="events",
                         group="shared") == info["last"]
            code, text = await zq_cli("stats", "--endpoint", broker.endpoint)
            assert code == 0, text
            assert f"stream events: {n} entries" in text, text

            # A group made from "first" after the fact replays them all, in order.
            late = await _read(c, "late", "first", n)
            assert [m[1] for m in late] == sorted(everything)
            assert all(a[0] < b[0] for a, b in itertools.pairwise(late))

            # Reset to a time between two batches: it restarts at the second.
            await asyncio.sleep(0.3)  # a gap on the clock between the batches, not a wait
            between = datetime.now(UTC)
            await asyncio.sleep(0.3)
            await c.publish_many("events", [b"b%04d" % i for i in range(1000)])
            await c.reset_group("events", "late", between)
            after = await _read(c, "late", "first", 1000)
            assert [m[1] for m in after] == [f"b{i:04d}" for i in range(1000)]

            await _capped(c, tmp)
    finally:
        for p in procs[1:]:
            if p.proc.returncode is None:
                p.signal(signal.SIGKILL)
                await p.wait(10)
        await broker.terminate_and_expect_exit(0, within=10)


async def _settled(c: zq.Client, group: str, last: int) -> bool:
    g = {g["group"]: g for g in (await c.stream("events"))["groups"]}[group]
    return bool(g["committed"] == last and g["pending"] == 0)


async def _read(c: zq.Client, group: str, start: str, count: int,
                stream: str = "events") -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    async with c.consume(stream, group=group, start=start, prefetch=1000) as consumer:
        while len(out) < count:
            m = await consumer.get(30)
            assert m.offset is not None
            out.append((m.offset, m.body.decode()))
            await m.ack()
    return out


async def _capped(c: zq.Client, tmp: Path) -> None:
    """Retention by size while two groups read: stored bytes stay under the cap."""
    total = 20_000
    await c.declare_stream("capped", max_bytes=CAP)
    got: dict[str, list[int]] = {"c1": [], "c2": []}
    last = 0
    published = asyncio.Event()

    async def consume(group: str, prefetch: int) -> None:
        async with zq.Client(c.endpoint) as own, own.consume(  # one client per group
                "capped", group=group, start="first", prefetch=prefetch) as consumer:
            while not (published.is_set() and got[group] and got[group][-1] == last):
                try:
                    m = await consumer.get(0.2)
                except TimeoutError:
                    continue  # (the last may come before its publish's confirm)
                assert m.offset is not None
                got[group].append(m.offset)
                await m.ack()
                if group == "c2" and len(got[group]) % 50 == 0:
                    await asyncio.sleep(0.002)  # the slower group

    readers = [asyncio.create_task(consume("c1", 500)), asyncio.create_task(consume("c2", 20))]
    await eventually(lambda: _joined(c), "both groups to exist", 10, 0.02)
    peak = 0
    for i in range(0, total, FRAME):
        ids = await c.publish_many("capped", [b"%099d" % j for j in range(i, i + FRAME)])
        last = ids[-1]
        peak = max(peak, _stored(tmp))
    published.set()
    await asyncio.wait_for(asyncio.gather(*readers), 60)
    await eventually(lambda: _under(c), "retention to bring the stream under its cap", 20,
                     0.05)
    assert _stored(tmp) <= CAP
    assert peak <= 2 * CAP + FRAME * 100  # at most what arrives while a trim runs
    info = await c.stream("capped")
    for group, offsets in got.items():
        assert all(a < b for a, b in itertools.pairwise(offsets)), group
        assert offsets[-1] == last, group
    # A group misses only what retention removed before it got there.
    assert info["first"] > 0
    assert info["trimmed"] >= total - CAP // 100 - FRAME


async def _joined(c: zq.Client) -> bool:
    return len((await c.stream("capped"))["groups"]) == 2


async def _under(c: zq.Client) -> bool:
    info = await c.stream("capped")
    return bool(info["bytes"] <= CAP)


def _stored(tmp: Path) -> int:
    """Bytes of bodies the capped stream holds in the broker's database, as stored."""
    db = sqlite3.connect(f"file:{tmp / 'data' / 'zq.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT total(length(e.body)) FROM entries e JOIN queues q "
                         "ON q.qid = e.sid WHERE q.name = ?", ("\x00stream\x00capped",)
                         ).fetchone()
        return int(row[0])
    finally:
        db.close()


async def test_groups_read_a_stream_at_their_own_pace_and_lose_nothing(
        tmp_path: Path) -> None:
    await run(tmp_path, 10_000)


@pytest.mark.slow
async def test_groups_read_a_stream_of_100000_entries(tmp_path: Path) -> None:
    await run(tmp_path, 100_000)
