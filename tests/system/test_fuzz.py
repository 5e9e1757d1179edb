"""Hostile-input fuzzing of a live cluster: a broker and a router, real processes on
loopback (tests/cluster_helpers.py), while well-behaved clients go on beside.

* ``test_hostile_frames``: N frames from tests/fuzz/strategies.py (valid, almost valid
  and garbage, for every command a client may send) go to the broker and N to the
  router, from raw DEALER sockets: members, which say HELLO first (and again whenever
  their session ends) and then misbehave, and strangers, which never do. Neither
  process exits; every frame the generator tags ``refused`` gets an ERROR, or its
  connection is cut (ZeroMQ cuts a peer that sends a part over max_frame; the broker
  may cut one that keeps sending malformed frames). A client publishing with confirms
  through the router and one publishing to the broker keep their publish->confirm
  p99 under 50 ms; 200 messages stored before the run are all there afterwards,
  unchanged; the broker's RSS grows by less than 32 MB.
* ``test_random_tcp_octets``: plain TCP connections (tests/fuzz/tcp.py), each sending
  a few hundred to a few thousand random octets, against the broker and, separately,
  the router: the good client's p99 stays under 50 ms, and the target answers fewer
  ERROR frames than there were connections (its ZAP domain makes libzmq refuse ZMTP
  1.0 garbage at the handshake, so random octets should make no frames at all).

How a frame is matched with what it caused: each socket sends one frame and then a
*barrier*, a request the target answers at once with an ERROR that names it (MANAGE of
an unknown operation, answered INVALID_ARGUMENT with ``ref`` its ``req``; for a MANAGE
frame, a PUBLISH to a dead-letter queue, INVALID_QUEUE_NAME with ``ref`` its ``seq``),
or, when the frame ended the session, SESSION_UNKNOWN with the barrier's opcode, which
the frame's own errors never carry. Both go through the broker when sent to the
router, so an ERROR the broker sends for a forwarded frame comes back first. Every
ERROR before the barrier's answer is the frame's. A socket monitor reports a cut
connection; the socket is then replaced (reconnects are off).

What is cut without an ERROR (each run prints, per target, what every refused frame
got, and the outcome of each heavy frame): a part over ZeroMQ's MAXMSGSIZE
(``max_frame`` plus a little: the broker here has a max_frame of 1 MiB, so a 4 MiB header
is one too), dropped by libzmq from the part's size field before it is read; and, once
a connection has used its budget of malformed frames, its next one (the broker and
the router close the connection). Every other refused frame gets its ERROR.

The good clients run in a thread with an event loop of their own, so that what the
hostile sockets cost this process (sending a frame of 10,001 parts takes tens of
milliseconds) is not counted as the broker's latency.

ZQ_FUZZ_SEED picks the seed (printed in every failure); the default size is quick, the
full one (10,000 frames, 2,000 connections) is marked slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

import zq
from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
from tests.fuzz import strategies as fzs
from tests.fuzz.tcp import flood, raise_fd_limit
from tests.procs import Proc
from zq.errors import SessionUnknown, ZqError
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.wire import COMMANDS

BROKER_MAX_FRAME = 1 << 20  # small, so that parts over it are cheap to send
P99_LIMIT = 0.050
RSS_LIMIT_MB = 32
KEEP = 200  # messages stored in queue "keep" before the run
STRANGERS, MEMBERS = 3, 5  # raw DEALER sockets per target
WINDOW = 5.0  # seconds a frame's barrier may take before the target counts as hung
CUT_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
              | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
ERROR_CMD = COMMANDS[f.ERROR]
_tokens = count(fzs.UNASSIGNED)  # barrier req/seq numbers: no generated frame uses them


@dataclass(frozen=True)
class Size:
    frames: int  # hostile frames per target
    connections: int  # TCP connections per target


def sizes() -> list[Any]:
    """The quick default, and the full size under the ``slow`` marker."""
    return [pytest.param(Size(1_000, 300), id="small"),
            pytest.param(Size(10_000, 2_000), id="full",
                         marks=[pytest.mark.slow, pytest.mark.timeout(1200)])]


def seed() -> int:
    return int(os.environ.get("ZQ_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))


def rss_mb(proc: Proc) -> float:
    """Resident memory of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {proc.pid}")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def assert_alive(proc: Proc, what: str) -> None:
    assert proc.proc.returncode is None, f"the {what} exited; stderr:\n{proc.stderr()}"


