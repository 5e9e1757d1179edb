"""Streams (issue 17) under hostile conditions, real processes: an independent review.

Each test starts a real broker (SQLite unless it says otherwise) on loopback and tries
to lose, duplicate beyond the at-least-once window, misplace or orphan a stream's
entries or a group's committed offset: SIGKILL of the broker mid-run, retention by
size and age across restarts, wrong-order and ill-typed frames on a raw socket, name
clashes with queues and topics, a consumer process killed while holding entries, a
hundred groups on a long stream.

The tests under "found with bad input" reproduce bugs this review found (fixed since);
each docstring says what went wrong and where.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import zq
from tests.helpers import eventually, free_port
from tests.procs import Proc, start_broker, zq_argv
from tests.system.apps._record import read
from tests.system.rawpeer import Raw
from tests.system.test_topics_hostile import start_at  # a broker on a fixed port
from zq.client import Message
from zq.protocol import codec
from zq.protocol import frames as f

# ------------------------------------------------------------------ helpers


def db_rows(tmp: Path, sql: str, *params: Any) -> list[Any]:
    """Rows of ``sql`` on the broker's database (read only, WAL included)."""
    conn = sqlite3.connect(f"file:{tmp / 'data' / 'zq.db'}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


def stored_bytes(tmp: Path, stream: str) -> int:
    row = db_rows(tmp, "SELECT total(length(e.body)) FROM entries e JOIN queues q ON "
                       "q.qid = e.sid WHERE q.name = ?", "\x00stream\x00" + stream)
    return int(row[0][0])


async def groups(c: zq.Client, stream: str) -> dict[str, dict[str, Any]]:
    return {g["group"]: g for g in (await c.stream(stream))["groups"]}


async def stream_names(c: zq.Client) -> list[str]:
    return sorted(s["stream"] for s in await c.streams())


async def take(consumer: Any, n: int, ack: bool = True, timeout: float = 15.0
               ) -> list[Message]:
    """The next ``n`` messages of ``consumer`` (each acked if ``ack``)."""
    out: list[Message] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            m = await consumer.get()
            out.append(m)
            if ack:
                await m.ack()
    return out


async def drain(consumer: Any, quiet: float = 0.5) -> list[Message]:
    """Acked messages until none comes for ``quiet`` seconds."""
    out: list[Message] = []
    while True:
        try:
            m = await consumer.get(quiet)
        except TimeoutError:
            return out
        out.append(m)
        await m.ack()


def offsets(msgs: list[Message]) -> list[int]:
    return [int(m.offset) for m in msgs if m.offset is not None]


def increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


class Wire:
    """A raw session: MANAGE requests by number, and the DELIVER frames that come
    while a reply is awaited (kept for :meth:`deliver`)."""

    def __init__(self, r: Raw) -> None:
        self.r = r
        self.req = 0
        self.delivers: list[f.Deliver] = []
        self.errors: list[f.Error] = []

    async def send(self, frame: Any) -> None:
        await self.r.send(codec.encode(frame))

    async def _next(self, want: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                fr = await self.r.recv(timeout)
                if want(fr):
                    return fr
                if isinstance(fr, f.Deliver):
                    self.delivers.append(fr)
                elif isinstance(fr, f.Error):
                    self.errors.append(fr)

    async def manage(self, op: str, args: dict[str, Any]) -> f.ManageReply | f.Error:
        self.req += 1
        req = self.req
        await self.send(f.Manage(req, op, args))
        return await self._next(lambda fr: isinstance(fr, f.ManageReply | f.Error)
                                and (getattr(fr, "req", None) == req
                                     or getattr(fr, "ref", None) == req))

    async def ok(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        fr = await self.manage(op, args)
        assert isinstance(fr, f.ManageReply), f"{op} {args}: {fr}"
        return fr.result

    async def deliver(self, timeout: float = 5.0) -> f.Deliver:
        if self.delivers:
            return self.delivers.pop(0)
        fr = await self._next(lambda fr: isinstance(fr, f.Deliver), timeout)
        assert isinstance(fr, f.Deliver)
        return fr

    async def error(self, timeout: float = 5.0) -> f.Error:
        if self.errors:
            return self.errors.pop(0)
        fr = await self._next(lambda fr: isinstance(fr, f.Error), timeout)
        assert isinstance(fr, f.Error)
        return fr

    async def alive(self) -> None:
        """A STATS round trip on this session: the session (and the broker) go on."""
        await self.send(f.Stats(4242))
        fr = await self._next(lambda fr: isinstance(fr, f.StatsReply | f.Error))
        assert isinstance(fr, f.StatsReply), fr


async def wire(raw: Callable[[str], Raw], endpoint: str) -> Wire:
    r = raw(endpoint)
    await r.hello()
    return Wire(r)


def is_error(fr: Any, name: str, text: str = "") -> bool:
    return isinstance(fr, f.Error) and fr.name == name and text in fr.text


def assert_alive(broker: Proc) -> None:
    assert broker.proc.returncode is None, f"broker died; stderr:\n{broker.stderr()}"


# ------------------------------------------------------- 1. crash safety (SIGKILL)


async def test_sigkill_two_groups_resume_at_their_committed_offsets(tmp_path: Path) -> None:
    """2,000 entries; group ``a`` acked 1,200, group ``b`` acked 400 and holds 100
    more unacked (and more in flight) when the broker is SIGKILLed after a stored
    reply. After a restart on the same data: the stream's stats are as before, each
    group reads on exactly from its committed offset (nothing acked before it comes
    again, nothing after it is missing), each has seen every entry, and new entries
    get offsets above every old one."""
    n = 2000
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as adm, zq.Client(broker.endpoint) as ca, \
                zq.Client(broker.endpoint) as cb:
            await adm.declare_stream("events")
            bodies = [b"e%05d" % i for i in range(n)]
            ids: list[int] = []
            for i in range(0, n, 250):
                ids += await adm.publish_many("events", bodies[i:i + 250])
            assert increasing(ids)
            before = await adm.stream("events")
            seen: dict[str, set[bytes]] = {"a": set(), "b": set()}
            async with ca.consume("events", group="a", start="first", prefetch=200) as a, \
                    cb.consume("events", group="b", start="first", prefetch=200) as b:
                got_a = await take(a, 1200)
                got_b = await take(b, 400)
                got_b += await take(b, 100, ack=False)  # held when the broker dies
                seen["a"] |= {m.body for m in got_a}
                seen["b"] |= {m.body for m in got_b}
                assert offsets(got_a) == ids[:1200]
                assert offsets(got_b) == ids[:500]

                async def committed() -> bool:
                    g = await groups(adm, "events")
                    return g["a"]["committed"] == ids[1199] and g["b"]["committed"] == ids[399]

                await eventually(committed, "both groups' offsets to move", 10, 0.02)
                await adm.declare_stream("events")  # a write: its reply means stored
                await broker.kill()
        broker = await start_broker(tmp_path)
        async with zq.Client(broker.endpoint) as adm:
            after = await adm.stream("events")
            for k in ("entries", "first", "last", "bytes"):
                assert after[k] == before[k], (k, before, after)
            assert sorted(await groups(adm, "events")) == ["a", "b"]
            async with adm.consume("events", group="a", prefetch=500) as a:
                rest_a = await take(a, n - 1200)
            async with zq.Client(broker.endpoint) as cb, \
                    cb.consume("events", group="b", prefetch=500) as b:
                rest_b = await take(b, n - 400)
            # exactly from the committed offset: no acked entry again, none skipped
            assert offsets(rest_a) == ids[1200:], offsets(rest_a)[:5]
            assert offsets(rest_b) == ids[400:], offsets(rest_b)[:5]
            seen["a"] |= {m.body for m in rest_a}
            seen["b"] |= {m.body for m in rest_b}
            assert seen["a"] == seen["b"] == set(bodies)
            new = await adm.publish_many("events", [b"new%d" % i for i in range(10)])
            assert increasing(new), new
            assert new[0] > ids[-1], (new, ids[-1])
            async with adm.consume("events", group="a", prefetch=50) as a:
                assert offsets(await take(a, 10)) == new
            info = await adm.stream("events")
            assert (info["entries"], info["last"]) == (n + 10, new[-1])
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def test_sigkill_right_after_resets_to_an_offset_a_time_first_and_last(
        tmp_path: Path) -> None:
    """Groups read everything, then are reset (to an offset, to a time between two
    batches, to first, to last) and the broker is SIGKILLed at once after the replies.
    After the restart each reads from where it was reset to."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("s")
            one = await c.publish_many("s", [b"one%03d" % i for i in range(200)])
            between = time.time()
            await eventually(lambda: time.time() > between + 0.05, "the clock to move", 5)
            two = await c.publish_many("s", [b"two%03d" % i for i in range(200)])
            for g in ("off", "time", "first", "last"):
                async with zq.Client(broker.endpoint) as own, own.consume(
                        "s", group=g, start="first", prefetch=400) as con:
                    await take(con, 400)
            await eventually(lambda: _all_committed(c, two[-1]), "every group done", 10, 0.02)
            await c.reset_group("s", "off", one[150])
            await c._manage("stream_group_reset",
                            {"stream": "s", "group": "time", "start": {"time": between + 0.025}})
            await c.reset_group("s", "first", "first")
            await c.reset_group("s", "last", "last")
            await broker.kill()
        broker = await start_broker(tmp_path)
        all_ids = one + two
        want = {"off": all_ids[150:], "time": two, "first": all_ids, "last": [two[-1]]}
        async with zq.Client(broker.endpoint) as c:
            for g, ids in want.items():
                async with zq.Client(broker.endpoint) as own, own.consume(
                        "s", group=g, prefetch=500) as con:
                    got = offsets(await take(con, len(ids)))
                assert got == ids, (g, got[:3], ids[:3])
            await eventually(lambda: _all_committed(c, two[-1]), "every group done", 10, 0.02)
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def _all_committed(c: zq.Client, last: int) -> bool:
    return all(g["committed"] == last for g in (await groups(c, "s")).values())


# ------------------------------------------------------- 2. retention by size + kill


async def test_size_retention_with_a_sigkill_mid_run(tmp_path: Path) -> None:
    """A stream capped at 20 kB takes 100-byte entries while a lone consumer per group
    reads it; the broker is SIGKILLed mid-run and restarted on the same port. The
    stored stream goes back under its cap, the groups read on to the last entry, and
    each consumer's offsets strictly increase."""
    cap = 20_000
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    broker = await start_at(tmp_path, port)
    runs: dict[str, list[list[int]]] = {"g1": [], "g2": []}
    last = 0
    try:
        async with zq.Client(endpoint, connect_timeout=20) as adm:
            await adm.declare_stream("capped", max_bytes=cap)

            async def consume(group: str, prefetch: int, until: int) -> None:
                got: list[int] = []
                runs[group].append(got)
                async with zq.Client(endpoint, connect_timeout=20) as own, own.consume(
                        "capped", group=group, start="first", prefetch=prefetch) as con:
                    while not got or got[-1] != until:
                        m = await con.get()
                        assert m.offset is not None
                        got.append(m.offset)
                        await m.ack()

            async def publish(frames: int) -> None:
                nonlocal last
                async with zq.Client(endpoint, connect_timeout=20) as pub:
                    for i in range(frames):
                        ids = await pub.publish_many("capped", [b"%0100d" % (i * 50 + j)
                                                                for j in range(50)])
                        last = ids[-1]

            readers = [asyncio.create_task(consume("g1", 200, -1)),
                       asyncio.create_task(consume("g2", 20, -1))]
            await eventually(lambda: _has_groups(adm, "capped", 2), "both groups", 10, 0.02)
            pub = asyncio.create_task(publish(200))
            await eventually(lambda: bool(last) and sum(map(len, runs["g2"])) > 500,
                             "publishing and reading under way", 20, 0.01)
            await broker.kill()
            for t in [pub, *readers]:
                t.cancel()
            for t in [pub, *readers]:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(t, 10)
            broker = await start_at(tmp_path, port)
            last = 0
            await publish(60)  # 300 kB more through a 20 kB cap
            final = last
            await asyncio.wait_for(asyncio.gather(consume("g1", 200, final),
                                                  consume("g2", 20, final)), 30)
        # (a new client: the SDK does not resend ``streams`` after SESSION_UNKNOWN, see
        # test_stream_requests_are_resent_after_a_broker_restart)
        async with zq.Client(endpoint) as adm:
            await eventually(lambda: _under(adm, "capped", cap), "the cap to hold", 10, 0.05)
            assert stored_bytes(tmp_path, "capped") <= cap
            info = await adm.stream("capped")
            assert info["last"] == final
            count = db_rows(tmp_path, "SELECT count(*) FROM entries")[0][0]
            assert info["entries"] == count, (info, count)
            for group, sessions in runs.items():
                for got in sessions:
                    assert increasing(got), (group, got[:10])
                assert sessions[-1][-1] == final
            g = await groups(adm, "capped")
            assert g["g1"]["committed"] == g["g2"]["committed"] == final
        assert_alive(broker)
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def _has_groups(c: zq.Client, stream: str, n: int) -> bool:
    return len(await groups(c, stream)) == n


async def _under(c: zq.Client, stream: str, cap: int) -> bool:
    return int((await c.stream(stream))["bytes"]) <= cap


# ------------------------------------------------------- 3. retention by age


async def test_max_age_removes_old_entries_and_later_groups_skip_them(
        tmp_path: Path) -> None:
    """max_age 1 s: 20 entries age out (stats and the store say so); a group made from
    "first" afterwards reads only what came later; a restart changes nothing of that
    and new entries still get higher offsets than the removed ones."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("aged", max_age=1)
            old = await c.publish_many("aged", [b"old%02d" % i for i in range(20)])
            await eventually(lambda: _entries(c, "aged", 0), "the old entries to age out",
                             10, 0.05)
            assert db_rows(tmp_path, "SELECT count(*) FROM entries") == [(0,)]
            new = await c.publish_many("aged", [b"new%02d" % i for i in range(5)])
            async with c.consume("aged", group="late", start="first", prefetch=50) as con:
                got = await take(con, 5)
            assert [m.body for m in got] == [b"new%02d" % i for i in range(5)]
            assert offsets(got) == new
            assert new[0] > old[-1]
            await eventually(lambda: _entries(c, "aged", 0), "the new ones to age out", 10,
                             0.05)
        await broker.kill()
        broker = await start_broker(tmp_path)
        async with zq.Client(broker.endpoint) as c:
            info = await c.stream("aged")
            assert info["entries"] == 0, info
            assert info["last"] >= new[-1], info
            newer = await c.publish_many("aged", [b"x", b"y"])
            assert newer[0] > new[-1], (newer, new)
            async with c.consume("aged", group="late", prefetch=50) as con:
                assert [m.body for m in await take(con, 2)] == [b"x", b"y"]
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def _entries(c: zq.Client, stream: str, n: int) -> bool:
    return int((await c.stream(stream))["entries"]) == n


async def test_entries_removed_by_max_age_are_not_delivered_to_an_idle_group(
        tmp_path: Path) -> None:
    """Was a bug: a group that exists but has no consumer takes every appended entry into its
    in-memory window (``Streams._take_appended``, up to ``--window``: 20,000 by
    default). When retention removes those entries (``Streams.trimmed`` only moves the
    cursor of groups that had not taken them), the group keeps them and delivers them
    whenever a consumer comes: here 20 entries past a 1 s max_age, while the stream
    says it holds none (and the group's ``pending`` counts 20 of a stream of 0). After
    a restart the same group would not get them: what a group reads depends on the
    broker's uptime, and max_age (often a legal limit) is not kept. Fix: ``trimmed``
    should drop a group's undelivered in-memory entries at or below ``upto`` (and their
    ``out`` places)."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("aged", max_age=1)
            await c._manage("stream_join", {"stream": "aged", "group": "idle",
                                            "start": "first"})
            await c.publish_many("aged", [b"old%02d" % i for i in range(20)])
            await eventually(lambda: _entries(c, "aged", 0), "the entries to age out", 10,
                             0.05)
            new = await c.publish_many("aged", [b"new%02d" % i for i in range(5)])
            pending = (await groups(c, "aged"))["idle"]["pending"]
            async with c.consume("aged", group="idle", prefetch=100) as con:
                got = await take(con, 5)
                got += await drain(con, 0.3)
            bodies = [m.body.decode() for m in got]
            assert (bodies, offsets(got)) == ([f"new{i:02d}" for i in range(5)], new), (
                f"a group read {len(bodies)} entries, {bodies[:3]}..., of which "
                f"{sum(b.startswith('old') for b in bodies)} were removed by max_age "
                f"before any consumer came (pending was {pending} with 5 entries held)")
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


# ------------------------------------------------------- 4. wrong order, bad input


BAD_JOINS: list[tuple[dict[str, Any], str]] = [
    ({"stream": 123, "group": "g"}, "INVALID_QUEUE_NAME"),
    ({"stream": "S", "group": ""}, "INVALID_QUEUE_NAME"),
    ({"stream": "S", "group": "a b"}, "INVALID_QUEUE_NAME"),
    ({"stream": "S", "group": "g" * 300}, "INVALID_QUEUE_NAME"),
    ({"stream": "S", "group": "g\x00h"}, "INVALID_QUEUE_NAME"),
    ({"stream": "S", "group": None}, "INVALID_QUEUE_NAME"),
    ({"stream": "S", "group": "g", "start": -5}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": 0}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": True}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": 1.5}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": "FIRST"}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": [1]}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"time": "x"}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"time": float("nan")}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"time": float("inf")}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"time": -1}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"time": True}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"offset": 2**64 - 1}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"offset": -(2**63)}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"offset": True}}, "INVALID_ARGUMENT"),
    ({"stream": "S", "group": "g", "start": {"offset": 1, "time": 1}}, "INVALID_ARGUMENT"),
    ({"stream": "nope", "group": "g"}, "UNKNOWN_QUEUE"),
]

BAD_OPS: list[tuple[str, dict[str, Any], str]] = [
    ("stream_declare", {"stream": "X", "max_bytes": -1}, "INVALID_ARGUMENT"),
    ("stream_declare", {"stream": "X", "max_bytes": float("nan")}, "INVALID_ARGUMENT"),
    ("stream_declare", {"stream": "X", "max_bytes": "10"}, "INVALID_ARGUMENT"),
    ("stream_declare", {"stream": "X", "max_bytes": 1.5}, "INVALID_ARGUMENT"),
    ("stream_declare", {"stream": "X", "max_bytes": True}, "INVALID_ARGUMENT"),
    ("stream_declare", {"stream": "X", "max_age": float("inf")}, "INVALID_ARGUMENT"),
    ("stream_declare", {"stream": "X", "max_age": -0.5}, "INVALID_ARGUMENT"),
    ("stream_declare", {"stream": "X", "max_age": "1d"}, "INVALID_ARGUMENT"),
    ("stream_declare", {"stream": "S.dlq"}, "INVALID_QUEUE_NAME"),
    ("stream_declare", {"stream": ""}, "INVALID_QUEUE_NAME"),
    ("stream_declare", {"stream": None}, "INVALID_QUEUE_NAME"),
    ("stream_declare", {"stream": "a b"}, "INVALID_QUEUE_NAME"),
    ("stream_delete", {"stream": "nope"}, "UNKNOWN_QUEUE"),
    ("stream_delete", {"stream": 5}, "INVALID_QUEUE_NAME"),
    ("streams", {"stream": 5}, "INVALID_QUEUE_NAME"),
    ("streams", {"stream": "nope"}, "UNKNOWN_QUEUE"),
    ("stream_group_reset", {"stream": "S", "group": "nope", "start": "first"},
     "UNKNOWN_QUEUE"),
    ("stream_group_reset", {"stream": "S", "group": "ok", "start": "bogus"},
     "INVALID_ARGUMENT"),
    ("stream_group_reset", {"stream": "S", "group": "ok", "start": {"offset": 0}},
     "INVALID_ARGUMENT"),
    ("stream_group_delete", {"stream": "S", "group": 5}, "INVALID_QUEUE_NAME"),
    ("stream_group_delete", {"stream": "nope", "group": "ok"}, "UNKNOWN_QUEUE"),
]


async def test_ill_typed_stream_requests_get_clear_errors_and_change_nothing(
        tmp_path: Path, raw: Callable[[str], Raw]) -> None:
    """Every ill-typed or impossible stream request on a raw session gets an ERROR with
    a clear code, naming its request; the session, the broker and the stream go on
    (a final STATS, and a group that still reads the stream)."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("S")
            ids = await c.publish_many("S", [b"a", b"b", b"c"])
            w = await wire(raw, broker.endpoint)
            await w.ok("stream_join", {"stream": "S", "group": "ok", "start": "first"})
            wrong = []
            for args, name in BAD_JOINS:
                fr = await w.manage("stream_join", args)
                if not isinstance(fr, f.Error) or fr.name != name or fr.ref != w.req:
                    wrong.append(("stream_join", args, fr))
            for op, args, name in BAD_OPS:
                fr = await w.manage(op, args)
                if not isinstance(fr, f.Error) or fr.name != name or fr.ref != w.req:
                    wrong.append((op, args, fr))
            assert not wrong, "\n".join(f"{op} {a!r:.80} -> {fr}" for op, a, fr in wrong)
            await w.alive()
            # Nothing changed: only the good group, S as it was. (The refused declares of
            # X do leave a stream X: test_a_refused_stream_declare_leaves_no_phantom_...)
            assert sorted(await groups(c, "S")) == ["ok"]
            assert (await c.stream("S"))["entries"] == 3
            # Far-away starts are accepted and read as "from there on".
            await w.ok("stream_join", {"stream": "S", "group": "far",
                                       "start": {"time": 1e300}})
            await w.ok("stream_join", {"stream": "S", "group": "big",
                                       "start": {"offset": 2**62 - 1}})
            big = await w.ok("stream_join", {"stream": "S", "group": "g" * 255})
            assert big["created"] is True
            more = await c.publish_many("S", [b"d"])
            async with c.consume("S", group="far", prefetch=10) as con:
                assert offsets(await take(con, 1)) == more
            assert (await groups(c, "S"))["big"]["pending"] == 0
            # The good group still reads everything.
            async with c.consume("S", group="ok", prefetch=10) as con:
                assert offsets(await take(con, 4)) == ids + more
        await w.alive()
        assert_alive(broker)
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def test_wrong_order_on_a_raw_session(tmp_path: Path,
                                            raw: Callable[[str], Raw]) -> None:
    """CREDIT before stream_join; a second group while holding entries; ACKs of entries
    never delivered; NACK requeue=false (skipped: the committed offset moves past it);
    reset, group delete and stream delete while read; group delete then the old
    consumer's CREDIT and ACK; publish options a stream does not take. Each gets a clear
    error or does what it says; the broker stays up."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("S")
            ids = await c.publish_many("S", [b"a", b"b", b"c", b"d"])
            w = await wire(raw, broker.endpoint)
            await w.send(f.Credit("S", 2))
            err = await w.error()
            assert (err.name, err.op, err.ref) == ("INVALID_ARGUMENT", f.CREDIT, "S"), err
            assert "stream_join" in err.text
            await w.ok("stream_join", {"stream": "S", "group": "g", "start": "first"})
            await w.send(f.Credit("S", 2))
            d = await w.deliver()
            assert (d.queue, d.ids, d.attempts) == ("S", ids[:2], [1, 1])
            fr = await w.manage("stream_join", {"stream": "S", "group": "g2"})
            assert is_error(fr, "INVALID_ARGUMENT", "one group per stream"), fr
            await w.send(f.Ack([ids[3]], [1]))  # never delivered
            assert (await w.error()).name in ("STALE_DELIVERY", "UNKNOWN_DELIVERY")
            await w.send(f.Ack([10**12], [1]))
            assert (await w.error()).name == "UNKNOWN_DELIVERY"
            for op, args in (("stream_group_reset", {"stream": "S", "group": "g",
                                                     "start": "first"}),
                             ("stream_group_delete", {"stream": "S", "group": "g"}),
                             ("stream_delete", {"stream": "S"})):
                fr = await w.manage(op, args)
                assert is_error(fr, "INVALID_ARGUMENT", "being read"), (op, fr)
            await w.send(f.Nack([ids[0]], [1], False, 0, "poison"))
            await w.send(f.Ack([ids[1]], [1]))
            await eventually(lambda: _committed(c, "S", "g", ids[1]),
                             "the committed offset to pass the dead entry", 5, 0.02)
            assert (await groups(c, "S"))["g"]["dead"] == 1
            await w.send(f.Credit("S", 2))  # (a settled delivery's credit is sent again)
            got: list[int] = []
            while len(got) < 2:
                got += (await w.deliver()).ids
            assert got == ids[2:], got
            await w.send(f.Cancel("S"))
            fr = await w.manage("stream_group_delete", {"stream": "S", "group": "g"})
            assert is_error(fr, "INVALID_ARGUMENT", "2 unacked"), fr
            await w.send(f.Ack(ids[2:], [1, 1]))
            await eventually(lambda: _committed(c, "S", "g", ids[3]), "the last acks", 5, 0.02)
            await w.ok("stream_group_delete", {"stream": "S", "group": "g"})
            await w.send(f.Credit("S", 2))
            err = await w.error()
            assert (err.name, err.ref) == ("UNKNOWN_QUEUE", "S"), err
            await w.send(f.Ack([ids[3]], [1]))
            assert (await w.error()).name in ("STALE_DELIVERY", "UNKNOWN_DELIVERY")
            # A stream takes headers and a dedup id, nothing that reorders or expires.
            for kw in ({"priority": 5}, {"delay": 1.0}, {"ttl": 5.0}, {"max_attempts": 2},
                       {"tenant": "t"}, {"time_limit": 2.0}, {"eta": time.time() + 60}):
                with pytest.raises(zq.InvalidArgument, match="stream"):
                    await c.publish("S", b"opt", **kw)
            one = await c.publish("S", b"once", dedup_id="k1")
            assert await c.publish("S", b"once", dedup_id="k1") == one
            with pytest.raises(zq.InvalidQueueName):
                await c.publish("S.dlq", b"x")
            assert (await c.stream("S"))["entries"] == 5
        await w.alive()
        assert_alive(broker)
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def _committed(c: zq.Client, stream: str, group: str, offset: int) -> bool:
    g = (await groups(c, stream)).get(group)
    return g is not None and g["committed"] == offset


async def test_a_deleted_stream_name_becomes_a_plain_queue_and_can_be_a_stream_again(
        tmp_path: Path, raw: Callable[[str], Raw]) -> None:
    """Delete a stream nobody reads: a publish to its name then makes a plain queue
    (read without a group), stream_join says there is no stream, and a stream can't be
    declared over that queue while it holds a message; once the queue is drained it
    can, and the old entries and groups do not come back, even after a restart."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("S")
            await c.publish_many("S", [b"old1", b"old2"])
            async with c.consume("S", group="g", start="first") as con:
                await take(con, 1)
            await eventually(lambda: _committed_any(c), "the ack", 5, 0.02)
            assert await c.delete_stream("S") == 2
            await c.publish("S", b"plain")
            w = await wire(raw, broker.endpoint)
            fr = await w.manage("stream_join", {"stream": "S", "group": "g"})
            assert is_error(fr, "UNKNOWN_QUEUE"), fr
            with pytest.raises(zq.InvalidArgument, match="in use"):
                await c.declare_stream("S")
            # (another client; the same one: see
            # test_a_session_that_read_a_deleted_group_consumes_the_queue_of_that_name)
            async with zq.Client(broker.endpoint) as own, own.consume("S") as con:
                assert [m.body for m in await take(con, 1)] == [b"plain"]
            await eventually(lambda: _drained(c, "S"), "the plain message's ack", 5, 0.02)
            assert (await c.declare_stream("S"))["created"] is True
            new = await c.publish("S", b"new")
            async with zq.Client(broker.endpoint) as own, own.consume(
                    "S", group="g", start="first") as con:
                assert [m.body for m in await take(con, 1)] == [b"new"]
        await broker.terminate_and_expect_exit(0, within=15)
        broker = await start_broker(tmp_path)
        async with zq.Client(broker.endpoint) as c:
            info = await c.stream("S")
            assert (info["entries"], info["first"], info["last"]) == (1, new, new), info
            async with c.consume("S", group="fresh", start="first") as con:
                assert [m.body for m in await take(con, 1)] == [b"new"]
                assert await drain(con, 0.3) == []
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def _committed_any(c: zq.Client) -> bool:
    return all(g["committed"] and g["pending"] == 1 for g in (await groups(c, "S")).values())


async def _drained(c: zq.Client, queue: str) -> bool:
    q = (await c.stats())["queues"].get(queue, {})
    return not q.get("ready") and not q.get("in_flight")


# ------------------------------------------------------- bugs found with bad input


async def test_a_refused_stream_declare_leaves_no_phantom_stream(
        tmp_path: Path) -> None:
    """Was a bug: ``stream_declare`` with a bad limit (max_bytes=-1) is refused, but
    ``zq.manage.streams.declare`` has already made the stream (``core.streams[name] =
    s``, ``core.queues[name] = s.q``; over an idle queue it also popped the queue and
    staged the deletion of its settings) before ``_limit`` raised, and it never staged
    the stream's settings. So the name is a stream until the next restart: publishes to
    it are confirmed as entries, consumers of the queue are told it is a stream; after
    a restart it is neither (the confirmed entries are gone, the queue's declared
    settings too). Fix: validate ``max_age``/``max_bytes`` before creating anything."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_queue("Q", max_attempts=3)
            for name in ("X", "Q"):
                with pytest.raises(zq.InvalidArgument):
                    await c._manage("stream_declare", {"stream": name, "max_bytes": -1})
            made = await stream_names(c)
            x = await c.publish("X", b"confirmed-x")
            q = await c.publish("Q", b"confirmed-q")
        await broker.terminate_and_expect_exit(0, within=15)
        broker = await start_broker(tmp_path)
        async with zq.Client(broker.endpoint) as c:
            left = {"streams": await stream_names(c),
                    "queues": sorted((await c.stats())["queues"])}
            problems = []
            if made:
                problems.append(f"refused declares made streams {made}")
            if "X" not in left["queues"] and "X" not in left["streams"]:
                problems.append(f"confirmed publish {x} to X lost after a restart")
            if "Q" not in left["queues"]:
                problems.append(f"queue Q and its confirmed message {q} lost after a "
                                f"restart")
            elif (await c.queue_info("Q"))["settings"]["max_attempts"] != 3:
                problems.append("queue Q lost its declared settings")
            assert not problems, f"{problems}; after the restart: {left}"
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def test_stream_delete_and_declare_in_one_batch_keep_the_new_one_through_a_restart(
        tmp_path: Path, raw: Callable[[str], Raw]) -> None:
    """Was a bug: a stream deleted and declared again (or a group deleted and joined again)
    in one commit batch - two admins, or one client's pipelined requests - is gone
    after a restart, with every entry confirmed to it since (orphan rows). Both replies
    said "stored". Cause: the batch holds the key's settings as [(key, blob), (key,
    None), (key, blob)], and ``zq.persistence.sql.statements`` runs every SETTINGS
    upsert first and the FORGET_SETTINGS of every None after them, so the last write
    is not the one that stays. (Plain queues share the path, but streams make it a
    loss of confirmed data.) Fix: apply the batch's settings in order, or keep only the
    last per name (``WriteBatch.compact`` does that, but only on a failed batch)."""
    broker = await start_broker(tmp_path)
    try:
        w = await wire(raw, broker.endpoint)
        await w.ok("stream_declare", {"stream": "T"})
        async with zq.Client(broker.endpoint) as c:
            await c.publish_many("T", [b"t0"])
            async with c.consume("T", group="g", start="first") as con:
                await take(con, 1)
            await eventually(lambda: _committed_t(c), "g's ack", 5, 0.02)
        # Pipelined on one session: processed in one pass, staged in one batch.
        for frame in (f.Manage(101, "stream_group_delete", {"stream": "T", "group": "g"}),
                      f.Manage(102, "stream_join", {"stream": "T", "group": "g",
                                                    "start": "first"}),
                      f.Manage(103, "stream_declare", {"stream": "U"}),
                      f.Manage(104, "stream_delete", {"stream": "U"}),
                      f.Manage(105, "stream_declare", {"stream": "U"})):
            await w.r.sock.send_multipart(codec.encode(frame))
        replies = [await w.r.recv() for _ in range(5)]
        assert all(isinstance(fr, f.ManageReply) for fr in replies), replies
        async with zq.Client(broker.endpoint) as c:
            confirmed = await c.publish_many("U", [b"u0", b"u1"])
            before = {"streams": await stream_names(c), "T": sorted(await groups(c, "T"))}
        await broker.terminate_and_expect_exit(0, within=15)
        broker = await start_broker(tmp_path)
        async with zq.Client(broker.endpoint) as c:
            after = {"streams": await stream_names(c),
                     "T": sorted(await groups(c, "T")) if "T" in await stream_names(c)
                     else None}
            assert after == before, (f"before the restart {before}, after {after}; "
                                     f"entries {confirmed} were confirmed to U")
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def _committed_t(c: zq.Client) -> bool:
    return bool((await groups(c, "T"))["g"]["committed"])


async def test_dead_letters_and_redrives_never_vanish_into_a_stream(tmp_path: Path) -> None:
    """Was a bug: a queue whose ``dlq`` is a stream's name, and ``zq dlq redrive --to`` a
    stream, put messages into the stream's own Queue object (``Failures._dead`` ->
    ``self._queue(target)``; ``manage.queues.redrive`` -> ``core.move(m,
    core.queue(target))``), which no group reads: the stream's ``entries`` stay 0, no
    group ever gets them, ``zq queue ls`` shows them "ready" on the stream for ever,
    and they are stored as rows of the messages table under the stream's name (so they
    come back into the same hole after a restart). Either refuse a stream as a dlq /
    redrive target (at declare time, and when a dlq target later becomes a stream), or
    append them as entries."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("S")
            problems = []
            try:
                await c.declare_queue("work", dlq="S", max_attempts=1)
            except zq.ZqError:
                pass  # refused: fine
            else:
                await c.publish("work", b"dead-letter")
                async with c.consume("work", prefetch=1) as con:
                    (m,) = await take(con, 1, ack=False)
                    await m.nack(requeue=False)
            await c.declare_queue("w2", max_attempts=1)
            await c.publish("w2", b"redriven")
            async with c.consume("w2", prefetch=1) as con:
                (m,) = await take(con, 1, ack=False)
                await m.nack(requeue=False)
            await eventually(lambda: _ready(c, "w2.dlq", 1), "the dead letter", 5, 0.02)
            try:
                moved = (await c._manage("redrive", {"queue": "w2.dlq", "to": "S"}))["moved"]
            except zq.ZqError:
                moved = 0  # refused: fine
            async with c.consume("S", group="g", start="first", prefetch=10) as con:
                got = await drain(con, 0.5)
            info = await c.stream("S")
            hole = (await c.stats())["queues"]["S"].get("ready", 0)
            if hole:
                problems.append(f"{hole} message(s) sit 'ready' in stream S's own queue")
            if moved and info["entries"] < moved:
                problems.append(f"redrive said {moved} moved to S; S holds "
                                f"{info['entries']} entries, group g read "
                                f"{[m.body for m in got]}")
            assert not problems, problems
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def _ready(c: zq.Client, queue: str, n: int) -> bool:
    return (await c.stats())["queues"].get(queue, {}).get("ready") == n


async def test_a_client_reads_another_group_right_after_closing_one(
        tmp_path: Path) -> None:
    """Was a bug: one client reads group ``a`` of a stream, acks every entry and closes that
    consumer; at once it reads group ``b`` of the same stream: stream_join is refused
    ("this session reads 'S' in group 'a': one group per stream per session") though
    the session holds nothing. ``zq.manage.streams.join`` counts
    ``sub.window.in_flight``, which includes the *owed* places of acks whose commit is
    still under way (``CreditWindow.owe``); 20 ms later it would pass. Fix: look at
    what the session holds (``peer.held`` of that group's queue, or ``in_flight -
    owed``)."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("S")
            await c.publish_many("S", [b"e%d" % i for i in range(50)])
            # (a window larger than the entries: their acks go with the CANCEL and the
            # join, in one flush, as an application's last acks before it closes do)
            async with c.consume("S", group="a", start="first", prefetch=1000) as con:
                await take(con, 50)
            try:
                async with c.consume("S", group="b", start="first", prefetch=100) as con:
                    got = await take(con, 50)
            except zq.InvalidArgument as exc:
                raise AssertionError(f"reading group b after closing group a: {exc}") from None
            assert [m.body for m in got] == [b"e%d" % i for i in range(50)]
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def test_a_session_that_read_a_deleted_group_consumes_the_queue_of_that_name(
        tmp_path: Path) -> None:
    """Was a bug: a client reads stream S in group g and closes that consumer (CANCEL: the
    broker keeps the cancelled subscription, bound to g's queue). S is deleted and its
    name becomes a plain queue (a publish). The same client's ``consume("S")`` then
    fails with UNKNOWN_QUEUE "stream 'S' or its group was deleted": ``on_credit``
    (zq/core/settle.py) finds the old cancelled subscription, sees its group gone,
    drops it and raises, instead of treating the CREDIT as a new subscription of what
    the name is now (a second try works). Fix: a cancelled subscription whose group is
    gone is dropped and the CREDIT goes on as a first one."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("S")
            await c.publish("S", b"entry")
            async with c.consume("S", group="g", start="first") as con:
                (m,) = await take(con, 1)
            await eventually(lambda: _committed(c, "S", "g", int(m.offset or 0)), "the ack",
                             5, 0.02)
            await c.delete_stream("S")
            await c.publish("S", b"plain")
            try:
                async with c.consume("S") as con:
                    got = await take(con, 1)
            except zq.UnknownQueue as exc:
                raise AssertionError(f"consuming queue S on the same client: {exc}") from None
            assert [m.body for m in got] == [b"plain"]
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def test_stream_requests_are_resent_after_a_broker_restart(
        tmp_path: Path) -> None:
    """Was a bug (SDK): a client that outlives a broker restart (same endpoint) resends its
    reading and idempotent MANAGE requests on the new session when the broker answers
    SESSION_UNKNOWN: ``queue_info`` does. ``client.stream(S)``/``streams()`` (MANAGE
    ``streams``, read only) and ``declare_stream`` (idempotent, like ``declare``) are
    not in ``zq.client.requests.RESENDABLE``, so the first of them after the restart
    fails with SESSION_UNKNOWN "MANAGE before HELLO". (Group consumers are fine: they
    re-join on the new session and read on.)"""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    broker = await start_at(tmp_path, port)
    try:
        async with zq.Client(endpoint, connect_timeout=20) as c, \
                zq.Client(endpoint, connect_timeout=20) as control, \
                zq.Client(endpoint, connect_timeout=20) as r:
            await c.declare_stream("S")
            first = await c.publish_many("S", [b"a", b"b"])
            await control.stats()
            async with r.consume("S", group="g", start="first", prefetch=10) as con:
                assert offsets(await take(con, 2)) == first
                await eventually(lambda: _committed(c, "S", "g", first[-1]), "acks", 5, 0.02)
                await broker.kill()
                broker = await start_at(tmp_path, port)
                info = await control.queue_info("S")  # resent on the new session
                assert info["stats"]["stream"]["last"] == first[-1]
                try:
                    await c.stream("S")  # the first request of this client since
                except zq.SessionUnknown as exc:
                    failed: str | None = str(exc)
                else:
                    failed = None
                more = await c.publish_many("S", [b"c"])
                assert offsets(await take(con, 1)) == more  # the consumer reads on
            assert failed is None, f"client.stream() right after a broker restart: {failed}"
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def test_a_queue_argument_beside_the_stream_does_not_bypass_the_permission_check(
        tmp_path: Path) -> None:
    """Was a bug (security): ``Access._may_manage`` (zq/core/access.py) checks a MANAGE's
    right on ``args.get("queue", args.get("stream"))``, while the stream operations act
    on ``args["stream"]`` only. A key allowed to manage and consume ``mine.*`` only is
    refused ``stream_delete {stream: prod}``, but ``stream_delete {stream: prod, queue:
    mine.x}`` is checked against mine.x and deletes stream prod with all its entries
    and groups; the same goes for stream_declare (retention: max_bytes=1 trims it
    all), stream_group_reset (moves another team's group) and stream_join (makes
    groups). Fix: check the stream ops on ``stream`` (and refuse a MANAGE whose queue
    and stream args differ, or check both)."""
    from tests.security_helpers import (
        CurveWire,
        Keyring,
        curve_client,
        start_curve_broker,
        write_permissions,
    )

    ring = Keyring(tmp_path)
    server = ring.make("server", authorize=False)  # "@server": every right
    mallory = ring.make("mallory")
    perms = write_permissions(tmp_path / "permissions.toml", {"mallory": {
        "publish": ["mine.*"], "consume": ["mine.*"], "manage": ["mine.*"]}})
    broker = await start_curve_broker(tmp_path, server, ring.authorized, perms)
    w = CurveWire(broker.endpoint, mallory, server)
    try:
        async with curve_client(broker.endpoint, server, server) as adm:
            await adm.declare_stream("prod")
            await adm.publish_many("prod", [b"p1", b"p2"])
            await w.hello(name="mallory")
            taken = []
            for req, (op, args) in enumerate([
                    ("stream_join", {"stream": "prod", "group": "spy", "start": "first"}),
                    ("stream_group_reset", {"stream": "prod", "group": "spy", "start": "last"}),
                    ("stream_declare", {"stream": "prod", "max_bytes": 1}),
                    ("stream_delete", {"stream": "prod"})], start=1):
                await w.send(f.Manage(req, op, args))  # refused, as it should be
                fr = await w.recv()
                assert is_error(fr, "FORBIDDEN"), (op, fr)
                await w.send(f.Manage(100 + req, op, {**args, "queue": "mine.x"}))
                fr = await w.recv()
                if not is_error(fr, "FORBIDDEN"):
                    taken.append(f"{op} {args} with queue=mine.x -> {fr}")
            assert not taken, "\n".join(taken)
            assert await stream_names(adm) == ["prod"]
    finally:
        w.close()
        await broker.terminate_and_expect_exit(0, within=15)


async def test_publishers_ride_through_a_broker_kill_without_loss_or_duplicates(
        tmp_path: Path) -> None:
    """Four publishers (one client, idempotent producer id) append to a stream while
    the broker is SIGKILLed and restarted on the same port: every confirmed publish is
    an entry with the id it was confirmed with, none is stored twice, and the stream's
    stats match the store."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    broker = await start_at(tmp_path, port)
    confirmed: dict[bytes, int] = {}
    errors: list[str] = []
    try:
        async with zq.Client(endpoint, connect_timeout=30) as c:
            await c.declare_stream("S")
            stop = asyncio.Event()

            async def publish(k: int) -> None:
                i = 0
                while not stop.is_set():
                    body = b"p%d-%06d" % (k, i)
                    try:
                        confirmed[body] = await c.publish("S", body)
                    except zq.ZqError as exc:
                        errors.append(repr(exc))
                    i += 1

            tasks = [asyncio.create_task(publish(k)) for k in range(4)]
            await eventually(lambda: len(confirmed) > 1500, "publishes", 20, 0.01)
            await broker.kill()
            broker = await start_at(tmp_path, port)
            n = len(confirmed)
            await eventually(lambda: len(confirmed) > n + 1500, "publishes again", 30, 0.01)
            stop.set()
            await asyncio.gather(*tasks)
            stored = {bytes(body): mid for mid, body in db_rows(
                tmp_path, "SELECT id, body FROM entries")}
            rows = db_rows(tmp_path, "SELECT count(*) FROM entries")[0][0]
            assert rows == len(stored), "a body stored twice"
            lost = {b: i for b, i in confirmed.items() if stored.get(b) != i}
            assert not lost, f"{len(lost)} confirmed publishes not stored as confirmed"
            info = await c.stream("S")
            assert (info["entries"], info["last"]) == (rows, max(stored.values()))
            assert not errors, errors[:3]
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


# ------------------------------------------------------- 5. the memory store


async def test_memory_store_refuses_streams_clearly(tmp_path: Path,
                                                   raw: Callable[[str], Raw]) -> None:
    broker = await start_broker(tmp_path, "--storage", "memory")
    try:
        async with zq.Client(broker.endpoint) as c:
            with pytest.raises(zq.InvalidArgument, match="durable"):
                await c.declare_stream("M", max_age=5)
            assert await c.streams() == []
            with pytest.raises(zq.UnknownQueue):
                async with c.consume("M", group="g") as con:
                    await con.get(5)
            w = await wire(raw, broker.endpoint)
            fr = await w.manage("stream_join", {"stream": "M", "group": "g"})
            assert is_error(fr, "UNKNOWN_QUEUE"), fr
            await c.publish("M", b"plain")  # the name is a plain queue, as before
            assert (await c.stats())["queues"]["M"]["ready"] == 1
            await w.alive()
        assert_alive(broker)
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


# ------------------------------------------------------- 7. many groups, long stream


async def test_a_hundred_groups_and_a_replay_of_50000_entries_beside_a_live_group(
        tmp_path: Path) -> None:
    """50,000 entries while group ``live`` keeps up; then group ``replay`` from
    "first" reads all of them in order while ``live`` goes on reading new entries and a
    producer keeps publishing (its publishes stay quick). The group limit is 100 per
    stream: the 101st is refused, clearly."""
    n = 50_000
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as adm, zq.Client(broker.endpoint) as pub, \
                zq.Client(broker.endpoint) as lc, zq.Client(broker.endpoint) as rc:
            await adm.declare_stream("long")
            live: list[int] = []
            stop, stop_live = asyncio.Event(), asyncio.Event()

            async def read_live() -> None:
                async with lc.consume("long", group="live", start="next",
                                      prefetch=1000) as con:
                    while not stop_live.is_set():
                        try:
                            m = await con.get(0.2)
                        except TimeoutError:
                            continue
                        live.append(int(m.offset or 0))
                        await m.ack()

            live_task = asyncio.create_task(read_live())
            await eventually(lambda: _has_groups(adm, "long", 1), "group live", 10, 0.02)
            ids: list[int] = []
            for i in range(0, n, 1000):
                ids += await pub.publish_many("long", [b"%08d" % j for j in range(i, i + 1000)])
            await eventually(lambda: len(live) >= n, "live to keep up", 30, 0.05)
            worst = 0.0
            probes: list[int] = []

            async def probe() -> None:
                nonlocal worst
                loop = asyncio.get_running_loop()
                while not stop.is_set():
                    t0 = loop.time()
                    probes.append(await pub.publish("long", b"probe"))
                    worst = max(worst, loop.time() - t0)
                    await asyncio.sleep(0.01)

            probe_task = asyncio.create_task(probe())
            replay: list[int] = []
            async with rc.consume("long", group="replay", start="first", prefetch=1000) as con:
                async with asyncio.timeout(60):
                    while len(replay) < n:
                        m = await con.get()
                        replay.append(int(m.offset or 0))
                        await m.ack()
            stop.set()
            await probe_task
            await eventually(lambda: len(live) >= n + len(probes), "live to read the probes",
                             10, 0.02)
            stop_live.set()
            await live_task
            assert replay == ids, "replay did not read the 50,000 entries once, in order"
            assert live == ids + probes, "live did not read every entry once, in order"
            assert worst < 2.0, f"a publish waited {worst:.1f} s during the replay"
            # The group limit.
            made = await asyncio.gather(*(adm._manage("stream_join", {
                "stream": "long", "group": f"g{i:03d}"}) for i in range(98)))
            assert all(r["created"] for r in made)
            with pytest.raises(zq.InvalidArgument, match="100 groups"):
                await adm._manage("stream_join", {"stream": "long", "group": "one-too-many"})
            assert len(await groups(adm, "long")) == 100
            assert (await adm.stats())["streams"]["long"]["entries"] == n + len(probes)
    finally:
        await broker.terminate_and_expect_exit(0, within=20)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_groups_nobody_reads_do_not_hold_the_stream_in_memory_many_times_over(
        tmp_path: Path) -> None:
    """Was a bug (resources): a group with no consumer that is caught up takes every appended
    entry into its in-memory window (``Streams._take_appended``: a ``Msg`` per entry
    per group, up to ``--window`` = 20,000 entries each). 100 groups (the limit, which
    any key with the consume right can make with stream_join) and 20 MB of entries
    cost about 400 MB of broker RSS: 20 times the data, for groups that read nothing.
    A stream's idle groups should count appended entries as on disk (as a group past
    its window does) and page them in when a consumer comes."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("S")
            await asyncio.gather(*(c._manage("stream_join", {"stream": "S", "group": f"g{i}"})
                                   for i in range(100)))
            before = rss_mb(broker.pid)
            body = b"x" * 1000
            for _ in range(20):
                await c.publish_many("S", [body] * 1000)
            grown = rss_mb(broker.pid) - before
            held = (await groups(c, "S"))["g0"]["in_memory"]
            assert grown < 150, (f"broker RSS grew {grown:.0f} MB for 20 MB appended to a "
                                 f"stream with 100 idle groups ({held} entries in memory "
                                 f"in each)")
    finally:
        await broker.terminate_and_expect_exit(0, within=30)


# ------------------------------------------------------- 8. a consumer process killed


async def test_a_killed_consumer_process_entries_go_to_its_group_only(
        tmp_path: Path) -> None:
    """Group ``shared`` is read by two processes, one of which takes 100 entries and
    never settles them; it is SIGKILLed. Its entries go to the other consumer of
    ``shared`` (second attempts), and group ``audit`` sees every entry exactly once
    (no redelivery leaks into another group)."""
    broker = await start_broker(tmp_path, "--heartbeat", "0.2", "--liveness", "3")
    procs: list[Proc] = []

    async def reader(group: str, prefetch: int, mode: str) -> Proc:
        p = await Proc.start([sys.executable, "-m", "tests.system.apps.stream_reader",
                              broker.endpoint, "orders", group, "first", str(prefetch),
                              mode], tmp_path / f"{group}-{len(procs)}.log",
                             {"ZQ_TEST_DIR": str(tmp_path)})
        procs.append(p)
        await p.wait_for_line("READING", 20)
        return p

    def recs(group: str, pid: int | None = None) -> list[dict[str, Any]]:
        paths = [tmp_path / f"{group}-{pid}.jsonl"] if pid else sorted(
            tmp_path.glob(f"{group}-*.jsonl"))
        return [r for p in paths for r in read(p)]

    try:
        async with zq.Client(broker.endpoint) as c:
            await c.declare_stream("orders")
            holder = await reader("shared", 100, "hold")
            survivor = await reader("shared", 20, "ack")
            await reader("audit", 50, "ack")
            bodies = {f"o{i:04d}" for i in range(1000)}
            for i in range(0, 1000, 100):
                await c.publish_many("orders", [b"o%04d" % j for j in range(i, i + 100)])
            await eventually(lambda: len(recs("shared", holder.pid)) >= 100,
                             "the holder to fill its window", 20, 0.02)
            held = {r["body"] for r in recs("shared", holder.pid)}
            holder.signal(signal.SIGKILL)
            await holder.wait(10)
            await eventually(lambda: {r["body"] for r in recs("shared", survivor.pid)}
                             >= bodies and {r["body"] for r in recs("audit")} >= bodies,
                             "the survivor and audit to read every entry", 30, 0.05)
            again = {r["body"] for r in recs("shared", survivor.pid) if r["attempt"] >= 2}
            assert held <= again, f"{len(held - again)} held entries not redelivered"
            audit = recs("audit")
            assert len(audit) == 1000
            assert {r["attempt"] for r in audit} == {1}
            assert increasing([int(r["offset"]) for r in audit])
            await eventually(lambda: _done(c, "orders"), "both groups to commit all", 20,
                             0.05)
            g = await groups(c, "orders")
            assert g["audit"]["redelivered"] == 0
            assert g["shared"]["redelivered"] >= 100
    finally:
        for p in procs:
            if p.proc.returncode is None:
                p.signal(signal.SIGKILL)
                await p.wait(10)
        await broker.terminate_and_expect_exit(0, within=15)


async def _done(c: zq.Client, stream: str) -> bool:
    last = (await c.stream(stream))["last"]
    return all(g["committed"] == last for g in (await groups(c, stream)).values())


# ------------------------------------------------------- 9. name clashes


async def run_cli(endpoint: str, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``zq ARGS --endpoint ENDPOINT``."""
    p = await asyncio.create_subprocess_exec(
        *zq_argv(*args, "--endpoint", endpoint), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 30)
    return int(p.returncode or 0), out.decode(), err.decode()


async def test_name_clashes_with_queues_and_topics(tmp_path: Path) -> None:
    """A stream can't take the name of a queue holding messages, consumed, or bound to
    a topic; ``zq queue purge|delete|declare S`` and ``zq topic bind T S`` on a stream
    exit 1 with a message naming the stream, and the stream is unchanged."""
    broker = await start_broker(tmp_path)
    try:
        async with zq.Client(broker.endpoint) as c, zq.Client(broker.endpoint) as other:
            await c.publish("busy", b"x")
            await c.bind("topic", "bound")
            async with other.consume("consumed"):
                await eventually(lambda: _consumed(c, "consumed"), "the consumer", 5, 0.02)
                for name in ("busy", "bound", "consumed"):
                    with pytest.raises(zq.InvalidArgument, match=name):
                        await c.declare_stream(name)
            assert await c.streams() == []
            assert (await c.stats())["queues"]["busy"]["ready"] == 1
            await c.declare_stream("S")
            ids = await c.publish_many("S", [b"a", b"b"])
            for args in (("queue", "purge", "S"), ("queue", "delete", "S"),
                         ("queue", "declare", "S", "--max-attempts", "2"),
                         ("topic", "bind", "T", "S"), ("queue", "pause", "S")):
                code, out, err = await run_cli(broker.endpoint, *args)
                assert (code, "is a stream" in err) == (1, True), (args, code, out, err)
            info = await c.stream("S")
            assert (info["entries"], info["first"], info["last"]) == (2, ids[0], ids[1])
            assert [t["topic"] for t in await c.topics() if t["bindings"] and any(
                b["queue"] == "S" for b in t["bindings"])] == []
            code, out, err = await run_cli(broker.endpoint, "consume", "S", "--group", "g",
                                           "--from", "first", "--count", "2", "--timeout", "5")
            assert (code, out.split()) == (0, ["a", "b"]), (out, err)
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def _consumed(c: zq.Client, queue: str) -> bool:
    s = await c.stats()
    return any(queue in p.get("subs", {}) for p in s["peers"].values())
