"""Hostile input from raw DEALER sockets against a real broker process.

Every hostile frame gets exactly one ERROR frame back (docs/DESIGN.md, "hostile or
broken client"): malformed frames, wrong versions, unknown opcodes and frames in the
wrong state also end the sender's session; request errors (bad credit, unknown ids,
too many bodies) do not. A single part larger than ``max_frame`` (plus 64 KiB) is dropped by
ZeroMQ itself (``MAXMSGSIZE``), which closes the connection. Throughout, a
well-behaved ``zq.Client`` on the same broker keeps publishing and consuming, and the
broker keeps running (the fixtures check that it exits 0 on SIGTERM).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import zmq

import zq
from tests.procs import Proc
from tests.system.rawpeer import Raw, wait_event
from zq.config import BrokerConfig
from zq.errors import (
    FrameTooLarge,
    InvalidCredit,
    MalformedFrame,
    ProtocolViolation,
    SessionUnknown,
    StaleDelivery,
    UnknownDelivery,
    UnknownOpcode,
    UnsupportedVersion,
    ZqError,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.limits import PART_SLACK

# Errors after which the spec says the broker ends the session.
FATAL: tuple[type[ZqError], ...] = (MalformedFrame, UnsupportedVersion, UnknownOpcode,
                                    ProtocolViolation)
MAX_PUBLISH_BATCH = BrokerConfig().max_publish_batch
MAX_HEADER = codec.DEFAULT_LIMITS.max_header
SMALL_FRAME = 65_536
UNKNOWN_ID = 987_654_321

Parts = list[bytes]


# ------------------------------------------------------------- a good client


async def roundtrip(client: zq.Client, consumer: zq.Consumer, tag: str, n: int = 20) -> None:
    """Publish ``n`` messages and consume every one of them: nothing lost, nothing extra."""
    bodies = [f"{tag}:{i}".encode() for i in range(n)]
    ids = await client.publish_many("good", bodies)
    assert len(set(ids)) == n
    got: dict[int, bytes] = {}
    async with asyncio.timeout(5):
        while len(got) < n:
            msg = await consumer.get()
            got[msg.id] = msg.body
            await msg.ack()
    assert got == dict(zip(ids, bodies, strict=True))


def assert_alive(broker: Proc) -> None:
    assert broker.proc.returncode is None, f"broker exited; stderr:\n{broker.stderr()}"


async def counters(client: zq.Client) -> dict[str, Any]:
    stats = await client.stats()
    c: dict[str, Any] = stats["counters"]
    return c


# ----------------------------------------------------------- frame builders


def cmd(op: int, version: int = f.VERSION) -> bytes:
    return f.SIGNATURE + bytes((version, op))


def publish(seq: Any, bodies: Parts, queue: bytes = b"q", headers: Any = None) -> Parts:
    return [cmd(f.PUBLISH), queue, codec.packb([seq, headers or []]), *bodies]


def well_formed(op: int) -> Parts:
    """A valid encoding of each frame type (valid as bytes, whoever may send it)."""
    frame: f.Frame = {
        f.HELLO: f.Hello("x"),
        f.PUBLISH: f.Publish("q", 1, [b"x"]),
        f.HEARTBEAT: f.Heartbeat(),
        f.CREDIT: f.Credit("q", 5),
        f.CANCEL: f.Cancel("q"),
        f.ACK: f.Ack([1], [1]),
        f.NACK: f.Nack([1], [1]),
        f.RELEASE: f.Release([1]),
        f.STATS: f.Stats(1),
        f.WELCOME: f.Welcome("evil", 1000, 3, 1000, 100, 1 << 20),
        f.CONFIRM: f.Confirm([(1, 1, 1)]),
        f.DELIVER: f.Deliver("q", [1], [1], [b"x"]),
        f.STATS_REPLY: f.StatsReply(1, {}),
        f.ERROR: f.Error(5, "PROTOCOL_VIOLATION", "you"),
        f.BYE: f.Bye("x"),
        f.EXTEND: f.Extend([1], [1], 1000),
        f.START: f.Start([1], [1]),
        f.MANAGE: f.Manage(1, "sync"),
        f.MANAGE_REPLY: f.ManageReply(1, {}),
        f.LOCATE: f.Locate(1, "q"),
        f.LOCATION: f.Location(1, {}),
        f.CATALOG: f.Catalog(1, "snapshot", []),
        f.FORWARD: f.Forward(b"k", codec.encode(f.Heartbeat())),
    }[op]
    return codec.encode(frame)


CLIENT_WORK = (f.PUBLISH, f.CREDIT, f.CANCEL, f.ACK, f.NACK, f.RELEASE, f.EXTEND, f.STATS,
               f.MANAGE, f.HEARTBEAT)
# Work a stranger may send that gets exactly one error (a stranger's ACK, NACK or EXTEND
# also gets STALE_DELIVERY or UNKNOWN_DELIVERY for its ids: see the per-case test).
STRANGER_WORK = tuple(op for op in CLIENT_WORK if op not in (f.ACK, f.NACK, f.EXTEND))
BROKER_ONLY = (f.WELCOME, f.CONFIRM, f.DELIVER, f.STATS_REPLY, f.MANAGE_REPLY, f.ERROR)
WRONG_FIELDS: dict[str, Parts] = {
    "publish-seq-as-string": publish("1", [b"body"]),
    "credit-n-as-string": [cmd(f.CREDIT), codec.packb(["q", "5"])],
    "ack-ids-as-map": [cmd(f.ACK), codec.packb([{"1": 1}, [1]])],
    "nack-requeue-as-int": [cmd(f.NACK), codec.packb([[1], [1], 1, 0, ""])],
    "stats-req-negative": [cmd(f.STATS), codec.packb([-1])],
}


# ------------------------------------------------------------ the case table


@dataclass(frozen=True)
class Case:
    """One hostile input and the ERROR the broker must answer it with."""

    id: str
    build: Callable[[f.Welcome | None], list[Parts]]  # messages; only the last gets a reply
    error: type[ZqError]
    op: int | None  # expected ERROR op; None: not checked
    session: bool = False  # say HELLO first
    ref: Any = None

    @property
    def fatal(self) -> bool:
        return issubclass(self.error, FATAL)


def one(parts: Parts) -> Callable[[f.Welcome | None], list[Parts]]:
    return lambda _w: [parts]


def credit_beyond_max(w: f.Welcome | None) -> list[Parts]:
    assert w is not None
    return [codec.encode(f.Credit("q", w.max_credit + 1))]


def credit_window_overflow(w: f.Welcome | None) -> list[Parts]:
    """A full window (accepted, no reply), then one more."""
    assert w is not None
    return [codec.encode(f.Credit("q", w.max_credit)), codec.encode(f.Credit("q", 1))]


_rng = random.Random(20261122)
_junk_single = b"\x00" + _rng.randbytes(36)
_junk_multi = [b"\x01" + _rng.randbytes(8), _rng.randbytes(100), _rng.randbytes(3)]

STRANGER_CASES = [
    Case("random-bytes-single", one([_junk_single]), MalformedFrame, 0),
    Case("random-bytes-multi", one(_junk_multi), MalformedFrame, 0),
    Case("empty-part", one([b""]), MalformedFrame, 0),
    Case("wrong-signature", one([b"QZ\x01\x01", codec.packb({"name": "x"})]), MalformedFrame,
         None),
    Case("wrong-version-2", one([cmd(f.HELLO, 2), codec.packb({"name": "x"})]),
         UnsupportedVersion, f.HELLO),
    Case("wrong-version-0", one([cmd(f.HELLO, 0), codec.packb({"name": "x"})]),
         UnsupportedVersion, f.HELLO),
    Case("undecodable-msgpack", one([cmd(f.HELLO), b"\xc1\xff"]), MalformedFrame, f.HELLO),
    Case("truncated-msgpack", one([cmd(f.HELLO), codec.packb({"name": "abc"})[:-1]]),
         MalformedFrame, f.HELLO),
    Case("msgpack-trailing-bytes", one([cmd(f.HELLO), codec.packb({}) + b"\x00"]),
         MalformedFrame, f.HELLO),
    Case("hello-header-not-a-map", one([cmd(f.HELLO), codec.packb([1, 2])]), MalformedFrame,
         f.HELLO),
    Case("hello-three-parts", one([*well_formed(f.HELLO), b"extra"]), MalformedFrame, f.HELLO),
    Case("publish-without-body", one(publish(1, [])), MalformedFrame, f.PUBLISH),
    Case("header-over-max-header", one([cmd(f.HELLO), b"\xa0" * (MAX_HEADER + 1)]),
         FrameTooLarge, f.HELLO),
    Case("unknown-opcode", one([cmd(0x55), codec.packb(None)]), UnknownOpcode, 0x55),
    *(Case(f"before-hello-{f.NAMES[op].lower()}", one(well_formed(op)), SessionUnknown, op)
      for op in CLIENT_WORK),
    *(Case(f"client-sends-{f.NAMES[op].lower()}", one(well_formed(op)), ProtocolViolation, op)
      for op in BROKER_ONLY),
]

SESSION_CASES = [
    *(Case(name, one(parts), MalformedFrame, parts[0][3], session=True)
      for name, parts in WRONG_FIELDS.items()),
    Case("random-bytes-in-session", one([_junk_single]), MalformedFrame, 0, session=True),
    Case("wrong-version-in-session", one([cmd(f.STATS, 7), codec.packb([1])]),
         UnsupportedVersion, f.STATS, session=True),
    Case("unknown-opcode-in-session", one([cmd(0xEE), codec.packb(None)]), UnknownOpcode, 0xEE,
         session=True),
    Case("hello-twice", one(well_formed(f.HELLO)), ProtocolViolation, f.HELLO, session=True),
    Case("client-sends-deliver-in-session", one(well_formed(f.DELIVER)), ProtocolViolation,
         f.DELIVER, session=True),
    Case("client-sends-welcome-in-session", one(well_formed(f.WELCOME)), ProtocolViolation,
         f.WELCOME, session=True),
    Case("credit-zero", one(codec.encode(f.Credit("q", 0))), InvalidCredit, f.CREDIT,
         session=True, ref="q"),
    Case("credit-negative", one(codec.encode(f.Credit("q", -5))), InvalidCredit, f.CREDIT,
         session=True, ref="q"),
    Case("credit-beyond-max-credit", credit_beyond_max, InvalidCredit, f.CREDIT, session=True,
         ref="q"),
    Case("credit-window-overflow", credit_window_overflow, InvalidCredit, f.CREDIT,
         session=True, ref="q"),
    Case("credit-huge", one(codec.encode(f.Credit("q", (1 << 64) - 1))), InvalidCredit,
         f.CREDIT, session=True, ref="q"),
    Case("ack-unknown-id", one(codec.encode(f.Ack([UNKNOWN_ID], [1]))), UnknownDelivery, f.ACK,
         session=True, ref=[UNKNOWN_ID]),
    Case("nack-unknown-id", one(codec.encode(f.Nack([UNKNOWN_ID], [1]))), UnknownDelivery,
         f.NACK, session=True, ref=[UNKNOWN_ID]),
    Case("release-unknown-id", one(codec.encode(f.Release([UNKNOWN_ID]))), UnknownDelivery,
         f.RELEASE, session=True, ref=[UNKNOWN_ID]),
    Case("publish-too-many-bodies", one(publish(7, [b""] * (MAX_PUBLISH_BATCH + 1))),
         FrameTooLarge, f.PUBLISH, session=True, ref=7),
]


@pytest.mark.parametrize("case", STRANGER_CASES + SESSION_CASES, ids=lambda c: c.id)
async def test_hostile_frame_gets_an_error_and_others_carry_on(
        broker: Proc, raw: Callable[[str], Raw], case: Case) -> None:
    async with zq.Client(broker.endpoint, name="good") as good, \
            good.consume("good", prefetch=100) as consumer:
        await roundtrip(good, consumer, "before")
        r = raw(broker.endpoint)
        welcome = await r.hello() if case.session else None
        *quiet, last = case.build(welcome)
        for parts in quiet:
            await r.send(parts)
        await r.send(last)
        err = await r.error()
        if not case.session and case.op in (f.ACK, f.NACK, f.EXTEND):
            # A stranger settling ids: the lease is gone (fencing), then "say HELLO".
            assert (err.name, err.ref) == ("STALE_DELIVERY", [1]), err
            err = await r.error()
        assert (err.name, err.code) == (case.error.name, case.error.code), err
        if case.op is not None:
            assert err.op == case.op, err
        if case.ref is not None:
            assert err.ref == case.ref, err
        # fatal errors end the session, request errors do not; a stranger stays a stranger
        await r.send(codec.encode(f.Stats(99)))
        reply = await r.recv()
        if case.session and not case.fatal:
            assert isinstance(reply, f.StatsReply), reply
        else:
            assert isinstance(reply, f.Error), reply
            assert reply.name == SessionUnknown.name, reply
        await roundtrip(good, consumer, "after")
    assert_alive(broker)


# ------------------------------------------------------- counters and holders


async def test_errors_sent_counts_every_error_frame(
        broker: Proc, raw: Callable[[str], Raw]) -> None:
    hostile = [c for c in STRANGER_CASES if c.op not in (f.ACK, f.NACK, f.EXTEND)]
    async with zq.Client(broker.endpoint, name="good") as good:
        before = (await counters(good))["errors_sent"]
        names = []
        budget = BrokerConfig().malformed_budget  # per connection: then it is cut
        for i in range(0, len(hostile), budget):
            r = raw(broker.endpoint)
            for case in hostile[i:i + budget]:
                for parts in case.build(None):
                    await r.send(parts)
            names += [(await r.error()).name for _ in hostile[i:i + budget]]
        assert names == [case.error.name for case in hostile]
        after = (await counters(good))["errors_sent"]
        assert after - before == len(hostile)


async def test_hostile_consumer_loses_its_session_and_its_messages_come_back(
        broker: Proc, raw: Callable[[str], Raw]) -> None:
    async with zq.Client(broker.endpoint, name="good") as good:
        ids = await good.publish_many("jobs", [f"job-{i}".encode() for i in range(10)])
        r = raw(broker.endpoint)
        await r.hello()
        await r.send(codec.encode(f.Credit("jobs", 10)))
        held: list[int] = []
        while len(held) < 10:
            frame = await r.recv()
            assert isinstance(frame, f.Deliver), frame
            assert set(frame.attempts) == {1}
            held += frame.ids
        assert sorted(held) == ids
        # an ACK naming one held and one unknown id: the held one is acked, the other named
        await r.send(codec.encode(f.Ack([held[0], UNKNOWN_ID], [1, 1])))
        err = await r.error()
        assert (err.name, err.op, err.ref) == (UnknownDelivery.name, f.ACK, [UNKNOWN_ID])
        # an ACK for an attempt that is not the current one
        await r.send(codec.encode(f.Ack([held[1]], [7])))
        err = await r.error()
        assert (err.name, err.op, err.ref) == (StaleDelivery.name, f.ACK, [held[1]])
        # garbage ends the session; the nine messages it still held go back at once
        await r.send([_junk_single])
        assert (await r.error()).name == MalformedFrame.name
        got: dict[int, int] = {}
        async with asyncio.timeout(5), good.consume("jobs", prefetch=100) as consumer:
            while len(got) < 9:
                msg = await consumer.get()
                got[msg.id] = msg.attempt
                await msg.ack()
        assert got == dict.fromkeys(held[1:], 2)
        c = await counters(good)
        assert c["acked"] == 10
        assert c["peers_dropped"] == 1
    assert_alive(broker)


async def test_refused_credit_changes_nothing(broker: Proc, raw: Callable[[str], Raw]) -> None:
    r = raw(broker.endpoint)
    await r.hello()
    await r.send(codec.encode(f.Credit("q", 5)))
    await r.send(codec.encode(f.Cancel("q")))
    await r.send(codec.encode(f.Credit("q", 0)))
    assert (await r.error()).name == InvalidCredit.name
    await r.send(codec.encode(f.Stats(1)))
    reply = await r.recv()
    assert isinstance(reply, f.StatsReply), reply
    assert reply.stats["queues"]["q"]["consumers"] == 0, reply.stats


# ------------------------------------------------------------------ size limits


@pytest.fixture
async def small_broker(broker_factory: Callable[..., Awaitable[Proc]]) -> Proc:
    """A broker whose max_frame (and so ZeroMQ's MAXMSGSIZE) is 64 KiB."""
    return await broker_factory("--heartbeat", "0.5",
                                env={"ZQ_BROKER_MAX_FRAME": str(SMALL_FRAME)})


async def test_part_larger_than_max_frame_drops_the_connection(
        small_broker: Proc, raw: Callable[[str], Raw]) -> None:
    async with zq.Client(small_broker.endpoint, name="good") as good, \
            good.consume("good", prefetch=100) as consumer:
        await roundtrip(good, consumer, "before")
        r = raw(small_broker.endpoint)
        mon = r.monitor()
        welcome = await r.hello()
        assert welcome.max_frame == SMALL_FRAME
        errors_before = (await counters(good))["errors_sent"]
        # Up to PART_SLACK over the limit a part is read (and refused: FRAME_TOO_LARGE);
        # beyond it ZeroMQ refuses it from its size field, before reading it.
        await r.send(publish(1, [b"x" * (SMALL_FRAME + PART_SLACK + 1)]))
        await wait_event(mon, zmq.EVENT_DISCONNECTED)
        await roundtrip(good, consumer, "after")
        # the broker never saw the frame, so it sent no ERROR for it
        assert (await counters(good))["errors_sent"] == errors_before
        # the DEALER reconnects and is a new peer to the broker
        await wait_event(mon, zmq.EVENT_CONNECTED)
        await r.send(codec.encode(f.Stats(1)))
        assert (await r.error()).name == SessionUnknown.name
        await r.hello()
    assert_alive(small_broker)


async def test_message_over_max_frame_in_small_parts_gets_frame_too_large(
        small_broker: Proc, raw: Callable[[str], Raw]) -> None:
    async with zq.Client(small_broker.endpoint, name="good") as good, \
            good.consume("good", prefetch=100) as consumer:
        r = raw(small_broker.endpoint)
        await r.hello()
        half = b"x" * (SMALL_FRAME // 2 + 1)
        await r.send(publish(3, [half, half]))
        err = await r.error()
        assert (err.name, err.code, err.op) == (FrameTooLarge.name, FrameTooLarge.code,
                                                f.PUBLISH)
        await r.send(codec.encode(f.Stats(2)))  # a request error: the session goes on
        assert isinstance(await r.recv(), f.StatsReply)
        await roundtrip(good, consumer, "after")
        assert (await counters(good))["published"] == 20
    assert_alive(small_broker)


async def test_publish_over_max_frame_names_its_seq(
        small_broker: Proc, raw: Callable[[str], Raw]) -> None:
    r = raw(small_broker.endpoint)
    await r.hello()
    half = b"x" * (SMALL_FRAME // 2 + 1)
    await r.send(publish(3, [half, half]))
    err = await r.error()
    assert (err.name, err.op) == (FrameTooLarge.name, f.PUBLISH)
    assert err.ref == 3, err  # without the seq, the SDK cannot fail that publish


async def test_sdk_publish_just_under_max_frame_does_not_hang(small_broker: Proc) -> None:
    async with zq.Client(small_broker.endpoint, name="good") as good:
        with pytest.raises(zq.FrameTooLarge):
            async with asyncio.timeout(2):
                await good.publish_many("big", [b"x" * SMALL_FRAME])


async def test_sdk_splits_coalesced_publishes_by_bytes(small_broker: Proc) -> None:
    body = b"y" * (SMALL_FRAME // 3)  # ten of them coalesce into one turn, not one frame
    async with zq.Client(small_broker.endpoint, name="good") as good:
        ids = await asyncio.gather(*(good.publish("split", body) for _ in range(10)))
        assert len(set(ids)) == 10
        more = await good.publish_many("split", [body] * 10)
        assert len(set(more)) == 10
        assert (await counters(good))["errors_sent"] == 0


async def test_deliver_batches_fit_max_frame(small_broker: Proc) -> None:
    body = b"x" * (SMALL_FRAME * 2 // 3)  # each PUBLISH fits; two in one DELIVER do not
    async with zq.Client(small_broker.endpoint, name="good") as good:
        ids = [await good.publish("big", body) for _ in range(3)]
        got: list[int] = []
        async with good.consume("big", prefetch=10) as consumer:
            async with asyncio.timeout(2):
                while len(got) < 3:
                    msg = await consumer.get()
                    got.append(msg.id)
                    await msg.ack()
        assert sorted(got) == ids


async def test_hostile_headers_do_not_stall_a_good_consumer(
        broker: Proc, raw: Callable[[str], Raw]) -> None:
    r = raw(broker.endpoint)
    await r.hello()
    fat = {"h": "v" * (MAX_HEADER * 3 // 4)}  # each PUBLISH header fits max_header
    for seq in (1, 2):
        await r.send(publish(seq, [b"poison"], queue=b"good", headers=[fat]))
        confirm = await r.recv()
        assert isinstance(confirm, f.Confirm), confirm
    async with zq.Client(broker.endpoint, name="good") as good, \
            good.consume("good", prefetch=100) as consumer:
        n = 0
        async with asyncio.timeout(2):
            while n < 2:
                msg = await consumer.get()
                await msg.ack()
                n += 1


# ---------------------------------------------------------------- the burst


def _junk(rng: random.Random, lo: int, hi: int) -> bytes:
    b = bytearray(rng.randbytes(rng.randint(lo, hi)))
    if b and b[0] == ord("Z"):
        b[0] = 0  # never the start of a zq command part
    return bytes(b)


UNKNOWN_OPS = [op for op in range(256) if op not in f.NAMES]


def fatal_frame(rng: random.Random) -> tuple[Parts, str]:
    """A random frame that fails to decode or is never allowed from a client."""
    kind = rng.randrange(7)
    if kind == 0:
        return [_junk(rng, 0, 64)], MalformedFrame.name
    if kind == 1:
        return ([_junk(rng, 0, 16)] + [rng.randbytes(rng.randint(0, 64))
                                       for _ in range(rng.randint(1, 5))], MalformedFrame.name)
    if kind == 2:
        version = rng.choice([v for v in range(256) if v != f.VERSION])
        parts = well_formed(rng.choice(list(f.NAMES)))
        return [cmd(parts[0][3], version), *parts[1:]], UnsupportedVersion.name
    if kind == 3:
        return [cmd(rng.choice(UNKNOWN_OPS)), _junk(rng, 0, 32)], UnknownOpcode.name
    if kind == 4:  # 0xc1 is never valid msgpack
        op = rng.choice(CLIENT_WORK)
        bad = b"\xc1" + rng.randbytes(rng.randint(0, 32))
        parts = [cmd(op), b"q", bad, b"body"] if op == f.PUBLISH else [cmd(op), bad]
        return parts, MalformedFrame.name
    if kind == 5:
        return rng.choice(list(WRONG_FIELDS.values())), MalformedFrame.name
    return well_formed(rng.choice(BROKER_ONLY)), ProtocolViolation.name


def stranger_frame(rng: random.Random) -> tuple[Parts, str]:
    """A random frame from a peer that never said HELLO: always exactly one ERROR."""
    if rng.random() < 0.25:
        return well_formed(rng.choice(STRANGER_WORK)), SessionUnknown.name
    return fatal_frame(rng)


def request_error_frame(rng: random.Random, max_credit: int) -> tuple[Parts, str]:
    """A well-formed request from a peer in session that the broker must refuse."""
    queue = f"q{rng.randrange(100)}"
    kind = rng.randrange(4)
    ids = [UNKNOWN_ID + rng.randrange(1000) for _ in range(rng.randint(1, 5))]
    if kind == 0:
        n = rng.choice([0, -rng.randint(1, 1 << 40), max_credit + rng.randint(1, 1 << 40)])
        return codec.encode(f.Credit(queue, n)), InvalidCredit.name
    if kind == 1:
        return codec.encode(f.Ack(ids, [1] * len(ids))), UnknownDelivery.name
    if kind == 2:
        return codec.encode(f.Nack(ids, [1] * len(ids), rng.random() < 0.5)), UnknownDelivery.name
    return codec.encode(f.Release(ids)), UnknownDelivery.name


async def test_burst_of_random_hostile_frames_beside_normal_traffic(
        broker_factory: Callable[..., Awaitable[Proc]], raw: Callable[[str], Raw]) -> None:
    """2,000 random hostile frames from five sockets, interleaved with a producer and a
    consumer: each hostile frame gets its ERROR in order, and no good message is lost.
    (The malformed budget is lifted here, so that every frame is answered; with it, a
    connection past its budget is closed instead: tests/system/test_fuzz.py.)"""
    broker = await broker_factory("--heartbeat", "0.5", "--malformed-budget", "1000000")
    seed = 20261123
    rng = random.Random(seed)
    total, rounds = 2000, 20
    async with zq.Client(broker.endpoint, name="producer") as producer, \
            zq.Client(broker.endpoint, name="consumer") as consumer_client:
        before = await counters(producer)
        strangers = [raw(broker.endpoint) for _ in range(3)]
        member = raw(broker.endpoint)  # in session, sends request errors only
        rejoiner = raw(broker.endpoint)  # says HELLO, sends a fatal frame, again and again
        welcome = await member.hello()
        sockets = [*strangers, member, rejoiner]
        plan: list[tuple[Raw, Parts]] = []
        expected: dict[Raw, list[str]] = {s: [] for s in sockets}
        for _ in range(total):
            pick = rng.random()
            if pick < 0.6:
                sock = rng.choice(strangers)
                parts, name = stranger_frame(rng)
            elif pick < 0.85:
                sock = member
                parts, name = request_error_frame(rng, welcome.max_credit)
            else:
                sock = rejoiner
                plan.append((sock, well_formed(f.HELLO)))
                expected[sock].append("WELCOME")
                parts, name = fatal_frame(rng)
            plan.append((sock, parts))
            expected[sock].append(name)
        n_errors = sum(len(names) for names in expected.values()) - expected[rejoiner].count(
            "WELCOME")

        async def collect(sock: Raw, n: int) -> list[str]:
            out: list[str] = []
            while len(out) < n:
                frame = await sock.recv(timeout=10)
                out.append(frame.name if isinstance(frame, f.Error) else f.NAMES[
                    f.OPCODES[type(frame)]])
            return out

        sent: list[bytes] = []
        received: dict[int, bytes] = {}

        async def consume() -> None:
            async with consumer_client.consume("good", prefetch=200) as consumer:
                while len(received) < total:
                    msg = await consumer.get()
                    assert msg.id not in received, f"{msg.id} delivered twice (seed {seed})"
                    received[msg.id] = msg.body
                    await msg.ack()

        async def hostile_and_good() -> list[int]:
            ids: list[int] = []
            step = len(plan) // rounds + 1
            for k in range(rounds):
                for sock, parts in plan[k * step:(k + 1) * step]:
                    await sock.send(parts)
                await member.send(codec.encode(f.Heartbeat()))  # keep the member's session
                bodies = [f"good-{k}-{i}".encode() for i in range(total // rounds)]
                sent.extend(bodies)
                ids += await producer.publish_many("good", bodies)
            return ids

        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            collectors = {s: tg.create_task(collect(s, len(expected[s]))) for s in sockets}
            tg.create_task(consume())
            ids = await hostile_and_good()
        for sock, task in collectors.items():
            assert task.result() == expected[sock], f"seed {seed}"
        assert len(set(ids)) == total
        assert received == dict(zip(ids, sent, strict=True))  # nothing lost, nothing extra
        after = await counters(consumer_client)
        assert after["errors_sent"] - before["errors_sent"] == n_errors
        assert after["published"] - before["published"] == total
        assert after["acked"] - before["acked"] == total
        assert after["redelivered"] == before["redelivered"]
    assert_alive(broker)
