"""CURVE keys and permissions with real processes on loopback (issue: security).

* Refused connections (acceptance 1): connection attempts with no key (a plain
  DEALER), an unknown key, a wrong server key, and random bytes (a raw TCP socket),
  100 of each kind by default and 1,000 with ``-m slow``, each one connection. None
  gets a session (STATS ``peers_total``, ``sessions_per_key``) or changes a queue (its
  depth and counters, the list of queues); STATS ``security`` counts each refusal by
  reason, exactly once; the broker's log names each with its reason, on a line of its
  own or in the summing-up lines written once a second.
* Rights (acceptance 2): three keys x four queues x {publish, consume, ack, manage,
  admin}, through a broker directly and through a router of a two-broker cluster (a
  consumer is MOVED to the broker: the cell holds there too). Every cell is what the
  permissions file says (the expected table is written out by hand, not computed with
  zq's matcher) and every refused cell changes nothing.
* Spoofing: bob's keys on a raw DEALER whose HELLO claims ``user="alice"``, and
  publishes whose headers name alice, get bob's rights only; directly and through a
  router.
* Vouching: a router whose own key may not relay gets its clients that key's rights,
  not theirs; a router whose key may relay gets them their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

import zq
from tests.cluster_helpers import write_cluster
from tests.helpers import eventually
from tests.procs import Proc
from tests.security_helpers import (
    CLOSED,
    ENDED,
    GARBAGE,
    KEY_REFUSED,
    NO_KEY,
    UNKNOWN_KEY,
    WRONG_SERVER_KEY,
    CurveWire,
    KeyPair,
    Keyring,
    curve_client,
    log_lines,
    log_size,
    refusals,
    server_stats,
    start_curve_broker,
    start_curve_cluster_broker,
    start_curve_router,
    write_permissions,
)
from zq.errors import Forbidden, UnknownQueue, ZqError
from zq.protocol import codec
from zq.protocol import frames as f
from zq.security.curve import ClientKeys

FORBIDDEN = Forbidden.code


async def stop_all(procs: list[Proc]) -> None:
    """SIGTERM each (the last started first); each must exit 0."""
    failures: list[str] = []
    for proc in reversed(procs):
        try:
            await proc.terminate_and_expect_exit(0, within=10.0)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------ refused connections

GUARDED = "guarded"  # a queue every intruder tries to publish to
SEEDED = 5

# Each kind: the reasons the broker may give for it, in its log and in STATS
# security.handshakes_failed. A client without a key that hangs up first (it read the
# server's CURVE greeting: a third of them, measured) looks like any hang-up; random
# bytes that begin like a ZMTP 3 greeting (1 in 512) name another mechanism.
LOGGED = {
    "no key": (NO_KEY, ENDED, CLOSED),
    "unknown key": (UNKNOWN_KEY,),
    "wrong server key": (WRONG_SERVER_KEY,),
    "random bytes": (GARBAGE, ENDED, NO_KEY, CLOSED),
}
COUNTED = {
    "no key": (NO_KEY, ENDED, CLOSED),
    "unknown key": (KEY_REFUSED,),
    "wrong server key": (WRONG_SERVER_KEY,),
    "random bytes": (GARBAGE, ENDED, NO_KEY, CLOSED),
}
# What the client's own socket monitor reports for each kind of zmq attempt.
CLIENT_SEES = {
    "no key": {zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL},
    "unknown key": {zmq.EVENT_HANDSHAKE_FAILED_AUTH},
    "wrong server key": {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                         zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL},
}
_HANDSHAKE_ENDS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                   | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
IN_FLIGHT = 50  # attempts under way at once
SUMMED_UP_WITHIN = 5.0  # s: refusals not logged one by one are summed up once a second


@dataclass
class Guarded:
    broker: Proc
    server: KeyPair
    alice: KeyPair  # authorized
    mallory: KeyPair  # a key the broker does not know


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Guarded]:
    ring = Keyring(tmp_path)
    server = ring.make("server", authorize=False)  # its own key: let in as "@server"
    alice = ring.make("alice")
    mallory = ring.make("mallory", authorize=False)
    broker = await start_curve_broker(tmp_path, server, ring.authorized)
    try:
        yield Guarded(broker, server, alice, mallory)
    finally:
        await stop_all([broker])


async def zmq_attempt(ctx: zmq.asyncio.Context, endpoint: str, keys: ClientKeys | None
                      ) -> int:
    """One connection of a DEALER that queues a HELLO and a PUBLISH: the first event
    that ends its handshake. It never connects again (RECONNECT_IVL -1) and is closed
    after that event."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, -1)
    if keys is not None:
        keys.apply(sock)
    mon = sock.get_monitor_socket(_HANDSHAKE_ENDS)
    try:
        sock.connect(endpoint)
        for frame in (f.Hello("intruder"), f.Publish(GUARDED, 1, [b"intruder"])):
            # Queued until the handshake is done (never); not sent at all if it already
            # failed (the connection is gone and not made again: a send would block).
            with contextlib.suppress(zmq.Again):
                await sock.send_multipart(codec.encode(frame), flags=zmq.NOBLOCK)
        async with asyncio.timeout(10):
            event: int = parse_monitor_message(await mon.recv_multipart())["event"]
        return event
    finally:
        sock.disable_monitor()
        mon.close(linger=0)
        sock.close(linger=0)


