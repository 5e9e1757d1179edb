"""The uplink's side of the core (zq.core.uplink), no I/O. A run (one PUBLISH frame of a
forwarded queue) goes to the centre with its first id as seq: after a crash it must be
found again the same, whole, never merged with another, never split."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.unit.test_core import A, Harness, P, delivers, errors_of
from zq.core.uplink import Run
from zq.persistence.base import Rewrite, WriteBatch
from zq.persistence.sqlite import SqliteStore
from zq.protocol import codec
from zq.protocol import frames as f
from zq.schedules import Schedule

UPLINK = {"uplink": "tcp://127.0.0.1:9", "uplink_queues": "orders.#"}
WALL = 1_000_000.0  # wall_offset of the unit tests: now 100.0 is wall 1,000,100.0
Shape = tuple[str, int, int]  # (queue, seq, count): what the centre tells a resend by


def edge(**cfg: Any) -> Harness:
    """A durable edge broker forwarding ``orders.#``, with a producer and a consumer."""
    h = Harness(**UPLINK, **cfg)
    h.core.durable = True
    h.core.wall_offset = WALL
    h.hello(P, A)
    return h


def pub(h: Harness, queue: str, n: int, opts: f.Options | None = None,
        headers: list[Any] | None = None, body: bytes = b"m") -> None:
    h.seq += 1
    h.send(P, f.Publish(queue, h.seq, [body + b"%d" % i for i in range(n)], headers or [],
                        opts))


def commit(h: Harness) -> WriteBatch:
    """One commit of everything staged (as the broker's commit task does)."""
    c = h.core.take_commit()
    h.core.committed(c.pending)
    h.core.release(c.deliveries)
    h.take()
    return c.batch


def take(h: Harness, max_msgs: int = 1 << 30, max_bytes: int = 1 << 40) -> list[Run]:
    """The runs taken, by queue name (a stable sort: each queue's own order is kept; the
    queue that goes first turns from one take to the next)."""
    return sorted(h.core.uplink_take(max_msgs, max_bytes), key=lambda r: r.q.name)


def shapes(runs: list[Run]) -> list[Shape]:
    return [(r.q.name, r.seq, len(r.msgs)) for r in runs]


def frames_of(batch: WriteBatch) -> list[Shape]:
    return [(queue, first, len(bodies)) for first, queue, _, bodies in batch.inserts]


# ------------------------------------------------------------------ ids


def test_a_forwarded_frame_gets_consecutive_ids_and_the_next_one_is_skipped() -> None:
    h = edge()
    pub(h, "orders.a", 3)
    pub(h, "other", 2)
    pub(h, "orders.a", 1)
    pub(h, "orders.b", 2)
    pub(h, "other", 1)
    pub(h, "other", 2)
    batch = commit(h)
    # orders.*: 1-3 (4 unused), 7 (8 unused), 9-10 (11 unused); other: no gaps of its own.
    assert frames_of(batch) == [("orders.a", 1, 3), ("other", 5, 2), ("orders.a", 7, 1),
                                ("orders.b", 9, 2), ("other", 12, 1), ("other", 13, 2)]
    assert h.core.next_id == 15


def test_without_an_uplink_no_id_is_skipped() -> None:
    h = Harness()
    h.core.durable = True
    h.hello(P)
    pub(h, "orders.a", 3)
    pub(h, "orders.a", 2)
    assert frames_of(commit(h)) == [("orders.a", 1, 3), ("orders.a", 4, 2)]


def test_a_message_a_schedule_fires_into_a_forwarded_queue_is_a_run_of_its_own() -> None:
    h = edge()
    for name, queue in (("s1", "orders.s"), ("s2", "other")):
        h.core.schedules[name] = Schedule(name, queue, b"tick", every_ms=60_000,
                                          anchor=h.now + WALL, next_due=h.now + WALL)
    h.core.tick(h.now)
    pub(h, "orders.s", 2)
    batch = commit(h)
    fired = sorted((q, first, len(b)) for first, q, _, b in batch.inserts[:2])
    assert fired == [("orders.s", 1, 1), ("other", 3, 1)]  # 2 is orders.s's gap
    assert batch.inserts[2][0] == 4  # other's message left no gap
    assert shapes(take(h)) == [("orders.s", 1, 1), ("orders.s", 4, 2)]