# ------------------------------------------------------------------ the cluster


@dataclass
class Cluster:
    broker: Proc
    router: Proc


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """One broker (sqlite, fsync normal: the disk is not what is tested) and a router;
    both must exit 0 on SIGTERM afterwards."""
    raise_fd_limit()  # before the processes start: they inherit it
    path = tmp_path / "cluster.toml"
    write_cluster(path, ["b1"], cluster_id="fuzz")
    broker = await start_cluster_broker(tmp_path, path, "b1", "--max-frame",
                                        str(BROKER_MAX_FRAME), "--fsync", "normal",
                                        heartbeat="1.0")
    try:
        router = await start_router(tmp_path, path, heartbeat="1.0")
    except BaseException:
        await broker.kill()
        raise
    try:
        yield Cluster(broker, router)
    finally:
        try:
            await router.terminate_and_expect_exit(0)
        finally:
            await broker.terminate_and_expect_exit(0)


# --------------------------------------------------------------- good traffic


@dataclass
class Good:
    """What a well-behaved client saw: each publish's latency, and any failure."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        if not self.latencies:
            return f"good client {name}: no publish confirmed; failures {self.failures[:3]}"
        return (f"good client {name}: {len(self.latencies)} publishes, p50 "
                f"{sorted(self.latencies)[len(self.latencies) // 2] * 1000:.1f} ms, p99 "
                f"{p99(self.latencies) * 1000:.1f} ms, max {max(self.latencies) * 1000:.1f} "
                f"ms, failures {len(self.failures)}"
                + (f" (first: {self.failures[0]})" if self.failures else ""))


async def publish_steadily(client: zq.Client, queue: str, stop: threading.Event, good: Good
                           ) -> None:
    """Publish one message at a time, each awaiting its confirm, until ``stop``."""
    i = 0
    while not stop.is_set():
        start = time.perf_counter()
        try:
            async with asyncio.timeout(10):
                await client.publish(queue, b"good-%d" % i)
        except (TimeoutError, ZqError) as exc:
            good.failures.append(f"publish {i} to {queue}: {exc!r}")
            if len(good.failures) > 20:
                return
            continue
        good.latencies.append(time.perf_counter() - start)
        i += 1


async def consume_forever(client: zq.Client, queue: str) -> None:
    """Ack everything published to ``queue`` (cancelled when the run is over)."""
    async with client.consume(queue, prefetch=500) as consumer:
        async for msg in consumer:
            await msg.ack()


class GoodTraffic:
    """Well-behaved clients, each publishing with confirms to a queue of its own while a
    consumer on ``drain`` acks it all. They run in a thread with an event loop of their
    own: the hostile sockets' work in this process (sending a frame of 10,001 parts
    takes tens of milliseconds) must not count as the broker's latency."""

    def __init__(self, publishers: dict[str, tuple[str, str]], drain: str | None) -> None:
        self.publishers = publishers  # name -> (endpoint, queue)
        self.drain = drain  # the endpoint consumers connect to (None: no consumers)
        self.goods = {name: Good() for name in publishers}
        self.stop = threading.Event()
        self._ready = threading.Event()

    async def run(self) -> dict[str, Good]:
        """Publish until :meth:`stop` is set (from this loop)."""
        await asyncio.to_thread(asyncio.run, self._main())
        return self.goods

    async def started(self) -> None:
        if not await asyncio.to_thread(self._ready.wait, 15):
            raise AssertionError("the good clients did not start")

    async def _main(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = {name: await stack.enter_async_context(zq.Client(ep, name=f"good-{name}"))
                       for name, (ep, _) in self.publishers.items()}
            sink = (await stack.enter_async_context(zq.Client(self.drain, name="good-sink"))
                    if self.drain else None)
            for name, (_, queue) in self.publishers.items():
                await clients[name].publish_many(queue, [b"warm-up"] * 10)
            async with asyncio.TaskGroup() as tg:
                consumers = [tg.create_task(consume_forever(sink, queue))
                             for _, queue in self.publishers.values()] if sink else []
                self._ready.set()
                try:
                    async with asyncio.TaskGroup() as pubs:
                        for name, (_, queue) in self.publishers.items():
                            pubs.create_task(publish_steadily(clients[name], queue, self.stop,
                                                              self.goods[name]))
                finally:
                    for task in consumers:
                        task.cancel()


# ------------------------------------------------------------- the fuzz peers


@dataclass
class Outcome:
    """What one frame caused: its ERRORs (names), and whether the connection was cut,
    the barrier went unanswered, or the session ended."""

    errors: list[str]
    cut: bool = False
    hung: bool = False
    session_lost: bool = False


@dataclass
class Tally:
    """One target's run."""

    target: str
    frames: int = 0
    refused: int = 0
    answered: int = 0  # refused frames that got at least one ERROR
    cut: int = 0  # frames whose connection was cut (ERROR or not)
    cut_silently: int = 0  # refused frames cut without an ERROR
    errors: int = 0  # ERROR frames for the frames (barriers not counted)
    barriers: int = 0  # ERROR frames answering barriers
    sockets: int = 0  # DEALER sockets opened
    hellos: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)  # "<how> -> error|cut|none"
    failures: list[str] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)  # seconds, frame
    big: Counter[str] = field(default_factory=Counter)  # heavy frames: kind, size, outcome
    roles: Counter[str] = field(default_factory=Counter)  # members' and strangers' outcomes

    def record(self, fz: fzs.Fuzzed, out: Outcome, who: str, seconds: float) -> None:
        self.slowest = sorted([*self.slowest, (seconds, fz.how or fz.flavour)])[-3:]
        self.frames += 1
        self.errors += len(out.errors)
        self.cut += out.cut
        if out.hung:
            self.failures.append(f"{self.target} {who}: no answer to the barrier within "
                                 f"{WINDOW}s, connection not cut, after {fz.describe()}")
        if not fz.refused:
            return
        self.refused += 1
        self.answered += bool(out.errors)
        self.cut_silently += out.cut and not out.errors
        seen = "error" if out.errors else "cut" if out.cut else "none"
        self.roles[f"{who.split('-')[0]}s' refused frames: {seen}"] += 1
        how = fz.how.split("=", 1)[0] or fz.flavour
        self.by_kind[f"{how} -> {seen}"] += 1
        if how.split(":", 1)[0] in fzs.HEAVY:
            outcome = " ".join(["ERROR " + out.errors[0]] if out.errors else []
                               + ["cut"] * out.cut + ["hung"] * out.hung) or "nothing"
            self.big[f"{how.split(':', 1)[0]} {f.NAMES[fz.op]} ({len(fz.parts)} parts, "
                     f"largest {max(map(len, fz.parts)) / 2**20:.2f} MiB"
                     f"{', over max_frame' if fz.oversize else ''}) -> {outcome}"] += 1
        if not out.errors and not out.cut and not out.hung:
            self.failures.append(f"{self.target} {who}: no ERROR and no cut for "
                                 f"{fz.describe()}")