async def random_attempt(port: int, junk: bytes) -> None:
    """One TCP connection sending ``junk``; returns once the broker hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(junk)
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(10):
                while await reader.read(4096):
                    pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def attempts(g: Guarded, kind: str, n: int) -> Counter[int]:
    """``n`` connection attempts of ``kind``, IN_FLIGHT at a time: the handshake events
    the zmq clients saw (none for random bytes)."""
    endpoint = g.broker.endpoint
    keys = {"no key": None,
            "unknown key": g.mallory.client_keys(g.server),
            "wrong server key": g.alice.client_keys(g.mallory)}.get(kind)
    rng = random.Random(20_240_612)
    junk = [rng.randbytes(256) for _ in range(n)]
    port = int(endpoint.rsplit(":", 1)[1])
    gate = asyncio.Semaphore(IN_FLIGHT)
    ctx = zmq.asyncio.Context()

    async def one(i: int) -> int | None:
        async with gate:
            if kind == "random bytes":
                await random_attempt(port, junk[i])
                return None
            return await zmq_attempt(ctx, endpoint, keys)

    try:
        seen = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        ctx.term()
    return Counter(e for e in seen if e is not None)


def _security(stats: dict[str, Any]) -> dict[str, Any]:
    sec: dict[str, Any] = stats["security"]
    return sec


def _counted(before: dict[str, Any], after: dict[str, Any]) -> Counter[str]:
    """Handshake failures (and the authenticator's refusals, as "keys_refused: R")
    counted between two STATS."""
    out: Counter[str] = Counter()
    for key in ("handshakes_failed", "keys_refused"):
        prefix = "" if key == "handshakes_failed" else "keys_refused: "
        b, a = _security(before)[key], _security(after)[key]
        for reason in set(a) | set(b):
            if a.get(reason, 0) != b.get(reason, 0):
                out[prefix + reason] = a.get(reason, 0) - b.get(reason, 0)
    return out


SIZES = [pytest.param(100, id="100"), pytest.param(1000, id="1000", marks=pytest.mark.slow)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", list(LOGGED))
async def test_refused_connections_get_nothing_and_are_counted_and_logged(
        guarded: Guarded, kind: str, n: int) -> None:
    g = guarded
    async with curve_client(g.broker.endpoint, g.server, g.server, name="observer") as obs:
        await obs.publish_many(GUARDED, [b"seed-%d" % i for i in range(SEEDED)])
        before = await obs.stats()
        queue_before = (await obs.queue_info(GUARDED))["stats"]
        log_start = log_size(g.broker.log)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        seen = await attempts(g, kind, n)
        took = loop.time() - t0

        # The clients were refused at the handshake, each once.
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in seen, f"a {kind} handshake succeeded"
        if kind in CLIENT_SEES:
            assert sum(seen.values()) == n
            assert set(seen) <= CLIENT_SEES[kind], seen

        await _check_nothing_gained(obs, before, queue_before)
        await _check_counted(obs, before, kind, n)
    await _check_logged(g.broker.log, log_start, kind, n, took)


async def _check_nothing_gained(obs: zq.Client, before: dict[str, Any],
                                queue_before: dict[str, Any]) -> None:
    """No session, no queue changed or made, no connection left open."""
    after = await obs.stats()
    assert after["peers_total"] == before["peers_total"] == 1  # the observer's
    assert _security(after)["sessions_per_key"] == {"@server": 1}
    assert set(after["queues"]) == {GUARDED}, "an intruder made a queue"
    queue_after = (await obs.queue_info(GUARDED))["stats"]
    for k in ("ready", "published", "in_flight", "delivered"):
        assert queue_after[k] == queue_before[k], (k, queue_before, queue_after)
    assert queue_after["published"] == SEEDED

    async def closed() -> bool:
        sec = _security(await obs.stats())
        return bool(sec["connections"] == 1 and sec["without_session"] == 0)

    await eventually(closed, "the refused connections to be gone", 10)


async def _check_counted(obs: zq.Client, before: dict[str, Any], kind: str, n: int) -> None:
    """STATS security: each attempt counted once, under this kind's reasons only."""
    async def counted_all() -> bool:
        got = _counted(before, await obs.stats())
        return sum(got[r] for r in COUNTED[kind]) >= n

    with contextlib.suppress(AssertionError):  # the checks below say what is missing
        await eventually(counted_all, f"STATS to count {n} {kind} refusals", 5)
    counted = _counted(before, await obs.stats())
    expected_keys = set(COUNTED[kind])
    if kind == "unknown key":
        expected_keys.add(f"keys_refused: {UNKNOWN_KEY}")
        assert counted[f"keys_refused: {UNKNOWN_KEY}"] == n, counted
    assert set(counted) <= expected_keys, f"counted under other reasons: {counted}"
    assert sum(counted[r] for r in COUNTED[kind]) == n, (
        f"{n} {kind} refusals, STATS security counted {counted}")
    if kind == "no key":  # most of them are told apart from a hang-up
        assert counted[NO_KEY] > 0, counted


async def _check_logged(log: Path, start: int, kind: str, n: int, took: float) -> None:
    """Every refusal in the log with its reason: one line each, up to 20 a second, the
    rest in the summing-up lines written once a second."""
    with contextlib.suppress(AssertionError):
        await eventually(lambda: sum(refusals(log, start)[r] for r in LOGGED[kind]) >= n,
                         f"the log to name {n} {kind} refusals", SUMMED_UP_WITHIN, 0.05)
    found = refusals(log, start)
    assert set(found) <= set(LOGGED[kind]), f"logged under other reasons: {found}"
    assert sum(found.values()) == n, (
        f"{n} {kind} refusals, {SUMMED_UP_WITHIN} s later the log names {found}")
    one_by_one = sum("refused a connection: " in line for line in log_lines(log, start))
    assert one_by_one <= 20 * (int(took) + 2), (
        f"{one_by_one} lines for {n} refusals in {took:.1f} s: not rate-limited")


# ---------------------------------------------------------------- the rights matrix

QUEUES = ("orders.eu", "orders.us", "logs.app", "audit.trail")
RULES: dict[str, dict[str, Any]] = {
    "alice": {"publish": ["orders.#"], "consume": ["orders.eu"], "manage": ["orders.*"]},
    "bob": {"publish": ["logs.*", "audit.#"], "consume": ["logs.#", "orders.us"],
            "manage": ["logs.app"]},
    "carol": {"publish": ["*.eu"], "consume": ["audit.*"], "manage": ["#"], "admin": True},
}
# RULES read by hand: the queues each key may publish to, consume from (and so ack)
# and manage. Admin (broker-wide) is carol's only.
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("alice", "publish"): {"orders.eu", "orders.us"},
    ("alice", "consume"): {"orders.eu"},
    ("alice", "manage"): {"orders.eu", "orders.us"},
    ("bob", "publish"): {"logs.app", "audit.trail"},
    ("bob", "consume"): {"logs.app", "orders.us"},
    ("bob", "manage"): {"logs.app"},
    ("carol", "publish"): {"orders.eu"},
    ("carol", "consume"): {"audit.trail"},
    ("carol", "manage"): set(QUEUES),
}
ADMINS = {"carol"}
SEED = 3  # messages per queue before the cells run
MATRIX_WITHIN = 60.0  # s for all cells (about 2 s when nothing is stuck)
SNAPSHOT = ("ready", "delayed", "in_flight", "published", "delivered", "acked", "nacked",
            "dead", "paused")