# ------------------------------------------------------------------ runs


def test_runs_are_the_frames_never_merged_never_split() -> None:
    h = edge()
    pub(h, "orders.a", 3, body=b"a")
    pub(h, "orders.a", 2, body=b"b")  # straight after a: only the skipped id tells them apart
    pub(h, "other", 4)
    pub(h, "orders.a", 1, body=b"c")
    pub(h, "orders.b", 2, body=b"d")
    commit(h)
    runs = take(h)
    assert shapes(runs) == [("orders.a", 1, 3), ("orders.a", 5, 2), ("orders.a", 12, 1),
                            ("orders.b", 14, 2)]
    assert [[m.body for m in r.msgs] for r in runs] == [
        [b"a0", b"a1", b"a2"], [b"b0", b"b1"], [b"c0"], [b"d0", b"d1"]]
    assert take(h) == []  # taken out of their queues
    assert h.core.queues["orders.a"].mem_bytes == h.core.queues["orders.b"].mem_bytes == 0
    assert h.core.queues["other"].ready_count() == 4  # not forwarded: stays here


def test_take_stops_at_the_limits_but_always_takes_the_first_run_whole() -> None:
    h = edge()
    pub(h, "orders.a", 3, body=b"x" * 9)  # 10-byte bodies
    pub(h, "orders.a", 2, body=b"x" * 9)
    pub(h, "orders.a", 4, body=b"x" * 9)
    pub(h, "orders.a", 1, body=b"x" * 9)
    commit(h)
    assert shapes(take(h, max_msgs=1)) == [("orders.a", 1, 3)]  # more than 1: still whole
    assert shapes(take(h, max_msgs=5)) == [("orders.a", 5, 2)]  # 2 + 4 > 5
    assert shapes(take(h, max_bytes=49)) == [("orders.a", 8, 4)]  # one run, 40 bytes
    assert shapes(take(h, max_msgs=1)) == [("orders.a", 13, 1)]
    assert take(h) == []


@pytest.mark.parametrize(("room", "runs"), [(9, 1), (10, 2)])
def test_take_counts_bytes_of_bodies_and_headers(room: int, runs: int) -> None:
    h = edge()
    hdr = {"k": "v" * 20}
    pub(h, "orders.a", 2, body=b"x" * 9, headers=[hdr, None])  # 20 bytes + one header
    pub(h, "orders.a", 1, body=b"x" * 9)  # 10 bytes
    commit(h)
    first = 20 + codec.header_size(hdr)
    assert [r.size for r in take(h, max_bytes=first + room)] == [first, 10][:runs]


# ------------------------------------------------------------------ confirms and refusals


def test_a_confirmed_run_is_deleted_here_and_counted() -> None:
    h = edge()
    pub(h, "orders.a", 3)
    pub(h, "orders.a", 2)
    commit(h)
    a, b = take(h)
    h.core.uplink_stored(a)
    batch = commit(h)
    assert batch.deletes == [1, 2, 3]
    assert batch.updates == []
    q = h.core.queues["orders.a"]
    assert (q.forwarded, h.core.counters["forwarded"]) == (3, 3)
    h.core.uplink_stored(b)
    assert commit(h).deletes == [5, 6]