def barrier(fz: fzs.Fuzzed) -> tuple[int, int, list[bytes]]:
    """A request answered at once with an ERROR naming it: its opcode, its token (the
    ``ref`` of that ERROR) and its parts. Never of the frame's own opcode, so that the
    SESSION_UNKNOWN of a frame cannot pass for the barrier's."""
    token = next(_tokens)
    cmd = fz.parts[0] if fz.parts else b""
    if len(cmd) == 4 and cmd[3] == f.MANAGE:  # only the broker writes to dead-letter queues
        return f.PUBLISH, token, [COMMANDS[f.PUBLISH], b"fz.barrier.dlq",
                                  codec.packb([token, []]), b""]
    return f.MANAGE, token, codec.encode(f.Manage(token, "fz-barrier", {"queue": "fz.barrier"}))


class Peer:
    """A raw DEALER that sends a target one hostile frame at a time, each followed by a
    barrier, and reads what came back until the barrier's answer. Reconnects are off:
    a cut connection is seen by the monitor, and the socket is replaced."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, name: str, member: bool,
                 tally: Tally) -> None:
        self.ctx, self.endpoint, self.name, self.member, self.tally = (
            ctx, endpoint, name, member, tally)
        self.sock: zmq.asyncio.Socket | None = None
        self.mon: zmq.asyncio.Socket | None = None
        self.poller = zmq.asyncio.Poller()

    async def open(self) -> None:
        self.close()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        self.mon = sock.get_monitor_socket(CUT_EVENTS)
        sock.connect(self.endpoint)
        self.sock = sock
        self.poller = zmq.asyncio.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self.mon, zmq.POLLIN)
        self.tally.sockets += 1
        if self.member:
            await self.hello()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.disable_monitor()
            assert self.mon is not None
            self.mon.close(linger=0)
            self.sock.close(linger=0)
            self.sock = self.mon = None

    async def hello(self) -> None:
        """Open a session (on a new socket if this one is cut on the way)."""
        for _ in range(5):
            self.tally.hellos += 1
            if await self._send(codec.encode(f.Hello(f"fuzz-{self.name}"))) and \
                    await self._welcomed():
                return
            await self.open_bare()
        raise AssertionError(f"{self.tally.target} {self.name}: no WELCOME in 5 tries")

    async def open_bare(self) -> None:
        member, self.member = self.member, False
        try:
            await self.open()
        finally:
            self.member = member

    async def _welcomed(self) -> bool:
        """Whether WELCOME came (False: the connection was cut first)."""
        try:
            async with asyncio.timeout(WINDOW):
                while True:
                    events = dict(await self.poller.poll())
                    cut = self.mon in events and await self._was_cut()
                    if any(msg[0] == COMMANDS[f.WELCOME] for msg in await self._read()):
                        return not cut
                    if cut:
                        return False
        except TimeoutError:
            raise AssertionError(f"{self.tally.target} {self.name}: HELLO unanswered for "
                                 f"{WINDOW}s") from None

    async def _send(self, parts: list[bytes]) -> bool:
        """Send a frame; False if it cannot go: no connection, reconnects being off (the
        monitor has seen, or will see at once, the connection cut)."""
        assert self.sock is not None
        assert self.mon is not None
        try:
            await self.sock.send_multipart(parts, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            try:
                async with asyncio.timeout(WINDOW):
                    while not await self._was_cut():
                        await self.mon.poll()
            except TimeoutError:
                raise AssertionError(f"{self.tally.target} {self.name}: cannot send, and the "
                                     f"connection is not cut") from None
            return False
        return True

    async def _read(self) -> list[list[bytes]]:
        assert self.sock is not None
        out = []
        while True:
            try:
                out.append(await self.sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return out

    async def _was_cut(self) -> bool:
        assert self.mon is not None
        cut = False
        while True:
            try:
                msg = await self.mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return cut
            cut = cut or bool(parse_monitor_message(msg)["event"] & CUT_EVENTS)

    async def exchange(self, fz: fzs.Fuzzed) -> Outcome:
        """Send ``fz`` and its barrier; what came back before the barrier's answer."""
        bop, token, bparts = barrier(fz)
        if not (await self._send(fz.parts) and await self._send(bparts)):
            return Outcome([], cut=True)
        errors: list[str] = []
        cut = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WINDOW
        while (left := deadline - loop.time()) > 0:
            events = dict(await self.poller.poll(left * 1000))
            cut = cut or (self.mon in events and await self._was_cut())
            for msg in await self._read():
                if msg[0] != ERROR_CMD:
                    continue  # WELCOME, CONFIRM, DELIVER, replies, heartbeats
                err = codec.decode(msg)
                assert isinstance(err, f.Error)
                if err.op == bop and (err.ref == token or err.name == SessionUnknown.name):
                    self.tally.barriers += 1
                    return Outcome(errors, cut=cut,
                                   session_lost=err.name == SessionUnknown.name)
                errors.append(err.name)
            if cut:
                return Outcome(errors, cut=True)
        return Outcome(errors, hung=True)

    async def run(self, frames: list[fzs.Fuzzed]) -> None:
        await self.open()
        try:
            for fz in frames:
                start = time.perf_counter()
                out = await self.exchange(fz)
                self.tally.record(fz, out, self.name, time.perf_counter() - start)
                if len(self.tally.failures) > 50:
                    return
                if out.cut or out.hung:
                    await self.open()
                elif out.session_lost and self.member:
                    await self.hello()
        finally:
            self.close()


