"""Durable by default: what a confirm, an ack and a SIGKILL mean with real broker processes.

* a confirmed message survives a SIGKILL of the broker at any moment; nothing that
  was never published appears; the database file stays intact;
* acked messages do not come back, except the few whose ack was not yet committed
  (at most the consumer's prefetch);
* a full database refuses publishes with STORAGE_FULL (retriable) and stores
  nothing of them; acks free space and publishing works again;
* attempt numbers, delays and the id sequence survive a restart;
* a second broker on a data folder in use refuses to start.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import zq
from tests.procs import Proc, zq_argv
from tests.system.durability_helpers import (
    DurableBroker,
    drain,
    integrity,
    message_rows,
    queue_stats,
    read_db,
    snapshot,
    wait_until,
)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[DurableBroker]:
    b = DurableBroker(tmp_path)
    try:
        yield b
    finally:
        await b.cleanup()


# ------------------------------------------------------------------ 1. crash while publishing

TOTAL = 50_000
BATCH = 100
PRODUCERS = 4


def crash_body(seed: int, i: int) -> bytes:
    return f"crash-{seed}-{i:08d}-".encode().ljust(100, b"x")


def crash_index(body: bytes) -> int:
    return int(body.split(b"-")[2])


def _seeds(default: int, slow: int) -> list[object]:
    return [*range(default),
            *(pytest.param(s, marks=pytest.mark.slow) for s in range(default, default + slow))]


@pytest.mark.parametrize("seed", _seeds(5, 20))
async def test_sigkill_while_publishing_loses_no_confirmed_message(
        node: DurableBroker, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    kill_after = rng.randrange(1, TOTAL - PRODUCERS * BATCH)  # confirmed messages
    await node.start()
    attempted: set[bytes] = set()
    confirmed: dict[int, int] = {}  # index -> id from the confirm
    killed = asyncio.Event()

    async with zq.Client(node.endpoint, name="producer") as c:

        async def produce(k: int) -> None:
            for start in range(k * BATCH, TOTAL, PRODUCERS * BATCH):
                idx = range(start, start + BATCH)
                bodies = [crash_body(seed, i) for i in idx]
                attempted.update(bodies)
                ids = await c.publish_many("crash", bodies)
                confirmed.update(zip(idx, ids, strict=True))
                if len(confirmed) >= kill_after and not killed.is_set():
                    node.sigkill()  # at once: other batches are on their way or committing
                    killed.set()

        tasks = [asyncio.create_task(produce(k)) for k in range(PRODUCERS)]
        try:
            async with asyncio.timeout(30):
                await killed.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    await node.crash()
    n_confirmed = len(confirmed)
    assert n_confirmed >= kill_after

    # The file as the crash left it: intact, and holding every confirmed message.
    crashed = snapshot(node.data, tmp_path / "crashed")
    assert integrity(crashed) == "ok"
    rows = message_rows(crashed)
    strangers = [r for r in rows if r[4] not in attempted or r[1] != "crash"]
    assert not strangers, f"rows that were never published: {strangers[:3]}"
    stored = {crash_index(body): mid for mid, _q, _a, _r, body in rows}
    assert len(stored) == len(rows), "a message was stored twice"
    not_stored = sorted(set(confirmed) - set(stored))
    assert not not_stored, (f"{len(not_stored)} of {len(confirmed)} confirmed message(s) "
                            f"missing from the file after the kill, e.g. indices {not_stored[:10]}")
    assert all(stored[i] == mid for i, mid in confirmed.items()), "a confirmed id changed"

    await node.start()
    async with zq.Client(node.endpoint) as c:
        recovered = queue_stats(await c.stats(), "crash")["ready"]
    assert recovered == len(stored)
    got = await drain(node.endpoint, "crash", recovered)

    ids = [g.id for g in got]
    assert len(set(ids)) == len(ids), "a message was delivered twice"
    bodies = {g.body for g in got}
    assert bodies <= attempted, f"never published: {sorted(bodies - attempted)[:5]}"
    delivered = {crash_index(g.body): g.id for g in got}
    lost = sorted(set(confirmed) - set(delivered))
    assert not lost, f"{len(lost)} confirmed message(s) lost, e.g. indices {lost[:10]}"
    assert all(delivered[i] == mid for i, mid in confirmed.items()), "a confirmed id changed"
    assert {g.attempt for g in got} == {1}  # none was delivered before the crash

    # Producers publish again what had no confirm; ids go on from the highest used.
    rest = sorted(set(range(TOTAL)) - set(delivered))
    async with zq.Client(node.endpoint, name="producer-2") as c:
        new_ids = await c.publish_many("crash", [crash_body(seed, i) for i in rest])
    assert not new_ids or min(new_ids) > max(ids, default=0)
    again = await drain(node.endpoint, "crash", len(rest))
    assert sorted(crash_index(g.body) for g in again) == rest

    await node.stop()
    assert integrity(node.db) == "ok"
    assert read_db(node.db, "SELECT count(*) FROM messages") == [(0,)]


# ------------------------------------------------------------------ 2. acks survive a crash


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_acked_messages_do_not_come_back_after_sigkill(node: DurableBroker,
                                                             seed: int) -> None:
    n, prefetch = 5000, 50
    rng = random.Random(1000 + seed)
    kill_at = rng.randrange(prefetch, n - prefetch)  # acks before the kill
    await node.start()
    async with zq.Client(node.endpoint, name="producer") as c:
        ids = await c.publish_many("acks", [b"ack-%d" % i for i in range(n)])
    assert ids == list(range(ids[0], ids[0] + n))

    acked: set[int] = set()
    handed: list[int] = []  # ids consumer.get() returned, in order
    async with zq.Client(node.endpoint, name="consumer") as c:
        consumer = c.consume("acks", prefetch=prefetch)
        async with consumer:
            while True:
                m = await consumer.get(timeout=5)
                handed.append(m.id)
                assert m.attempt == 1
                if len(acked) == kill_at:
                    node.sigkill()  # m is held, not acked: in flight at the kill
                    break
                await m.ack()
                acked.add(m.id)
            received = consumer.received
    await node.crash()
    assert handed == ids[:len(handed)], "delivered out of id order"
    assert len(acked) == kill_at

    await node.start()
    async with zq.Client(node.endpoint) as c:
        stored = queue_stats(await c.stats(), "acks")["ready"]
    got = await drain(node.endpoint, "acks", stored, prefetch=prefetch)
    by_id = {g.id: g for g in got}
    assert len(by_id) == len(got)
    assert set(by_id) <= set(ids)

    came_back_acked = sorted(set(by_id) & acked)
    assert len(came_back_acked) <= prefetch, (
        f"{len(came_back_acked)} acked message(s) came back, more than prefetch {prefetch}")
    missing = sorted(set(ids) - acked - set(by_id))
    assert not missing, f"{len(missing)} unacked message(s) lost, e.g. {missing[:10]}"

    # Delivered before the kill (acked or not): a broker crash costs no attempt, so the
    # next delivery repeats attempt 1 (PROTOCOL.md 12.5).
    for mid in ids[:received]:
        if mid in by_id:
            assert by_id[mid].attempt == 1, by_id[mid]
    assert by_id[handed[-1]].attempt == 1
    # The broker held at most `prefetch` unacked messages, and delivers in id order:
    # nothing past the acked ones plus that window was ever delivered.
    for mid in ids[len(acked) + prefetch:]:
        assert by_id[mid].attempt == 1, by_id[mid]
    for g in got:
        assert g.attempt in (1, 2), g
    await node.stop()
    assert integrity(node.db) == "ok"


# ------------------------------------------------------------------ 3. disk full

MAX_DB_BYTES = 4 * 1024 * 1024  # about 3,000 messages of 1 KiB


async def test_full_database_refuses_publishes_then_acks_make_room(node: DurableBroker) -> None:
    await node.start("--max-db-bytes", str(MAX_DB_BYTES))
    body = b"f" * 1024
    confirmed: list[int] = []
    async with zq.Client(node.endpoint, name="producer") as c:
        with pytest.raises(zq.StorageFull) as info:  # noqa: PT012 - publish until it fails
            async with asyncio.timeout(30):
                while True:
                    confirmed.extend(await c.publish_many("full", [body] * 20))
        exc = info.value
        assert exc.retriable is True
        assert exc.name == "STORAGE_FULL"
        assert 1000 <= len(confirmed) <= 10_000, len(confirmed)

        # What the file holds (committed, WAL included) is exactly what was confirmed.
        assert read_db(node.db, "SELECT count(*) FROM messages") == [(len(confirmed),)]
        assert [r[0] for r in read_db(node.db, "SELECT id FROM messages ORDER BY id")] == \
            sorted(confirmed)
        assert integrity(node.db) == "ok"
        assert queue_stats(await c.stats(), "full")["ready"] == len(confirmed)

        # Still full: the same request again is refused the same way.
        with pytest.raises(zq.StorageFull):
            await c.publish_many("full", [body] * 20)
        assert read_db(node.db, "SELECT count(*) FROM messages") == [(len(confirmed),)]

        # Consumers go on working; their acks free space.
        freed = 300
        async with c.consume("full", prefetch=100) as consumer:
            for _ in range(freed):
                m = await consumer.get(timeout=5)
                assert m.body == body
                await m.ack()

            async def acks_received() -> bool:
                return bool(queue_stats(await c.stats(), "full")["acked"] == freed)

            await wait_until(acks_received, what="acks to reach the broker")
            await wait_until(lambda: _count_is(node, len(confirmed) - freed),
                             what="acked rows to be deleted")

        new_ids: list[int] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not new_ids:
            try:
                new_ids = await c.publish_many("full", [body] * 20)
            except zq.StorageFull:
                assert loop.time() < deadline, "publishing still refused 10 s after acks"
                await asyncio.sleep(0.05)
        assert min(new_ids) > max(confirmed)
        assert read_db(node.db, "SELECT count(*) FROM messages") == [
            (len(confirmed) - freed + 20,)]
    await node.stop()
    assert integrity(node.db) == "ok"


async def _count_is(node: DurableBroker, n: int) -> bool:
    return read_db(node.db, "SELECT count(*) FROM messages") == [(n,)]


# ------------------------------------------------------------------ 4. attempts, delays, ids


async def test_attempts_delays_and_ids_survive_sigkill(node: DurableBroker) -> None:
    delay = 2.0
    await node.start()
    async with zq.Client(node.endpoint, name="t") as c:
        (id_delayed,) = await c.publish_many("delayed", [b"delayed"])
        (id_held,) = await c.publish_many("held", [b"held"])
        (id_never,) = await c.publish_many("never", [b"never"])
        (id_acked,) = await c.publish_many("acked", [b"acked"])
        async with c.consume("delayed", prefetch=1) as cd, c.consume("held", prefetch=1) as ch, \
                c.consume("acked", prefetch=1) as ca:
            m = await cd.get(timeout=5)
            assert (m.id, m.attempt) == (id_delayed, 1)
            t_nack = time.monotonic()
            await m.nack(requeue=True, delay=delay)
            m = await ch.get(timeout=5)
            assert (m.id, m.attempt) == (id_held, 1)  # held, never acked
            m = await ca.get(timeout=5)
            assert (m.id, m.attempt) == (id_acked, 1)
            await m.ack()

            # Nothing confirms an ack or a nack: watch the file until both are committed.
            async def stored() -> bool:
                rows = {r[0]: r[2:4] for r in message_rows(node.db)}
                return (id_acked not in rows and rows[id_delayed][0] == 1
                        and rows[id_delayed][1] > 0)

            await wait_until(stored, what="the nack and the ack to be committed")
            rows = {r[0]: r[2] for r in message_rows(node.db)}
            assert rows == {id_delayed: 1, id_held: 1, id_never: 0}  # attempts, as stored
            assert time.monotonic() - t_nack < delay - 0.5, "too slow to test the delay"
            node.sigkill()
        await node.crash()

    await node.start()
    async with zq.Client(node.endpoint, name="t2") as c:
        s = await c.stats()
        assert queue_stats(s, "acked")["ready"] == 0  # the acked message is gone for good
        assert queue_stats(s, "held")["ready"] == 1
        assert queue_stats(s, "never")["ready"] == 1
        assert queue_stats(s, "delayed")["ready"] == 0
        assert queue_stats(s, "delayed").get("delayed") == 1
        async with c.consume("delayed", prefetch=1) as cd, c.consume("held", prefetch=1) as ch, \
                c.consume("never", prefetch=1) as cn:
            m = await ch.get(timeout=5)
            assert (m.id, m.body, m.attempt) == (id_held, b"held", 1)  # the crash: no cost
            await m.ack()
            m = await cn.get(timeout=5)
            assert (m.id, m.body, m.attempt) == (id_never, b"never", 1)
            await m.ack()
            m = await cd.get(timeout=delay + 5)
            t_delivered = time.monotonic()
            assert (m.id, m.body, m.attempt) == (id_delayed, b"delayed", 2)
            assert t_delivered - t_nack >= delay, (
                f"delivered {t_delivered - t_nack:.3f}s after a nack with delay {delay}s")
            assert t_delivered - t_nack < delay + 3.0
            await m.ack()
        new_id = await c.publish("acked", b"new")
        assert new_id > max(id_delayed, id_held, id_never, id_acked)
    await node.stop()
    assert integrity(node.db) == "ok"


async def test_ids_keep_increasing_after_sigkill_when_everything_was_acked(
        node: DurableBroker) -> None:
    await node.start()
    async with zq.Client(node.endpoint) as c:
        ids = await c.publish_many("q", [b"m%d" % i for i in range(10)])
        async with c.consume("q", prefetch=10) as consumer:
            for _ in ids:
                await (await consumer.get(timeout=5)).ack()
            await wait_until(lambda: _count_is(node, 0), what="the acks to be committed")
        node.sigkill()
        await node.crash()
    assert read_db(node.db, "SELECT count(*) FROM messages") == [(0,)]

    await node.start()
    async with zq.Client(node.endpoint) as c:
        assert queue_stats(await c.stats(), "q")["ready"] == 0
        new = await c.publish("q", b"after")
        assert new > max(ids)
        got = await drain(node.endpoint, "q", 1)
        assert [(g.id, g.body, g.attempt) for g in got] == [(new, b"after", 1)]
    await node.stop()


# ------------------------------------------------------------------ 5. one broker per folder


async def test_second_broker_on_the_same_data_folder_refuses_to_start(
        node: DurableBroker, tmp_path: Path) -> None:
    await node.start()
    async with zq.Client(node.endpoint) as c:
        first_id = await c.publish("q", b"kept")

    log = tmp_path / "second.log"
    second = await Proc.start(
        zq_argv("broker", "--bind", "tcp://127.0.0.1:*", "--data", str(node.data)), log)
    try:
        try:
            out = await second.readline(15)
        except EOFError:
            out = ""  # exited without a word on stdout
        assert not out.startswith("ZQ READY"), f"second broker started: {out!r}"
        rc = await second.wait(15)
    finally:
        await second.kill()
    assert second.proc.stdout is not None
    out += (await second.proc.stdout.read()).decode()
    err = log.read_text()
    assert rc != 0, f"second broker exited {rc}; stderr:\n{err}"
    assert "ZQ READY" not in out, out
    assert "in use" in err, err
    assert str(node.data) in err, err

    # The first broker is untouched and still owns its store.
    async with zq.Client(node.endpoint) as c:
        got = await drain(node.endpoint, "q", 1)
        assert [(g.id, g.body) for g in got] == [(first_id, b"kept")]
        assert await c.publish("q", b"more") > first_id
    await node.stop()