def test_a_refused_run_is_dead_lettered_with_the_reason_and_nothing_is_lost() -> None:
    h = edge()
    pub(h, "orders.a", 1)
    pub(h, "orders.a", 2, body=b"kept")
    commit(h)
    _, run = take(h)
    h.now += 1
    h.core.uplink_refused(run, "FRAME_TOO_LARGE: 2 bodies exceed 1", h.now)
    batch = commit(h)
    assert batch.deletes == []  # kept, in the dead-letter queue
    moved = [u for u in batch.updates if isinstance(u, Rewrite)]
    assert [(u.id, u.queue) for u in moved] == [(3, "orders.a.dlq"), (4, "orders.a.dlq")]
    for u in moved:
        hdrs = u.headers or {}
        [entry] = hdrs["zq-history"]
        assert entry["outcome"] == "refused"
        assert "FRAME_TOO_LARGE: 2 bodies exceed 1" in entry["reason"]
        assert "FRAME_TOO_LARGE" in hdrs["zq-reason"]
        assert hdrs["zq-origin"] == "orders.a"
    assert h.core.counters["uplink_refused"] == 2
    dlq = h.core.queues["orders.a.dlq"]
    assert not dlq.forward  # matches orders.# but stays here
    assert h.core.queues["orders.a"].mem_bytes == 0
    assert dlq.mem_bytes == len(b"kept0") + len(b"kept1")
    assert take(h) == []  # not sent again
    h.send(A, f.Credit("orders.a.dlq", 10))  # a dead-letter queue is consumed here
    (_, d), = delivers(h.run())
    assert d.ids == [3, 4]
    assert d.bodies == [b"kept0", b"kept1"]


# ------------------------------------------------------------------ options


def test_options_travel_with_the_run() -> None:
    h = edge()
    pub(h, "orders.a", 1, f.Options(priority=3, tenant="t", max_attempts=4,
                                    time_limit_ms=2000, dedup_id="d-1"))
    pub(h, "orders.a", 2)
    commit(h)
    runs = {r.seq: r for r in take(h)}
    assert h.core.uplink_options(runs[1], h.now) == f.Options(
        priority=3, tenant="t", max_attempts=4, time_limit_ms=2000, dedup_id="d-1")
    assert h.core.uplink_options(runs[3], h.now) is None


def test_the_ttl_that_travels_is_what_is_left_of_it() -> None:
    h = edge()
    pub(h, "orders.a", 2, f.Options(ttl_ms=10_000))
    commit(h)
    [run] = take(h)
    assert h.core.uplink_options(run, h.now + 4.0) == f.Options(ttl_ms=6000)
    assert h.core.uplink_options(run, h.now + 9.9999) == f.Options(ttl_ms=1)
    assert h.core.uplink_options(run, h.now + 60.0) == f.Options(ttl_ms=1)  # expires there


def test_a_delayed_run_travels_at_once_with_its_due_time() -> None:
    h = edge()
    h.core.wall_offset = WALL + 0.0004  # the due time falls between two milliseconds
    pub(h, "orders.a", 2, f.Options(delay_ms=1500))
    pub(h, "orders.a", 1, f.Options(delay_ms=500, priority=2))
    pub(h, "orders.a", 1)
    commit(h)
    runs = take(h)
    assert sorted(shapes(runs)) == [("orders.a", 1, 2), ("orders.a", 4, 1), ("orders.a", 6, 1)]
    by_seq = {r.seq: r for r in runs}
    eta = h.core.uplink_options(by_seq[1], h.now).eta_ms  # type: ignore[union-attr]
    due_ms = (h.now + 1.5 + h.core.wall_offset) * 1000
    assert eta is not None
    assert due_ms <= eta <= due_ms + 1  # rounded up: never early
    assert h.core.uplink_options(by_seq[4], h.now + 0.5) == f.Options(priority=2)  # due: none
    assert h.core.uplink_options(by_seq[6], h.now) is None
    assert h.core.queues["orders.a"].delayed == 0
    assert h.core.delayed_entries() == []