def welcomed_by(fz: fzs.Fuzzed) -> bool:
    """Whether the frame is a HELLO that opens a session (strangers never send one)."""
    try:
        frame = codec.decode(fz.parts)
    except ZqError:
        return False
    return isinstance(frame, f.Hello) and frame.link is None


def deal(frames: list[fzs.Fuzzed]) -> list[list[fzs.Fuzzed]]:
    """Frames for each socket, strangers first, in turn; but a HELLO that would open a
    session goes to the next member, and so does a PUBLISH with a part or a header over
    a limit (a router forwards a member's PUBLISH to its broker undecoded); the other
    heavy frames (megabytes, 10,001 parts) go to a member and a stranger by turns."""
    hands: list[list[fzs.Fuzzed]] = [[] for _ in range(STRANGERS + MEMBERS)]
    turn = members = heavy = 0
    for fz in frames:
        kind = fz.how.split(":", 1)[0]
        if kind in fzs.HEAVY:
            member = (fz.op == f.PUBLISH and kind != "too-many-bodies") or heavy % 2 == 0
            heavy += 1
            if not member:
                hands[heavy % STRANGERS].append(fz)
                continue
        if welcomed_by(fz) or kind in fzs.HEAVY:
            hands[STRANGERS + members % MEMBERS].append(fz)
            members += 1
        else:
            hands[turn % len(hands)].append(fz)
            turn += 1
    return hands


