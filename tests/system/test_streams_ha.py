"""Streams on a replicated broker (PROTOCOL.md sections 18 and 21), real processes and a
real etcd: a stream's entries, its retention's purges and its groups' committed
offsets are staged in the WriteBatch the primary ships to its standby, so after the
primary is SIGKILLed the new primary serves each stream and group from where it was.

Two streams, ``log`` (no limit) and ``capped`` (``max_bytes`` 50 KB, 100-byte bodies,
so retention removes entries before the failover and again after it), each read by
two groups in clients given both nodes' endpoints: ``fast`` has read and acked
everything, ``half`` has acked half of what the stream holds and holds ``HOLD`` more
delivered and unacked when the primary is killed. It proves:

* before the kill, the standby holds the same entries as the primary (retention's
  purge included) and each group's committed offset as the primary reported it;
* the new primary reports the same entries, bytes, first and last offset (the capped
  stream under its cap) and each group's committed offset;
* new appends get offsets above every offset handed out before the failover, and
  retention goes on (on the new primary) for the capped stream;
* ``fast`` gets exactly the entries appended after the failover, nothing old;
  ``half`` gets every confirmed entry after its committed offset (lost = 0), and
  only the entries it held unacked come twice, at most; each consumer's offsets
  strictly increase after the failover;
* the old primary, back as standby, catches up to the same entries and offsets.

Then two producers publish to a stream and a lone consumer of a group reads it while
the primary is killed: every confirmed entry is stored once, at the offset its
confirm named (a frame resent on failover is not appended twice), the new primary's
entries have offsets above every one the old primary had shipped, and the group gets
every entry, only those taken past its replicated committed offset twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest

import zq
from tests.etcd import Etcd
from tests.helpers import eventually
from tests.system.durability_helpers import read_db
from tests.system.ha_helpers import HaPair
from zq.client.consumer import Consumer
from zq.errors import ZqError

pytestmark = pytest.mark.timeout(120)

CAP = 50_000  # bytes of bodies the capped stream keeps
BODY = 100  # bytes per body
FRAME = 250  # entries per publish_many
BEFORE = {"log": 1_000, "capped": 1_500}  # entries published before the failover
AFTER = {"log": 300, "capped": 100}  # ... and after it
FRAME_LIVE = 20  # entries per publish_many while the primary is killed (test 2)
HOLD = 25  # entries the half group holds delivered and unacked at the kill (its prefetch)
STREAMS = ("log", "capped")
GROUPS = ("fast", "half")


def body(stream: str, tag: str, i: int) -> bytes:
    return f"{stream}-{tag}-{i:06d}".encode().ljust(BODY, b".")


def stored_ids(pair: HaPair, node: int, stream: str) -> list[int]:
    """The offsets of ``stream``'s entries in node ``node``'s database, in order."""
    return [int(r[0]) for r in read_db(
        pair.data(node) / "zq.db", "SELECT e.id FROM entries e JOIN queues q ON q.qid = "
        "e.sid WHERE q.name = ? ORDER BY e.id", ("\x00stream\x00" + stream,))]


def stored_bytes(pair: HaPair, node: int, stream: str) -> int:
    return int(read_db(pair.data(node) / "zq.db", "SELECT total(length(e.body)) FROM "
                       "entries e JOIN queues q ON q.qid = e.sid WHERE q.name = ?",
                       ("\x00stream\x00" + stream,))[0][0])


def stored_group(pair: HaPair, node: int, stream: str, group: str) -> dict[str, Any] | None:
    """A group's settings row in node ``node``'s database ({"committed": n} or a seek)."""
    rows = read_db(pair.data(node) / "zq.db", "SELECT settings FROM queues WHERE name = ?",
                   (f"\x00group\x00{stream}\x00{group}",))
    if not rows or rows[0][0] is None:
        return None
    out: dict[str, Any] = msgpack.unpackb(rows[0][0])["group"]
    return out


async def stream_info(c: zq.Client, stream: str) -> dict[str, Any]:
    """The stream's stats once the client reaches the primary and every group's place
    is known (a recovered group's committed offset is looked up in the store first)."""
    got: dict[str, Any] = {}

    async def cond() -> bool:
        try:
            info = await c.stream(stream)
        except ZqError:  # the primary is lost, or the new one not serving yet
            return False
        got.update(info)
        return all(g["committed"] is not None for g in info["groups"])

    await eventually(cond, f"stats of stream {stream}", 30, 0.05)
    return got


def groups(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["group"]: g for g in info["groups"]}


async def take(consumer: Consumer, n: int, ack: bool) -> list[int]:
    """The offsets of the next ``n`` messages (acked if ``ack``)."""
    out: list[int] = []
    for _ in range(n):
        m = await consumer.get(30)
        assert m.offset is not None
        out.append(m.offset)
        if ack:
            await m.ack()
    return out


async def take_until(consumer: Consumer, wanted: set[int]) -> list[int]:
    """Offsets of messages, each acked, until every one of ``wanted`` came."""
    out: list[int] = []
    while not wanted <= set(out):
        m = await consumer.get(30)
        assert m.offset is not None
        out.append(m.offset)
        await m.ack()
    return out


async def _under_cap(c: zq.Client) -> bool:
    try:
        return bool((await c.stream("capped"))["bytes"] <= CAP)
    except ZqError:
        return False


async def _committed(c: zq.Client, stream: str, group: str, offset: int) -> bool:
    g = groups(await c.stream(stream))[group]
    return bool(g["committed"] == offset and g["pending"] == 0)


def increasing(offsets: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(offsets))


class Publisher:
    """A client publishing numbered bodies to a stream, ``FRAME_LIVE`` at a time, until
    stopped: offset -> body of what was confirmed, and what was not."""

    def __init__(self, endpoints: list[str], stream: str, name: str) -> None:
        self.endpoints = endpoints
        self.stream = stream
        self.name = name
        self.confirmed: dict[int, bytes] = {}
        self.unconfirmed: list[bytes] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def finish(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task

    async def _run(self) -> None:
        async with zq.Client(self.endpoints, name=self.name, connect_timeout=30) as c:
            k = 0
            while not self.stop.is_set():
                bodies = [f"{self.name}-{k + i:06d}".encode() for i in range(FRAME_LIVE)]
                k += FRAME_LIVE
                try:
                    ids = await c.publish_many(self.stream, bodies)
                except ZqError:  # not confirmed: may be stored or not, once at most
                    self.unconfirmed += bodies
                    await asyncio.sleep(0.05)  # (a pause before the next frame)
                    continue
                self.confirmed.update(zip(ids, bodies, strict=True))


class Reader:
    """A lone consumer of a group, acking each entry: the offset of each, and the
    endpoint of the node it came from."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.got: list[tuple[int, str]] = []
        self.task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def offsets(self, endpoint: str | None = None) -> list[int]:
        return [o for o, e in self.got if endpoint is None or e == endpoint]

    async def _run(self) -> None:
        while True:
            try:
                m = await self.consumer.get(0.2)
            except TimeoutError:
                continue
            except StopAsyncIteration:
                return
            assert m.offset is not None
            # (messages from a lost session are dropped when the consumer moves on, so
            # the one it receives from now is where this one came from)
            self.got.append((m.offset, self.consumer.connection.endpoint))
            with contextlib.suppress(ZqError):  # its session may be gone: it comes again
                await m.ack()


async def test_streams_and_groups_read_on_where_they_were_after_a_failover(
        tmp_path: Path, etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pair.stop)
        await pair.start_both()
        clients = {name: await stack.enter_async_context(
            zq.Client(pair.endpoints, name=name, connect_timeout=30))
            for name in ("main", *GROUPS)}
        c = clients["main"]
        await c.declare_stream("log")
        await c.declare_stream("capped", max_bytes=CAP)
        confirmed: dict[str, list[int]] = {s: [] for s in STREAMS}
        for s in STREAMS:
            for i in range(0, BEFORE[s], FRAME):
                confirmed[s] += await c.publish_many(
                    s, [body(s, "old", j) for j in range(i, i + FRAME)])
        await eventually(lambda: _under_cap(c), "retention to bring capped under its cap",
                         20, 0.05)

        # What each stream holds; the groups read it from "first".
        before = {s: await stream_info(c, s) for s in STREAMS}
        held = {s: [o for o in confirmed[s] if o >= before[s]["first"]] for s in STREAMS}
        assert held["log"] == confirmed["log"]
        assert before["capped"]["trimmed"] > 0
        assert before["capped"]["bytes"] <= CAP
        for s in STREAMS:
            assert before[s]["entries"] == len(held[s]), before[s]
            assert before[s]["last"] == confirmed[s][-1]
            assert before[s]["bytes"] == BODY * len(held[s])
        consumers: dict[tuple[str, str], Consumer] = {}
        seen: dict[tuple[str, str], list[int]] = {}  # offsets delivered before the kill
        half_at: dict[str, int] = {}  # how many entries the half group acked
        for s in STREAMS:
            for g in GROUPS:
                consumers[g, s] = await stack.enter_async_context(clients[g].consume(
                    s, group=g, start="first", prefetch=200 if g == "fast" else HOLD))
            seen["fast", s] = await take(consumers["fast", s], len(held[s]), ack=True)
            k = half_at[s] = len(held[s]) // 2
            seen["half", s] = await take(consumers["half", s], k, ack=True)
            # HOLD more, not acked: its whole credit, so the broker sends no more.
            seen["half", s] += await take(consumers["half", s], HOLD, ack=False)
            assert seen["fast", s] == held[s]
            assert seen["half", s] == held[s][:k + HOLD]
        committed = {(g, s): held[s][-1] if g == "fast" else held[s][half_at[s] - 1]
                     for s in STREAMS for g in GROUPS}

        # The primary has stored the acks: each group committed where it should ...
        async def settled() -> bool:
            for s in STREAMS:
                gs = groups(await c.stream(s))
                for g in GROUPS:
                    if gs[g]["committed"] != committed[g, s]:
                        return False
                if gs["half"]["delivered"] != half_at[s] + HOLD:
                    return False
            return True
        await eventually(settled, "the groups' acks to be committed", 20, 0.05)
        # ... and so has the standby (with the entries, and retention's purge).
        await eventually(
            lambda: all(stored_ids(pair, 1, s) == held[s] == stored_ids(pair, 0, s)
                        and stored_group(pair, 1, s, g) == {"committed": committed[g, s]}
                        for s in STREAMS for g in GROUPS),
            "the standby to hold the same entries and committed offsets", 20, 0.05)
        assert stored_bytes(pair, 1, "capped") == before["capped"]["bytes"] <= CAP

        # The primary dies; n1 takes over; the clients follow.
        assert await pair.leader() == "n0"
        term = await pair.term()
        pair.kill(0)
        assert await pair.reap(0) == -signal.SIGKILL
        await pair.wait_leader("n1")
        assert await pair.term() > term

        after = {s: await stream_info(c, s) for s in STREAMS}
        for s in STREAMS:
            for key in ("entries", "bytes", "first", "last", "max_bytes", "max_age"):
                assert after[s][key] == before[s][key], (s, key, before[s], after[s])
            gs = groups(after[s])
            for g in GROUPS:
                assert gs[g]["committed"] == committed[g, s], (s, g, gs[g])
            assert gs["fast"]["pending"] == 0, gs
            assert gs["half"]["pending"] == len(held[s]) - half_at[s], gs

        # New appends: offsets above every one handed out before.
        new: dict[str, list[int]] = {}
        for s in STREAMS:
            new[s] = await c.publish_many(s, [body(s, "new", j) for j in range(AFTER[s])])
            assert increasing(new[s])
        old_top = max(max(ids) for ids in confirmed.values())
        assert min(min(ids) for ids in new.values()) > old_top, (old_top, new)

        # Retention goes on on the new primary, and removes only entries that the
        # half group had done (so that it has every one it had not).
        await eventually(lambda: _under_cap(c), "retention on the new primary", 20, 0.05)
        capped = await stream_info(c, "capped")
        assert capped["first"] > before["capped"]["first"], capped
        assert capped["first"] <= held["capped"][half_at["capped"]], capped
        assert capped["last"] == new["capped"][-1]
        assert capped["entries"] == len([o for o in held["capped"] + new["capped"]
                                         if o >= capped["first"]])

        for s in STREAMS:
            # The caught-up group: the new entries, nothing before them.
            got = await take(consumers["fast", s], len(new[s]), ack=True)
            assert got == new[s], (s, got[:5], new[s][:5])
            # The halfway group: everything after its committed offset; only what it
            # held unacked may come twice.
            k = half_at[s]
            want = held[s][k:] + new[s]
            got = await take_until(consumers["half", s], set(want))
            assert set(got) == set(want), (s, sorted(set(got) - set(want))[:10])
            counts = Counter(seen["half", s] + got)
            twice = {o for o, n in counts.items() if n > 1}
            assert twice <= set(held[s][k:k + HOLD]), (s, sorted(twice)[:10])
            assert max(counts.values()) <= 2, counts.most_common(3)
            assert increasing(got), (s, got[:HOLD + 5])
            assert all(o > committed["half", s] for o in got)

        # Both groups commit the last entry; the new primary delivered the fast group
        # its new entries only, once each.
        async def done() -> bool:
            for s in STREAMS:
                gs = groups(await c.stream(s))
                if any(gs[g]["committed"] != new[s][-1] or gs[g]["pending"] != 0
                       for g in GROUPS):
                    return False
            return True
        await eventually(done, "both groups to commit the last entry", 20, 0.05)
        for s in STREAMS:
            gs = groups(await c.stream(s))
            assert gs["fast"]["delivered"] == len(new[s]), gs["fast"]
            assert gs["fast"]["redelivered"] == 0, gs["fast"]

        # The old primary comes back as standby and holds the same.
        await pair.start(0)
        await pair.wait_sync("n0")
        await eventually(
            lambda: all(stored_ids(pair, 0, s) == stored_ids(pair, 1, s)
                        and stored_group(pair, 0, s, g) == stored_group(pair, 1, s, g)
                        == {"committed": new[s][-1]}
                        for s in STREAMS for g in GROUPS),
            "the old primary, now standby, to hold the same entries and offsets", 20, 0.05)
        assert stored_ids(pair, 1, "capped")[0] == capped["first"]
        assert stored_bytes(pair, 0, "capped") == stored_bytes(pair, 1, "capped") <= CAP


async def test_entries_published_and_read_through_a_failover_are_stored_once_and_read(
        tmp_path: Path, etcd: Etcd) -> None:
    """Producers publish to a stream and a group reads it while the primary is killed:
    every confirmed entry is stored once on the new primary (an idempotent resend of
    a frame the standby had stored is not appended again), entries stored by the new
    primary have offsets above every one the old one stored, and the group gets every
    entry: the new primary delivers from the committed offset the standby had stored,
    so that only entries taken from the old primary and not committed come twice."""
    pair = HaPair(tmp_path, etcd)
    publishers = [Publisher(pair.endpoints, "events", f"p{i}") for i in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pair.stop)
        await pair.start_both()
        c = await stack.enter_async_context(
            zq.Client(pair.endpoints, name="main", connect_timeout=30))
        r = await stack.enter_async_context(
            zq.Client(pair.endpoints, name="reader", connect_timeout=30))
        await c.declare_stream("events")
        consumer = await stack.enter_async_context(
            r.consume("events", group="g", start="first", prefetch=50))
        reader = Reader(consumer)
        stack.push_async_callback(reader.close)
        for p in publishers:
            p.start()
            stack.push_async_callback(p.finish)

        def confirmed() -> int:
            return sum(len(p.confirmed) for p in publishers)

        await eventually(lambda: confirmed() >= 1_000 and len(reader.got) >= 500,
                         "publishing and reading", 20, 0.02)
        pair.kill(0)
        assert await pair.reap(0) == -signal.SIGKILL
        # What the standby had stored when the primary died (it cannot be promoted,
        # and so change anything, before the old primary's lease runs out).
        old_ids = stored_ids(pair, 1, "events")
        old_group = stored_group(pair, 1, "events", "g")
        assert old_group is not None
        at_kill = int(old_group["committed"])
        await pair.wait_leader("n1")
        count = confirmed()
        await eventually(lambda: confirmed() >= count + 500, "confirms from the new primary",
                         30, 0.02)
        for p in publishers:
            await p.finish()

        # Every confirmed entry is stored once, at the offset its confirm named.
        rows = {int(i): bytes(b) for i, b in read_db(
            pair.data(1) / "zq.db", "SELECT e.id, e.body FROM entries e JOIN queues q ON "
            "q.qid = e.sid WHERE q.name = ?", ("\x00stream\x00events",))}
        bodies = Counter(rows.values())
        twice = [b for b, n in bodies.items() if n > 1]
        assert not twice, f"stored more than once: {twice[:10]} ({len(twice)})"
        for p in publishers:
            lost = {o: b for o, b in p.confirmed.items() if rows.get(o) != b}
            assert not lost, f"confirmed, not stored at its offset: {list(lost.items())[:5]}"
        assert set(old_ids) <= set(rows)
        new_ids = set(rows) - set(old_ids)
        assert new_ids, "nothing stored by the new primary"
        assert min(new_ids) > max(old_ids), (min(new_ids), max(old_ids))
        info = await stream_info(c, "events")
        assert info["entries"] == len(rows)
        assert info["last"] == max(rows)

        # The group gets every entry; only what it took past the stored offset twice.
        await eventually(lambda: set(reader.offsets()) >= set(rows),
                         "the group to read every entry", 30, 0.05)
        got = reader.offsets()
        assert set(got) == set(rows)
        old, new = reader.offsets(pair.endpoints[0]), reader.offsets(pair.endpoints[1])
        assert len(old) + len(new) == len(got)
        assert increasing(old)  # from the old primary: in order, once each
        # The new primary reads on from the committed offset the standby had stored ...
        assert new[0] == min(o for o in rows if o > at_kill), (new[:5], at_kill)
        assert all(o > at_kill for o in new), sorted(o for o in new if o <= at_kill)[:10]
        # ... so that only entries taken from the old one and not committed come twice.
        counts = Counter(got)
        again = {o for o, n in counts.items() if n > 1}
        assert again <= {o for o in old if o > at_kill}, sorted(again)[:10]
        assert max(counts.values()) <= 2, counts.most_common(3)
        # Once past those, in order, once each.
        top = max(old)
        i = next((j for j, o in enumerate(new) if o > top), len(new))
        assert increasing(new[i:]), new[i:i + 20]
        await eventually(lambda: _committed(c, "events", "g", max(rows)),
                         "the group to commit the last entry", 20, 0.05)
        # A group made now from "first" replays the stream: each entry once, in order.
        async with c.consume("events", group="replay", start="first",
                             prefetch=500) as replay:
            offsets = await take(replay, len(rows), ack=True)
        assert offsets == sorted(rows)