def test_a_dedup_id_is_stored_for_forwarded_queues_only() -> None:
    h = edge()
    pub(h, "orders.a", 1, f.Options(dedup_id="d-1", priority=1))
    pub(h, "other", 1, f.Options(dedup_id="d-2", priority=1))
    placed = {first: msgpack.unpackb(blob) for first, _, _, blob in commit(h).placed}
    assert placed == {1: {"priority": 1, "dedup_id": "d-1"}, 3: {"priority": 1}}


# ------------------------------------------------------------------ never consumed here


def test_credit_on_a_forwarded_queue_is_refused_and_it_is_never_delivered() -> None:
    h = edge()
    h.send(A, f.Credit("orders.a", 10))
    [(who, err)] = errors_of(h.take())
    assert (who, err.name, err.op) == (A, "INVALID_ARGUMENT", f.CREDIT)
    assert "forwarded" in err.text
    h.send(A, f.Credit("other", 10))
    assert errors_of(h.take()) == []
    pub(h, "orders.a", 2)
    pub(h, "other", 2)
    commit(h)
    assert [(d.queue, d.ids) for _, d in delivers(h.run())] == [("other", [4, 5])]
    assert h.core.queues["orders.a"].ready_count() == 2


def test_the_expiry_sweep_leaves_forwarded_messages_their_ttl() -> None:
    h = edge()
    pub(h, "orders.a", 1, f.Options(ttl_ms=1000))
    pub(h, "other", 1, f.Options(ttl_ms=1000))
    commit(h)
    for dt in (0.0, 1.5, 3.0):
        h.core.tick(h.now + dt)
    assert h.core.counters["expired"] == 1  # other's
    assert h.core.queues["orders.a"].ready_count() == 1
    [run] = take(h)
    assert h.core.uplink_options(run, h.now + 3.0) == f.Options(ttl_ms=1)


def test_dead_letter_queues_never_match_and_paused_queues_wait() -> None:
    h = edge()
    core = h.core
    names = ("orders.a", "orders.x.y", "orders.dlq", "orders.a.dlq", "other")
    assert [core.queue(n).forward for n in names] == [True, True, False, False, False]
    pub(h, "orders.a", 1)
    pub(h, "orders.b", 2)
    commit(h)
    core.queues["orders.a"].paused = True
    assert shapes(take(h)) == [("orders.b", 3, 2)]
    assert take(h) == []
    core.queues["orders.a"].paused = False
    assert shapes(take(h)) == [("orders.a", 1, 1)]


def test_backlog_counts_what_waits_to_be_forwarded() -> None:
    h = edge(window=4)
    pub(h, "orders.a", 4)
    pub(h, "orders.a", 2)  # on disk
    pub(h, "orders.b", 1, f.Options(delay_ms=5000))
    pub(h, "other", 3)
    commit(h)
    back = h.core.uplink_backlog(h.now)
    assert back == {"queues": {"orders.a": 6, "orders.b": 1}, "backlog": 7, "oldest": h.now}
    take(h)
    assert h.core.uplink_backlog(h.now)["queues"] == {"orders.a": 2}


# ------------------------------------------------------------------ crash and paging