async def fuzz_target(ctx: zmq.asyncio.Context, target: str, endpoint: str,
                      hands: list[list[fzs.Fuzzed]]) -> Tally:
    """Each hand of frames (see :func:`deal`) from a socket of its own, all at once."""
    tally = Tally(target)
    peers = [Peer(ctx, endpoint, f"{'stranger' if i < STRANGERS else 'member'}-{i}",
                  i >= STRANGERS, tally) for i in range(len(hands))]
    async with asyncio.TaskGroup() as tg:
        for peer, hand in zip(peers, hands, strict=True):
            tg.create_task(peer.run(hand))
    return tally


async def welcome_of(endpoint: str) -> f.Welcome:
    """The target's WELCOME (its max_frame, max_credit)."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        await sock.send_multipart(codec.encode(f.Hello("fuzz-probe")))
        async with asyncio.timeout(5):
            while True:
                frame = codec.decode(await sock.recv_multipart())
                if isinstance(frame, f.Welcome):
                    await sock.send_multipart(codec.encode(f.Bye("probed")))
                    return frame
    finally:
        sock.close(linger=0)
        ctx.term()


# ------------------------------------------------------------------ the tests


def summary(tally: Tally) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items())
                      if not k.endswith("error"))
    return (f"{tally.target}: {tally.frames} frames, {tally.refused} refused, "
            f"{tally.answered} answered with ERROR, {tally.cut_silently} cut without ERROR "
            f"({tally.cut} cut in all), {tally.errors} ERRORs (+{tally.barriers} for "
            f"barriers), {tally.sockets} sockets, {tally.hellos} HELLOs; "
            + ", ".join(f"{k} {v}" for k, v in sorted(tally.roles.items()))
            + f"\n  cut or unanswered, by kind: {kinds or 'none'}\n  slowest: "
            + ", ".join(f"{how} {t * 1000:.0f} ms" for t, how in reversed(tally.slowest))
            + "\n  heavy frames: " + "; ".join(f"{k} x{v}" for k, v in sorted(tally.big.items())))


@dataclass
class Run:
    """What a fuzz run measured."""

    tallies: dict[str, Tally]
    goods: dict[str, Good]
    seconds: float
    rss: dict[str, tuple[float, float]]  # process -> MB before, after
    counters: dict[str, dict[str, int]]  # process -> what its counters grew by


async def counters_of(setup: dict[str, zq.Client]) -> dict[str, dict[str, int]]:
    return {name: (await client.stats())["counters"] for name, client in setup.items()}


async def fuzz_beside_good_traffic(cluster: Cluster, setup: dict[str, zq.Client],
                                   plans: dict[str, tuple[str, list[list[fzs.Fuzzed]]]]
                                   ) -> Run:
    """Every plan at once, while a client publishes to the broker and one through the
    router (GoodTraffic)."""
    procs = {"broker": cluster.broker, "router": cluster.router}
    good = GoodTraffic({"direct": (cluster.broker.endpoint, "good.direct"),
                        "routed": (cluster.router.endpoint, "good.routed")},
                       drain=cluster.broker.endpoint)
    ctx = zmq.asyncio.Context()
    try:
        async with asyncio.TaskGroup() as tg:
            traffic = tg.create_task(good.run())
            try:
                await good.started()
                before = await counters_of(setup)
                rss_before = {name: rss_mb(proc) for name, proc in procs.items()}
                started = time.perf_counter()
                fuzzers = {t: tg.create_task(fuzz_target(ctx, t, ep, hands))
                           for t, (ep, hands) in plans.items()}
                await asyncio.gather(*fuzzers.values())
                seconds = time.perf_counter() - started
            finally:
                good.stop.set()
    finally:
        ctx.destroy(linger=0)
    rss = {name: (rss_before[name], rss_mb(proc)) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert_alive(proc, name)
    after = await counters_of(setup)
    grew = {name: {k: v - before[name].get(k, 0) for k, v in after[name].items()
                   if k in ("errors_sent", "frames_in", "peers_dropped", "peers_cut")}
            for name in after}
    return Run({t: task.result() for t, task in fuzzers.items()}, traffic.result(), seconds,
               rss, grew)


async def store_keep(client: zq.Client, rng: random.Random
                     ) -> dict[int, tuple[bytes, dict[str, Any], int]]:
    """KEEP messages in queue ``keep``: id -> (body, headers, attempt of a first delivery)."""
    kept = [(rng.randbytes(rng.randint(1, 200)), {"i": i, "k": "keep"}) for i in range(KEEP)]
    ids = await client.publish_many("keep", [b for b, _ in kept], headers=[h for _, h in kept])
    return {mid: (body, headers, 1) for mid, (body, headers) in zip(ids, kept, strict=True)}


async def read_keep(client: zq.Client) -> dict[int, tuple[bytes, dict[str, Any], int]]:
    """Every message of queue ``keep`` (acked), as :func:`store_keep` describes them."""
    ready = (await client.stats())["queues"]["keep"]["ready"]
    assert ready == KEEP, f"queue keep holds {ready} messages, not {KEEP}"
    got: dict[int, tuple[bytes, dict[str, Any], int]] = {}
    async with asyncio.timeout(10), client.consume("keep", prefetch=KEEP) as consumer:
        while len(got) < KEEP:
            msg = await consumer.get()
            got[msg.id] = (msg.body, msg.headers, msg.attempt)
            await msg.ack()
    return got


@pytest.mark.parametrize("size", sizes())
async def test_hostile_frames(cluster: Cluster, size: Size) -> None:
    run_seed = seed()
    where = f"(seed {run_seed}: ZQ_FUZZ_SEED={run_seed} reproduces the frames)"
    rng = random.Random(run_seed)
    broker, router = cluster.broker, cluster.router
    async with zq.Client(broker.endpoint, name="setup") as direct, \
            zq.Client(router.endpoint, name="setup-routed") as routed:
        kept = await store_keep(direct, rng)
        # A router forwards a PUBLISH undecoded: parts over its brokers' max_frame are
        # tried on it as well as parts over its own.
        broker_max = (await welcome_of(broker.endpoint)).max_frame
        router_max = (await welcome_of(router.endpoint)).max_frame
        heavy = max(2, size.frames // 2000)  # of each heavy mutation (megabytes, 10,001 parts)
        plans = {
            "broker": (broker.endpoint, deal(fzs.plan(
                rng.randrange(1 << 32), size.frames, max_frame=broker_max, heavy_each=heavy))),
            "router": (router.endpoint, deal(fzs.plan(
                rng.randrange(1 << 32), size.frames, max_frame=router_max,
                oversize_at=(broker_max, router_max), heavy_each=heavy))),
        }
        run = await fuzz_beside_good_traffic(cluster, {"broker": direct, "router": routed},
                                             plans)
        got = await read_keep(direct)
    lines = [f"hostile frames {where}: {size.frames} per target in {run.seconds:.1f} s"]
    lines += [summary(t) for t in run.tallies.values()]
    lines += [g.line(name) for name, g in run.goods.items()]
    lines += [f"{name}: RSS {a:.1f} -> {b:.1f} MB; counters grew by {run.counters[name]}"
              for name, (a, b) in run.rss.items()]
    print("\n" + "\n".join(lines))
    failures = [x for t in run.tallies.values() for x in t.failures]
    assert not failures, f"{len(failures)} hostile frames unanswered {where}:\n" + "\n".join(
        failures[:20])
    for name, g in run.goods.items():
        assert not g.failures, f"good client {name} {where}: {g.failures[:5]}"
        assert g.latencies, f"good client {name} published nothing {where}"
        assert p99(g.latencies) < P99_LIMIT, f"good client {name}'s p99 {where}"
    assert got == kept, f"queue keep changed {where}"
    rss_before, rss_after = run.rss["broker"]
    assert rss_after - rss_before < RSS_LIMIT_MB, f"broker RSS {run.rss['broker']} {where}"
    # The broker counted every ERROR its own sockets received (errors_sent also counts
    # those for frames the router forwarded).
    received = run.tallies["broker"].errors + run.tallies["broker"].barriers
    sent = run.counters["broker"]["errors_sent"]
    assert sent >= received, f"errors_sent grew by {sent}, {received} ERRORs received {where}"


@pytest.mark.parametrize("size", sizes())
@pytest.mark.parametrize("target", ["broker", "router"])
async def test_random_tcp_octets(cluster: Cluster, target: str, size: Size) -> None:
    run_seed = seed()
    where = f"(seed {run_seed})"
    proc = cluster.broker if target == "broker" else cluster.router
    host, port = proc.endpoint.removeprefix("tcp://").rsplit(":", 1)
    max_open = max(100, min(size.connections, raise_fd_limit() - 256))
    good = GoodTraffic({target: (proc.endpoint, "good.tcp")}, drain=None)
    async with zq.Client(proc.endpoint, name="setup") as setup:
        async with asyncio.TaskGroup() as tg:
            traffic = tg.create_task(good.run())
            try:
                await good.started()
                before = (await setup.stats())["counters"]
                report = await flood(host, int(port), size.connections,
                                     random.Random(run_seed), max_open=max_open)
            finally:
                good.stop.set()
        after = (await setup.stats())["counters"]
    g = traffic.result()[target]
    assert_alive(proc, target)
    errors = after["errors_sent"] - before["errors_sent"]
    frames = after["frames_in"] - before["frames_in"]
    print(f"\nrandom TCP octets at the {target} {where}: {report.connections} connections "
          f"({dict(report.kinds)}) in {report.seconds:.1f} s, {report.octets} octets, "
          f"{report.refused} refused, {report.reset} reset while writing, "
          f"{report.closed_by_server} closed by the {target}, {report.held_open} held open; "
          f"ERRORs sent {errors}, frames in {frames} (the good client's publishes and "
          f"STATS among them); {g.line(target)}")
    assert not g.failures, f"{where}: {g.failures[:5]}"
    assert g.latencies, f"the good client published nothing {where}"
    assert errors < report.connections, f"{errors} ERRORs for {report.connections} {where}"
    assert p99(g.latencies) < P99_LIMIT, f"good client p99 {where}"