def expected(name: str, queue: str, cell: str) -> bool:
    op = cell.split(":")[0]
    if op == "admin":
        return name in ADMINS
    return queue in ALLOWED[(name, "consume" if op == "ack" else op)]


@dataclass
class Deployment:
    """Where the keys' clients connect (a broker, or a cluster's router), and the
    brokers behind it."""

    endpoint: str
    ring: Keyring
    server: KeyPair
    brokers: dict[str, str]  # id -> endpoint
    via_router: bool

    async def owner(self, obs: zq.Client, queue: str) -> str:
        """The endpoint of the broker that holds ``queue``."""
        if not self.via_router:
            return next(iter(self.brokers.values()))
        loc = await obs.locate(queue)
        return self.brokers[loc["broker"]]


@pytest.fixture(params=["direct", "router"])
async def deployment(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> AsyncIterator[Deployment]:
    ring = Keyring(tmp_path)
    server = ring.make("server", authorize=False)
    for name in RULES:
        ring.make(name)
    perms = write_permissions(tmp_path / "permissions.toml", RULES)
    procs: list[Proc] = []
    try:
        if request.param == "direct":
            broker = await start_curve_broker(tmp_path, server, ring.authorized, perms)
            procs.append(broker)
            yield Deployment(broker.endpoint, ring, server, {"b": broker.endpoint}, False)
        else:
            cluster = tmp_path / "cluster.toml"
            brokers = write_cluster(cluster, ["b1", "b2"])
            for bid in brokers:
                procs.append(await start_curve_cluster_broker(
                    tmp_path, cluster, bid, server, ring.authorized, perms))
            router = await start_curve_router(tmp_path, cluster, server, ring.authorized,
                                              perms)
            procs.append(router)
            yield Deployment(router.endpoint, ring, server, brokers, True)
    finally:
        await stop_all(procs)


async def snapshot(obs: zq.Client, queue: str) -> dict[str, Any]:
    """What a cell may change of ``queue`` (a queue deleted shows as ``gone``, with
    the counts a queue made again starts from)."""
    try:
        stats = (await obs.queue_info(queue))["stats"]
    except UnknownQueue:
        return {"gone": True, **{k: 0 for k in SNAPSHOT}, "paused": False}
    return {k: stats[k] for k in SNAPSHOT}


def refusal(exc: Forbidden, name: str, queue: str | None) -> None:
    """A FORBIDDEN answer names the key refused, and the queue if there is one."""
    assert exc.code == FORBIDDEN
    assert f"key {name!r}" in str(exc), exc
    if queue is not None:
        assert repr(queue) in str(exc), exc


@dataclass
class Matrix:
    """What each cell did: allowed or refused; and what refused cells changed."""

    d: Deployment
    obs: zq.Client
    seen: dict[tuple[str, str, str], bool] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    req: int = 1000
    step: str = "setting up"  # the cell under way, for a test that times out
    final: dict[str, dict[str, Any]] = field(default_factory=dict)  # queue -> snapshot

    async def refused_cell(self, name: str, queue: str, cell: str,
                           act: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``act``: False (and check that nothing changed) if it was FORBIDDEN."""
        self.step = f"{name} {cell} {queue}"
        before = await snapshot(self.obs, queue)
        try:
            await act()
        except Forbidden as exc:
            refusal(exc, name, None if cell.startswith("admin") else queue)
            after = await snapshot(self.obs, queue)
            if after != before:
                self.changed.append(f"{name} {cell} {queue}: {before} -> {after}")
            self.seen[(name, queue, cell)] = False
            return False
        self.seen[(name, queue, cell)] = True
        return True

    async def publish(self, c: zq.Client, name: str, q: str) -> None:
        before = await snapshot(self.obs, q)
        if await self.refused_cell(name, q, "publish",
                                   lambda: c.publish(q, f"{name}->{q}".encode())):
            after = await snapshot(self.obs, q)
            assert (after["published"], after["ready"]) == (
                before["published"] + 1, before["ready"] + 1), (name, q, before, after)

    async def consume_and_ack(self, c: zq.Client, name: str, q: str) -> None:
        """consume: a message delivered; ack: it is settled. A key that may not consume
        is refused its CREDIT; its ACK of a message it guessed (held by another
        session) settles nothing."""
        before = await snapshot(self.obs, q)

        async def take() -> None:
            async with c.consume(q, prefetch=1) as consumer:
                m = await consumer.get(timeout=5)
                # Through a router, the consumer was placed on the queue's broker.
                assert m._conn.endpoint == await self.d.owner(self.obs, q), m._conn.endpoint
                held = await snapshot(self.obs, q)
                assert held["delivered"] >= before["delivered"] + 1, (name, q, held)
                await m.ack(wait=True)

        if await self.refused_cell(name, q, "consume", take):
            after = await snapshot(self.obs, q)
            self.seen[(name, q, "ack")] = after["acked"] == before["acked"] + 1
            await eventually(self._settled(q, before["ready"] - 1),
                             f"{q}: {name}'s consumer closed")
            return
        self.seen[(name, q, "ack")] = await self._guessed_ack(name, q)

    def _settled(self, q: str, ready: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            s = await snapshot(self.obs, q)
            return bool(s["in_flight"] == 0 and s["ready"] == ready)
        return check

    async def _guessed_ack(self, name: str, q: str) -> bool:
        """An ACK by ``name`` (at the queue's broker, raw) of the message the observer
        holds: True if it settled it."""
        owner = await self.d.owner(self.obs, q)
        async with self.obs.consume(q, prefetch=1) as held:
            m = await held.get(timeout=5)
            before = await snapshot(self.obs, q)
            wire = CurveWire(owner, self.d.ring[name], self.d.server)
            try:
                await wire.hello(name=f"{name}-raw")
                await wire.send(f.Ack([m.id], [m.attempt]))
                self.req += 1
                await wire.sync(self.req)
            finally:
                wire.close()
            after = await snapshot(self.obs, q)
            await m.release()
        await eventually(self._settled(q, before["ready"] + 1), f"{q}: released")
        if after != before:
            self.changed.append(f"{name} ack {q} (guessed): {before} -> {after}")
        return bool(after["acked"] > before["acked"])

    async def manage(self, c: zq.Client, name: str, q: str) -> None:
        """info, pause and resume (the state checked); where refusals are expected,
        purge and delete too (a wrong "allowed" shows as a change)."""
        cells: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("manage:info", lambda: c.queue_info(q)),
            ("manage:pause", lambda: c.pause_queue(q)),
        ]
        for cell, act in cells:
            await self.refused_cell(name, q, cell, act)
        if self.seen[(name, q, "manage:pause")]:
            assert (await snapshot(self.obs, q))["paused"] is True, (name, q)
        await self.refused_cell(name, q, "manage:resume", lambda: c.resume_queue(q))
        assert (await snapshot(self.obs, q))["paused"] is False, (name, q)
        if not expected(name, q, "manage"):
            await self.refused_cell(name, q, "manage:purge", lambda: c.purge_queue(q))
            await self.refused_cell(name, q, "manage:delete", lambda: c.delete_queue(q))

    async def admin(self, c: zq.Client, name: str, q: str) -> None:
        """An admin operation that names the queue (move_status: allowed is anything
        but FORBIDDEN; no move is under way, so it changes nothing)."""
        async def status() -> None:
            try:
                await c.move_status(q)
            except Forbidden:
                raise
            except ZqError:  # "not being moved": past the check of rights
                pass

        await self.refused_cell(name, q, "admin:move_status", status)

    async def broker_wide(self, c: zq.Client, name: str) -> None:
        """STATS and MANAGE list (admin): nothing to change, so the first queue's
        snapshot stands for "nothing changed"."""
        q = QUEUES[0]
        await self.refused_cell(name, q, "admin:stats", c.stats)
        if not self.d.via_router:  # a router answers list with "name a queue"
            await self.refused_cell(name, q, "admin:list", c.queues)


async def run_matrix(d: Deployment) -> Matrix:
    async with curve_client(d.endpoint, d.server, d.server, name="observer") as obs:
        for q in QUEUES:
            await obs.publish_many(q, [f"seed-{i}".encode() for i in range(SEED)])
        m = Matrix(d, obs)
        try:
            async with asyncio.timeout(MATRIX_WITHIN):
                await _cells(d, m)
        except TimeoutError:
            raise AssertionError(f"the matrix took over {MATRIX_WITHIN} s; stuck at "
                                 f"{m.step}") from None
        for q in QUEUES:
            m.final[q] = await snapshot(obs, q)
    return m


async def _cells(d: Deployment, m: Matrix) -> None:
    for name in RULES:
        async with curve_client(d.endpoint, d.ring[name], d.server, name=name) as c:
            for q in QUEUES:
                await m.publish(c, name, q)
                await m.consume_and_ack(c, name, q)
                await m.manage(c, name, q)
                await m.admin(c, name, q)
            await m.broker_wide(c, name)
            if d.via_router:  # the brokers' own check of the same key
                async with curve_client(d.brokers["b1"], d.ring[name], d.server) as b1:
                    await m.refused_cell(name, QUEUES[0], "admin:stats@b1", b1.stats)


async def test_every_cell_of_the_rights_matrix_is_what_the_file_says(
        deployment: Deployment) -> None:
    m = await run_matrix(deployment)
    wrong = sorted(f"{name} {cell} {q}: {'allowed' if got else 'refused'}"
                   for (name, q, cell), got in m.seen.items()
                   if got != expected(name, q, cell))
    assert not wrong, "cells not as the permissions file says:\n" + "\n".join(wrong)
    assert not m.changed, "refused cells changed a queue:\n" + "\n".join(m.changed)
    cells = {(name, q, cell.split(":")[0]) for name, q, cell in m.seen}
    assert len(cells) == len(RULES) * len(QUEUES) * 5, "a cell was not tried"
    # What the cells did, queue by queue: each allowed publish stored once, each
    # allowed consumer's message acked, nothing paused.
    for q in QUEUES:
        publishers = sum(q in ALLOWED[(n, "publish")] for n in RULES)
        consumers = sum(q in ALLOWED[(n, "consume")] for n in RULES)
        s = m.final[q]
        assert (s["published"], s["acked"], s["ready"], s["paused"]) == (
            SEED + publishers, consumers, SEED + publishers - consumers, False), (q, s)


# ---------------------------------------------------------------------- spoofing

def forbidden(frame: f.Frame, key: str) -> None:
    """``frame`` is an ERROR FORBIDDEN naming ``key``."""
    assert isinstance(frame, f.Error), frame
    assert frame.code == FORBIDDEN, frame
    assert f"key {key!r}" in frame.text, frame


async def test_a_spoofed_identity_gets_only_the_proven_keys_rights(
        deployment: Deployment) -> None:
    d = deployment
    bob = d.ring["bob"]
    claims = {"user": "alice", "zq-user": "alice", "key": "alice", "identity": "alice"}
    async with curve_client(d.endpoint, d.server, d.server, name="observer") as obs:
        await obs.publish(QUEUES[0], b"seed")  # orders.eu: alice's, not bob's
        before = await snapshot(obs, QUEUES[0])
        wire = CurveWire(d.endpoint, bob, d.server)
        try:
            await wire.hello(name="spoofer", user="alice")
            # Alice may publish to orders.eu and manage it; bob may not.
            await wire.send(f.Publish("orders.eu", 1, [b"spoofed"], [claims]))
            err = await wire.recv()
            forbidden(err, "bob")
            await wire.send(f.Manage(2, "pause", {"queue": "orders.eu"}))
            err = await wire.recv()
            forbidden(err, "bob")
            # Bob may publish to logs.app: his right, whatever the headers claim.
            await wire.send(f.Publish("logs.app", 3, [b"bob's"], [claims]))
            confirm = await wire.recv()
            assert isinstance(confirm, f.Confirm), confirm
            # The session is bob's at the server it reached and at the broker.
            here = _security(await server_stats(d.endpoint, d.server))["sessions_per_key"]
            assert here.get("bob") == 1, here
            assert "alice" not in here, here
            owner = await d.owner(obs, "logs.app")
            there = _security(await server_stats(owner, d.server))["sessions_per_key"]
            assert there.get("bob") == 1, there
            assert "alice" not in there, there
        finally:
            wire.close()
        # Consuming: refused at the broker that holds the queue (a router answers MOVED).
        wire = CurveWire(await d.owner(obs, "orders.eu"), bob, d.server)
        try:
            await wire.hello(name="spoofer", user="alice")
            await wire.send(f.Credit("orders.eu", 10))
            err = await wire.recv()
            forbidden(err, "bob")
            assert not [fr for fr in await wire.sync(9) if isinstance(fr, f.Deliver)]
        finally:
            wire.close()
        after = await snapshot(obs, QUEUES[0])
        assert after == before, (before, after)
        spoofed = await obs.peek("logs.app", 10)
        assert [m["body"] for m in spoofed] == [b"bob's"]


# ---------------------------------------------------------------------- vouching

async def test_a_router_key_without_relay_gets_its_clients_that_keys_rights(
        tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    server = ring.make("server", authorize=False)  # the brokers' pair
    alice = ring.make("alice")
    edge = ring.make("edge")  # a router's key that may not relay
    gate = ring.make("gate")  # a router's key that may
    perms = write_permissions(tmp_path / "permissions.toml", {
        "alice": {"publish": ["orders.#", "edge.#"]},
        "edge": {"publish": ["edge.#"]},
        "gate": {"relay": True},
    })
    cluster = tmp_path / "cluster.toml"
    brokers = write_cluster(cluster, ["b1"])
    procs = [await start_curve_cluster_broker(tmp_path, cluster, "b1", server,
                                              ring.authorized, perms)]
    try:
        for key, rid in ((gate, "r-gate"), (edge, "r-edge")):
            procs.append(await start_curve_router(tmp_path, cluster, key, ring.authorized,
                                                  perms, router_id=rid, brokers_key=server))
        r_gate, r_edge = procs[1], procs[2]

        async with curve_client(brokers["b1"], alice, server) as direct:
            await direct.publish("orders.eu", b"direct")  # her own right

        # Through a router that may relay: alice's own rights (gate has none of its own).
        async with curve_client(r_gate.endpoint, alice, gate) as c:
            await c.publish("orders.eu", b"via gate")
            with pytest.raises(Forbidden) as refused:
                await c.publish("logs.x", b"via gate")
            refusal(refused.value, "alice", "logs.x")

        # Through a router that may not: edge's rights, not alice's.
        async def links_up() -> bool:
            links = (await server_stats(r_edge.endpoint, edge))["links"]
            return all(link["state"] == "up" for link in links.values())

        await eventually(links_up, "router r-edge (key 'edge', no relay right) to link to "
                                   "the broker, its clients getting edge's rights", 5)
        async with curve_client(r_edge.endpoint, alice, edge) as c:
            await c.publish("edge.x", b"via edge")  # edge's right (and alice's)
            with pytest.raises(Forbidden) as refused:
                await c.publish("orders.eu", b"via edge")  # alice's right, not edge's
            refusal(refused.value, "edge", "orders.eu")
            sessions = _security(await server_stats(brokers["b1"], server))["sessions_per_key"]
            assert sessions.get("edge", 0) >= 1, sessions
            assert "alice" not in sessions, sessions

        async with curve_client(brokers["b1"], server, server) as obs:
            assert (await obs.queue_info("orders.eu"))["stats"]["published"] == 2
            assert (await obs.queue_info("edge.x"))["stats"]["published"] == 1
    finally:
        await stop_all(procs)