class Edge:
    """An edge broker's core over a real SqliteStore: commit, page, crash, recover."""

    def __init__(self, path: Path, now: float, made: list[Edge], **cfg: Any) -> None:
        self.h, self.cfg, self.made = edge(**cfg), cfg, made
        self.h.now = now
        self.h.core.wall_offset = time.time() - 100.0  # now 100.0 is the real wall clock
        self.store = SqliteStore(path, reserve_bytes=0)
        self.frames: list[Shape] = []  # every frame stored, as (queue, first id, count)
        made.append(self)  # closed at the end of the test, failed or not

    async def open(self) -> None:
        rec = await self.store.open(self.h.core.cfg.window)
        self.h.core.recover(rec, self.h.now)

    async def commit(self) -> WriteBatch:
        c = self.h.core.take_commit()
        await self.store.commit(c.batch)
        self.h.core.committed(c.pending)
        self.h.core.release(c.deliveries)
        self.h.take()
        self.frames += frames_of(c.batch)
        return c.batch

    def forwarded(self) -> list[Shape]:
        return sorted(s for s in self.frames if s[0] != "other")

    async def page(self, size: int | None = None) -> bool:
        """Read the pages the core asks for (or of ``size``); whether it read any."""
        core = self.h.core
        wanted = core.wanted_pages() if size is None else [
            (q.name, q.cursor, size) for q in core.forwarded_queues() if q.disk]
        for name, after, limit in wanted:
            core.paged_in(name, limit, await self.store.load(name, after, limit), self.h.now)
        return bool(wanted)

    async def crash(self, later: float) -> Edge:
        """The broker stops without a word; a new one recovers from the same folder."""
        await self.store.close()  # (its lock: a second store in this process needs it)
        new = Edge(self.store.dir, self.h.now + later, self.made, **self.cfg)
        new.h.core.wall_offset = self.h.core.wall_offset
        new.frames = list(self.frames)
        await new.open()
        return new


Edges = Callable[..., Awaitable[Edge]]


def opts_of(h: Harness, runs: list[Run]) -> dict[int, dict[str, Any]]:
    return {r.seq: o.to_map() if (o := h.core.uplink_options(r, h.now)) else {} for r in runs}


@pytest.fixture
async def edges(tmp_path: Path) -> AsyncIterator[Edges]:
    made: list[Edge] = []

    async def make(**cfg: Any) -> Edge:
        e = Edge(tmp_path / "data", 100.0, made, **cfg)
        await e.open()
        return e

    yield make
    for e in made:
        await e.store.close()


async def test_after_a_crash_the_same_runs_come_back_and_new_ones_never_join_them(
        edges: Edges) -> None:
    e = await edges()
    h = e.h
    pub(h, "orders.a", 3)
    pub(h, "orders.a", 1, f.Options(priority=5, dedup_id="d-1"))
    pub(h, "other", 2)
    pub(h, "orders.a", 2, f.Options(delay_ms=60_000, tenant="t1"))
    await e.commit()
    pub(h, "orders.b", 4, f.Options(ttl_ms=600_000), headers=[{"k": 1}, None, None, {"k": 4}])
    pub(h, "other", 1, f.Options(dedup_id="d-2"))
    pub(h, "orders.a", 1, f.Options(tenant="t1", max_attempts=3, time_limit_ms=5000))
    pub(h, "orders.a", 5, body=b"y" * 100)  # the last frame stored: its id + 1 is unused
    await e.commit()
    sent = take(h, max_msgs=4) + take(h)  # in flight, in two rounds
    assert sorted(shapes(sent)) == e.forwarded()
    confirmed, unstored = sorted(sent, key=lambda r: r.seq)[:2]
    h.core.uplink_stored(confirmed)  # the centre has it, and the delete is stored
    await e.commit()
    h.core.uplink_stored(unstored)  # the centre has it: the crash comes before the delete
    before = [r for r in sent if r is not confirmed]
    opts = opts_of(h, before)

    e2 = await e.crash(later=50.0)
    h2 = e2.h
    after = take(h2)
    assert sorted(shapes(after)) == sorted(shapes(before))
    assert [[m.body for m in r.msgs] for r in sorted(after, key=lambda r: r.seq)] == [
        [m.body for m in r.msgs] for r in sorted(before, key=lambda r: r.seq)]
    opts2 = opts_of(h2, after)
    for seq, o in opts.items():
        o2 = opts2[seq]
        timed = ("eta_ms", "ttl_ms")
        assert {k: v for k, v in o2.items() if k not in timed} == {
            k: v for k, v in o.items() if k not in timed}, seq
        assert set(o2) == set(o), seq
        if "eta_ms" in o:  # the same due time (wall clock), give or take rounding
            assert abs(o2["eta_ms"] - o["eta_ms"]) <= 1
        if "ttl_ms" in o:  # what is left of it, 50 s later
            assert abs(o2["ttl_ms"] - (o["ttl_ms"] - 50_000)) <= 1
    assert opts[e.frames[1][1]]["dedup_id"] == "d-1"  # the second frame's
    assert "eta_ms" in opts[e.frames[3][1]]
    assert "ttl_ms" in opts[e.frames[4][1]]
    other = [m for ln in h2.core.queues["other"].order for m in ln.msgs]
    assert [m.opts for m in other] == [None, None, None]  # dedup_id not kept for other

    pub(h2, "orders.a", 2)
    pub(h2, "orders.b", 1)
    new = frames_of(await e2.commit())
    ends = {(q, seq + n) for q, seq, n in shapes(after)}  # where a run would go on
    assert not {(q, first) for q, first, _ in new} & ends
    assert sorted(shapes(take(h2))) == sorted(new)


async def drain(e: Edge, page: int | None = None) -> list[Shape]:
    """Every run, paging as the broker does (or by ``page``); each a whole frame."""
    got: list[Shape] = []
    for _ in range(100):
        runs = shapes(take(e.h))
        assert set(runs) <= set(e.forwarded()), "a partial run was taken"
        got += runs
        if not runs and not await e.page(page):
            break
    return sorted(got)


SIZES = [[1, 3, 2, 1], [2, 2, 2, 1, 1, 1, 2], [1, 1, 1, 1, 3, 1, 1, 3, 1]]


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("page", [1, 2, 3, 5])
async def test_runs_are_whole_whatever_size_the_pages_are_and_after_a_crash(
        edges: Edges, sizes: list[int], page: int) -> None:
    e = await edges(window=3)
    for i, n in enumerate(sizes):
        pub(e.h, "orders.a", n, f.Options(priority=1) if i % 3 == 2 else None)
        pub(e.h, "other", 1)
        await e.commit()  # one by one: the queue spills to disk as it goes
    assert e.h.core.queues["orders.a"].disk
    assert await drain(e, page) == e.forwarded()
    e2 = await e.crash(later=1.0)  # none confirmed: all again, the same, from 3 in memory
    assert e2.h.core.queues["orders.a"].disk
    assert await drain(e2, page) == e.forwarded()


@pytest.mark.parametrize("sizes", [
    pytest.param([1, 2, 2, 1, 3, 1, 2, 3, 3, 1, 2], id="frames-of-up-to-half-the-window"),
    pytest.param([2, 4, 2, 4, 1], id="frames-of-two-thirds-of-the-window"),
    pytest.param([7, 7], id="frames-larger-than-the-window")])
async def test_a_forwarded_backlog_drains_through_the_brokers_own_pages(
        edges: Edges, sizes: list[int]) -> None:
    e = await edges(window=6)  # (by default 20,000; max_publish_batch 10,000 need not be less)
    for n in sizes:
        pub(e.h, "orders.a", n)
        await e.commit()
    q = e.h.core.queues["orders.a"]
    assert await drain(e) == e.forwarded(), (
        f"stuck: {q.ready_count()} in memory (a run waiting for the rest of it), "
        f"{q.disk} on disk, pages wanted: {e.h.core.wanted_pages()}")


async def test_a_delayed_run_split_by_a_page_is_taken_whole_after_its_due_time(
        edges: Edges) -> None:
    e = await edges(window=4)
    pub(e.h, "orders.a", 4)
    pub(e.h, "orders.a", 3, f.Options(delay_ms=5000))  # on disk
    await e.commit()
    first, delayed = e.forwarded()
    assert shapes(take(e.h)) == [first]
    await e.page(2)  # the delayed frame's first two
    assert take(e.h) == []  # its third may follow
    e.h.now += 10.0  # due meanwhile (the centre was away, say)
    e.h.core.tick(e.h.now)
    await e.page(2)  # its third, due by now
    assert shapes(take(e.h)) == [delayed]
