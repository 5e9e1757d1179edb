"""Issue 14, reviewed as an attacker and as a new user: an edge broker's uplink against
centres that misbehave, and through restarts, with real processes on loopback.

A *fake centre* is a ZeroMQ ROUTER in the test process that answers the edge's HELLO
as the test says (absurd timing, wrong CONFIRMs, odd ERRORs, BYEs, garbage). The edge
must never crash, never lose a stored message, never hang its own clients, and must
leave a centre that does not do its part for the next endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

import zq
from tests.helpers import eventually, free_port
from tests.procs import Proc, start_broker, zq_argv
from zq.protocol import codec
from zq.protocol import frames as f

Behaviour = Callable[["FakeCentre", bytes, Any], Awaitable[None]]


class FakeCentre:
    """A ROUTER on a loopback port that plays a centre: ``behaviour(centre, identity,
    frame)`` for every frame it can decode (``frame`` is the raw parts otherwise)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.behaviour = behaviour
        self.hellos = 0
        self.publishes: list[f.Publish] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> FakeCentre:
        self.task = asyncio.create_task(self._serve())
        return self

    async def _serve(self) -> None:
        while True:
            ident, *parts = await self.sock.recv_multipart()
            try:
                frame: Any = codec.decode(parts)
            except Exception:
                frame = parts
            if isinstance(frame, f.Hello):
                self.hellos += 1
            elif isinstance(frame, f.Publish):
                self.publishes.append(frame)
            await self.behaviour(self, ident, frame)

    async def send(self, ident: bytes, frame: Any) -> None:
        parts = frame if isinstance(frame, list) else codec.encode(frame)
        await self.sock.send_multipart([ident, *parts])

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        self.sock.close(linger=0)
        self.ctx.term()


def welcome(heartbeat_ms: int = 1000, liveness: int = 3) -> f.Welcome:
    return f.Welcome("fake", heartbeat_ms, liveness, 10_000, 10_000, 64 * 1024 * 1024)


async def uplink_of(endpoint: str) -> dict[str, Any]:
    async with zq.Client(endpoint, connect_timeout=5.0) as c:
        st: dict[str, Any] = (await c.stats())["uplink"]
    return st


async def published_at(endpoint: str, queue: str) -> int:
    async with zq.Client(endpoint, connect_timeout=5.0) as c:
        st = await c.stats()
    return int(st["queues"].get(queue, {}).get("published", 0))


async def take(endpoint: str, queue: str, n: int, timeout: float = 20.0) -> list[Any]:
    out: list[Any] = []
    async with zq.Client(endpoint) as c, c.consume(queue, prefetch=200) as consumer:
        async with asyncio.timeout(timeout):
            async for m in consumer:
                out.append(m)
                await m.ack()
                if len(out) == n:
                    break
    return out


async def start_edge(tmp: Path, uplink: str, *args: str, name: str = "edge") -> Proc:
    return await start_broker(tmp, "--data", str(tmp / name), "--uplink", uplink,
                              "--uplink-queues", "up.#", *args)


async def hostile_then_real(tmp: Path, behaviour: Behaviour, within: float,
                            n: int = 50, *args: str) -> tuple[FakeCentre, dict[str, Any]]:
    """An edge whose first endpoint is a fake centre with ``behaviour`` and whose second
    is a real broker: all ``n`` messages must reach the real one within ``within`` s,
    once each, and the edge must serve its clients meanwhile."""
    fake = FakeCentre(behaviour).start()
    centre = await start_broker(tmp, "--data", str(tmp / "centre"))
    edge = await start_edge(tmp, f"{fake.endpoint},{centre.endpoint}", *args)
    try:
        async with zq.Client(edge.endpoint) as c:
            for i in range(n // 5):
                await c.publish_many("up.q", [b"m%04d" % (i * 5 + k) for k in range(5)])
            await eventually(lambda: fake.hellos > 0, "the edge to try the fake centre", 10)
            await c.publish("local.q", b"still served")  # the edge serves meanwhile

        async def all_there() -> bool:
            return await published_at(centre.endpoint, "up.q") >= n

        try:
            await eventually(all_there, "every message at the real centre", within, 0.1)
        except AssertionError as exc:
            up = await uplink_of(edge.endpoint)
            raise AssertionError(f"{exc}; the edge's uplink: {up}") from None
        got = await take(centre.endpoint, "up.q", n)
        assert sorted(m.body for m in got) == [b"m%04d" % i for i in range(n)]
        assert await published_at(centre.endpoint, "up.q") == n
        up = await uplink_of(edge.endpoint)
        await eventually(lambda: _drained(edge.endpoint), "the edge's backlog to be 0", 10)
        assert edge.proc.returncode is None
        return fake, up
    finally:
        await edge.terminate_and_expect_exit(0, within=15)
        await centre.terminate_and_expect_exit(0)
        await fake.close()


async def _drained(endpoint: str) -> bool:
    up = await uplink_of(endpoint)
    return bool(up["backlog"] == 0 and up["in_flight_frames"] == 0)


# ----------------------------------------------------------------- hostile centres


async def test_a_centre_with_an_absurd_heartbeat_that_then_says_nothing_is_left(
        tmp_path: Path) -> None:
    """WELCOME with a heartbeat of years, then silence: no CONFIRM, no heartbeat.
    EDGE.md: a frame unanswered for --uplink-timeout (15 s; 2 s here) ends the session.
    The edge must give this centre up and forward to the next endpoint."""

    async def behaviour(c: FakeCentre, ident: bytes, frame: Any) -> None:
        if isinstance(frame, f.Hello):
            await c.send(ident, welcome(heartbeat_ms=2**40, liveness=100))

    fake, _ = await hostile_then_real(tmp_path, behaviour, 20, 50, "--uplink-timeout", "2")
    assert fake.publishes, "the edge never sent to the fake centre: the test missed its case"


async def test_a_centre_that_confirms_wrong_counts_is_left(tmp_path: Path) -> None:
    """CONFIRMs that name the edge's seqs with another count (and seqs never sent):
    nothing is taken as stored, and the frames go to the next endpoint."""

    async def behaviour(c: FakeCentre, ident: bytes, frame: Any) -> None:
        if isinstance(frame, f.Hello):
            await c.send(ident, welcome())
        elif isinstance(frame, f.Heartbeat):
            await c.send(ident, f.Heartbeat())
        elif isinstance(frame, f.Publish):
            n = len(frame.bodies)
            await c.send(ident, f.Confirm([(frame.seq, 1, n + 1), (frame.seq + 10**9, 1, n),
                                           (frame.seq - 1, 1, n)]))

    await hostile_then_real(tmp_path, behaviour, 20, 50, "--uplink-timeout", "2")



async def _bye_spam(c: FakeCentre, ident: bytes, frame: Any) -> None:
    if isinstance(frame, f.Hello):
        await c.send(ident, welcome())
        for _ in range(20):
            await c.send(ident, f.Bye("go away"))
    elif isinstance(frame, f.Publish):
        await c.send(ident, f.Bye("no"))


async def _garbage(c: FakeCentre, ident: bytes, frame: Any) -> None:
    junk: list[list[bytes]] = [[b"ZQ\x01\x02", b"\xc1"], [b"\x00" * 3], [b"ZQ\x01\x7f", b"x"],
                               [b"ZQ\x09\x02", msgpack.packb({})],
                               [b"ZQ\x01\x02", msgpack.packb({"broker": 1, "heartbeat_ms": "x"})],
                               [b"ZQ\x01\x11", msgpack.packb({"entries": [[1, 2]]})],
                               [b"ZQ\x01\x11", msgpack.packb({"entries": "x"})], []]
    for parts in junk:
        if parts:
            await c.send(ident, parts)


async def _odd_errors(c: FakeCentre, ident: bytes, frame: Any) -> None:
    if isinstance(frame, f.Hello):
        await c.send(ident, welcome())
    elif isinstance(frame, f.Heartbeat):
        await c.send(ident, f.Heartbeat())
    elif isinstance(frame, f.Publish):
        s = frame.seq
        for ref in ("x", None, [s], True, 2**70, -1, {"seq": s}, s + 1):
            await c.send(ident, f.Error(6, "FRAME_TOO_LARGE", "odd", f.PUBLISH, ref))
        await c.send(ident, f.Error(16, "INVALID_ARGUMENT", "op 0", 0, s))
        await c.send(ident, f.Error(16, "INVALID_ARGUMENT", "a CREDIT's", f.CREDIT, s))
        await c.send(ident, f.Error(99, "NO_SUCH_CODE", "?", f.PUBLISH, s))
        await c.send(ident, f.Error(21, "UNAVAILABLE", "wrong op", f.HELLO, s,
                                    {"endpoint": 5}))


async def _names_itself(c: FakeCentre, ident: bytes, frame: Any) -> None:
    """A 'standby' that names itself as the primary, over and over."""
    if isinstance(frame, f.Hello):
        await c.send(ident, f.Error(21, "UNAVAILABLE", "standby", f.HELLO, None,
                                    {"endpoint": c.endpoint, "node": "n1"}))


@pytest.mark.parametrize("behaviour", [_bye_spam, _garbage, _odd_errors, _names_itself],
                         ids=["bye-spam", "garbage", "odd-errors", "names-itself"])
async def test_a_misbehaving_centre_is_left_for_the_next_endpoint(
        tmp_path: Path, behaviour: Behaviour) -> None:
    fake, up = await hostile_then_real(tmp_path, behaviour, within=40)
    assert fake.hellos >= 1
    assert up["refused"] == 0, up  # nothing dead-lettered on the word of odd ERRORs


# ----------------------------------------------------------------- restarts of both sides


class Node:
    """A broker on a fixed loopback port and data folder: killed and started again."""

    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.tmp = tmp
        self.name = name
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.args = args
        self.proc: Proc | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        return zq_argv("--log-level", "info", "broker", "--bind", self.endpoint, "--data",
                       str(self.tmp / self.name), *self.args)

    async def start(self) -> Node:
        self.proc = await Proc.start(self.argv(), self.tmp / f"{self.name}-{self.starts}.log")
        self.starts += 1
        await self.proc.ready_line(30)
        return self

    async def kill(self) -> None:
        if self.proc is not None:
            await self.proc.kill()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.proc.returncode is None:
            await self.proc.terminate_and_expect_exit(0, within=20)

    async def stats(self) -> dict[str, Any]:
        async with zq.Client(self.endpoint, connect_timeout=5.0) as c:
            st: dict[str, Any] = await c.stats()
        return st

    async def held(self, queues: tuple[str, ...]) -> int:
        """Messages of ``queues`` this broker holds (ready, on disk, delayed)."""
        st = await self.stats()
        return sum(v["ready"] + v["delayed"] + v["in_flight"]
                   for k, v in st["queues"].items() if k in queues)


def stored_bodies(data: Path, queues: tuple[str, ...]) -> list[bytes]:
    """Every body a stopped broker's database holds in ``queues``."""
    db = sqlite3.connect(data / "zq.db")
    try:
        rows = db.execute("SELECT q.name, m.body FROM messages m JOIN queues q "
                          "ON q.qid = m.qid").fetchall()
    finally:
        db.close()
    return [bytes(body) for name, body in rows if name in queues]


async def kill_with_frames_in_flight(edge: Node, centre: Node) -> None:
    """SIGKILL the edge while it has frames in flight that the centre stores after it
    died (the centre is stopped meanwhile), then start it again."""
    assert edge.proc is not None
    assert centre.proc is not None
    centre.proc.signal(signal.SIGSTOP)
    try:
        async def in_flight() -> bool:
            return bool((await uplink_of(edge.endpoint))["in_flight_frames"] > 0)

        await eventually(in_flight, "frames in flight", 10, 0.01)
        await edge.kill()
    finally:
        centre.proc.signal(signal.SIGCONT)
    await edge.start()


QS = ("up.a", "up.b", "up.c", "up.d")
TOTAL = 150_000
# (share of the messages at the centre, what happens then)
STEPS = ((0.1, "edge"), (0.2, "edge-startup"), (0.3, "centre"), (0.4, "edge-in-flight"),
         (0.5, "edge"), (0.6, "centre"), (0.7, "edge-in-flight"), (0.8, "edge-startup"))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("steps", [STEPS[::2], pytest.param(STEPS, marks=pytest.mark.slow)],
                         ids=["reduced", "full"])
async def test_a_spilled_backlog_goes_once_through_kills_of_both_sides(
        tmp_path: Path, steps: tuple[tuple[float, str], ...]) -> None:
    """150,000 messages wait at an edge with a window of 100 per queue (nearly all on
    disk), in frames of 1 to 1,000 bodies, some with a priority or a tenant (other
    lanes). The centre comes; mid-stream, the edge is SIGKILLed six times (twice with
    frames in flight, twice also four times during its own startup and recovery) and
    the centre twice (under ``-m slow``; by default every other step: the edge twice,
    once with frames in flight, the centre once). Every message is at the centre exactly
    once, none at the edge."""
    centre = Node(tmp_path, "centre")
    edge = Node(tmp_path, "edge", "--window", "100", "--uplink", centre.endpoint,
                "--uplink-queues", "up.#")
    await edge.start()
    sent: list[bytes] = []
    sizes = (1, 7, 50, 300, 3, 1000, 2)
    try:
        async with zq.Client(edge.endpoint) as c:
            i = 0
            while len(sent) < TOTAL:
                k = sizes[i % len(sizes)]
                q = QS[i % len(QS)]
                bodies = [b"%s-%06d" % (q.encode(), len(sent) + j) for j in range(k)]
                opts: dict[str, Any] = {}
                if i % 5 == 1:
                    opts["priority"] = 7
                elif i % 5 == 3:
                    opts["tenant"] = f"t{i % 3}"
                await c.publish_many(q, bodies, **opts)
                sent += bodies
                i += 1
        assert (await uplink_of(edge.endpoint))["backlog"] == len(sent)
        await centre.start()
        for frac, step in steps:
            await eventually(lambda f=frac: _past(centre, f * len(sent)),
                             f"{frac:.0%} at the centre", 60, 0.02)
            if step == "edge":
                await edge.kill()
                await edge.start()
            elif step == "centre":
                await centre.kill()
                await centre.start()
            elif step == "edge-startup":  # killed again while it starts and recovers
                await edge.kill()
                for delay in (0.05, 0.2, 0.4, 0.6):
                    p = await Proc.start(edge.argv(), tmp_path / "startup.log")
                    await asyncio.sleep(delay)  # a moment into its startup, on purpose
                    await p.kill()
                await edge.start()
            else:
                await kill_with_frames_in_flight(edge, centre)

        async def done() -> bool:
            up = await uplink_of(edge.endpoint)
            return bool(up["backlog"] == 0)

        try:
            await eventually(done, "the edge's backlog to be 0", 60, 0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {await uplink_of(edge.endpoint)}") from None
        assert await edge.held(QS) == 0
        assert await centre.held(QS) >= len(sent)
    finally:
        await edge.stop()
        await centre.stop()
    got = stored_bodies(tmp_path / "centre", QS)
    doubled = len(got) - len(set(got))
    lost = set(sent) - set(got)
    assert not lost, f"{len(lost)} lost, e.g. {sorted(lost)[:5]}"
    assert not doubled, f"{doubled} stored twice at the centre"
    assert not stored_bodies(tmp_path / "edge", QS)


async def _past(node: Node, n: float) -> bool:
    with contextlib.suppress(zq.ZqError, TimeoutError, OSError):
        return await node.held(QS) >= n
    return False


@pytest.mark.timeout(120)
async def test_delays_ttls_schedules_redrives_pauses_and_purges_across_an_edge_kill(
        tmp_path: Path) -> None:
    centre = Node(tmp_path, "centre")
    edge = Node(tmp_path, "edge", "--uplink", centre.endpoint, "--uplink-queues", "up.#")
    await edge.start()
    try:
        async with zq.Client(edge.endpoint) as c:
            eta = time.time() + 8.0
            ttl_out = time.monotonic() + 1.2
            await c.publish_many("up.later", [b"l1", b"l2", b"l3"], eta=eta)
            await c.publish("up.later", b"soon", delay=0.5)
            await c.publish_many("up.ttl", [b"t%d" % i for i in range(5)], ttl=1.0)
            await c.publish("up.p", b"p0")
            await c.pause_queue("up.p")
            await c.publish_many("up.p", [b"p%d" % i for i in range(1, 10)])
            await c.publish_many("up.x", [b"x%d" % i for i in range(10)])
            assert await c.purge_queue("up.x") == 10
            await c.publish_many("work", [b"w%d" % i for i in range(4)])
            async with c.consume("work", prefetch=4) as consumer:
                n = 0
                async for m in consumer:
                    await m.nack(requeue=False)
                    n += 1
                    if n == 4:
                        break
            await eventually(lambda: _dead_in(edge, "work.dlq", 4), "dead letters", 10, 0.05)
            moved = await c.redrive("work.dlq", to="up.red")
            assert moved == 4 or (isinstance(moved, tuple) and moved[0] == 4), moved
            await c.add_schedule("tick", "up.sched", b"tick", every=0.3)
        up = await uplink_of(edge.endpoint)
        assert up["queues"].get("up.x", 0) == 0, up
        await edge.kill()
        await edge.start()
        await eventually(lambda: time.monotonic() > ttl_out, "the TTLs to run out while the "
                         "centre is away", 5, 0.05)
        await centre.start()

        async def only_paused_left() -> bool:
            up = await uplink_of(edge.endpoint)
            return bool(up["backlog"] == 10 and set(up["queues"]) == {"up.p"})

        try:
            await eventually(only_paused_left, "all but the paused queue forwarded", 20, 0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {await uplink_of(edge.endpoint)}") from None
        async with zq.Client(edge.endpoint) as c:
            await c.resume_queue("up.p")
            assert await c.remove_schedule("tick")
            fired = next((s for s in await c.schedules() if s["name"] == "tick"), None)
            assert fired is None
        await eventually(lambda: _drained(edge.endpoint), "the edge drained", 20, 0.1)
        cst = await centre.stats()
        est = await edge.stats()
        qs = cst["queues"]
        assert qs["up.later"]["delayed"] == 3, qs["up.later"]
        assert qs["up.later"]["ready"] == 1
        assert qs["up.p"]["ready"] == 10
        assert "up.x" not in qs or qs["up.x"]["ready"] == 0
        assert qs["up.red"]["ready"] == 4
        ttl_dead = qs.get("up.ttl.dlq", {}).get("ready", 0)
        assert ttl_dead + qs.get("up.ttl", {}).get("ready", 0) == 5
        assert qs["up.sched"]["ready"] >= 1, (est["queues"].get("up.sched"), qs["up.sched"])

        async def expired_at_the_centre() -> bool:  # EDGE.md: into its dead-letter queue
            qs = (await centre.stats())["queues"]
            return bool(qs.get("up.ttl.dlq", {}).get("ready", 0) == 5)

        await eventually(expired_at_the_centre, "the TTLs to expire at the centre", 10, 0.1)
        later = await take(centre.endpoint, "up.later", 4, timeout=30)
        assert time.time() >= eta - 0.01
        assert sorted(m.body for m in later) == [b"l1", b"l2", b"l3", b"soon"]
    finally:
        await edge.stop()
        await centre.stop()


async def _dead_in(node: Node, dlq: str, n: int) -> bool:
    st = await node.stats()
    return bool(st["queues"].get(dlq, {}).get("ready", 0) >= n)


# ----------------------------------------------------------------- new users' mistakes


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["same", "other-spelling"])
async def test_an_uplink_to_the_edge_itself_does_not_circulate_messages_forever(
        tmp_path: Path, host: str) -> None:
    """A user points --uplink at the broker's own --bind (a copy-paste slip, or another
    spelling of it). The edge must not take itself for the centre: its own messages,
    forwarded to itself, are stored again in the same forwarded queue, forwarded
    again, ... for ever (a commit each time, and `zq stats` saying the uplink is up and
    forwarding). Refused at start (exit code 2) or seen at the session: either will do."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    argv = zq_argv("--log-level", "info", "broker", "--bind", endpoint, "--data",
                   str(tmp_path / "edge"), "--uplink", f"tcp://{host}:{port}",
                   "--uplink-queues", "up.#")
    proc = await Proc.start(argv, tmp_path / "self.log")
    try:
        await proc.ready_line(15)
    except (EOFError, AssertionError):  # refused at start: fine, if it says why
        assert await proc.wait(10) == 2, proc.stderr()
        assert "--uplink" in proc.stderr()
        return
    try:
        async with zq.Client(endpoint) as c:
            await c.publish("up.q", b"only once")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                st = await c.stats()
                up, q = st["uplink"], st["queues"]["up.q"]
                went = (f"the message went round {up['confirmed']} times through the edge "
                        f"itself (up.q published {q['published']}): {up}")
                assert q["published"] <= 1, went
                assert up["confirmed"] == 0, went
                if up["state"] != "up" and up["last_error"]:
                    break  # it saw the mistake and says so
                assert loop.time() < deadline, f"the uplink to itself says nothing: {up}"
                await asyncio.sleep(0.1)
    finally:
        await proc.terminate_and_expect_exit(0, within=15)


# ----------------------------------------------------------------- a centre's own timing


async def test_a_frame_unanswered_for_its_time_ends_the_session_whatever_the_heartbeat(
        tmp_path: Path) -> None:
    """EDGE.md: the session breaks on a frame unanswered for --uplink-timeout (3 s here).
    A centre with a slow heartbeat (--heartbeat 20: silence is noticed after 60 s)
    behind a link that stops passing bytes (TCP still up) must still be given up after
    about 3 s, not after max(3, 3 x 60) = 180 s (zq/uplink/link.py, _watch)."""
    from tests.tcp_relay import TcpRelay

    centre = Node(tmp_path, "centre", "--heartbeat", "20")
    await centre.start()
    relay = await TcpRelay(int(centre.endpoint.rsplit(":", 1)[1])).start()
    edge = Node(tmp_path, "edge", "--uplink", relay.endpoint, "--uplink-queues", "up.#",
                "--uplink-timeout", "3")
    await edge.start()
    try:
        async with zq.Client(edge.endpoint) as c:
            await c.publish("up.q", b"first")
            await eventually(lambda: _drained(edge.endpoint), "the first forwarded", 10, 0.05)
            relay.cut("hold")
            await c.publish("up.q", b"second")

            async def in_flight() -> bool:
                return bool((await uplink_of(edge.endpoint))["in_flight"] == 1)

            await eventually(in_flight, "the second in flight", 10, 0.05)

            async def given_up() -> bool:
                return bool((await uplink_of(edge.endpoint))["state"] != "up")

            try:
                took = await eventually(given_up, "the edge to give the session up", 25, 0.2)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {await uplink_of(edge.endpoint)}") from None
            assert took < 8
        relay.heal()
        await eventually(lambda: _drained(edge.endpoint), "the second forwarded", 30, 0.1)
    finally:
        await edge.stop()
        await relay.close()
        await centre.stop()


# ----------------------------------------------------------------- two routers


async def test_a_router_cut_off_from_its_broker_does_not_hold_the_edge_for_ever(
        tmp_path: Path) -> None:
    """The centre: broker b1 and two routers; r1 reaches b1 through a path that is then
    cut (r1 answers UNAVAILABLE: the queue's broker is down behind it), r2 reaches it
    directly. The edge has both routers as endpoints. A frame refused UNAVAILABLE by
    r1 for ever must find its way through r2."""
    from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
    from tests.tcp_relay import TcpRelay

    cluster = tmp_path / "cluster.toml"
    brokers = write_cluster(cluster, ["b1"])
    b1 = await start_cluster_broker(tmp_path, cluster, "b1")
    b1_port = int(brokers["b1"].rsplit(":", 1)[1])
    relay = await TcpRelay(b1_port).start()
    cluster_r1 = tmp_path / "cluster-r1.toml"
    write_cluster(cluster_r1, ["b1"], ports={"b1": int(relay.endpoint.rsplit(":", 1)[1])})
    r1 = await start_router(tmp_path, cluster_r1, router_id="r1")
    r2 = await start_router(tmp_path, cluster, router_id="r2")
    edge = Node(tmp_path, "edge", "--uplink", f"{r1.endpoint},{r2.endpoint}",
                "--uplink-queues", "up.#")
    await edge.start()
    try:
        async with zq.Client(edge.endpoint) as c:
            await c.publish("up.q", b"one")
            await eventually(lambda: _drained(edge.endpoint), "the first forwarded", 15, 0.05)
            assert (await uplink_of(edge.endpoint))["endpoint"] == r1.endpoint
            relay.cut("drop")
            await relay.close()  # r1 loses b1 for good
            await c.publish_many("up.q", [b"two", b"three"])

        async def through_r2() -> bool:
            return bool((await uplink_of(edge.endpoint))["backlog"] == 0)

        try:
            await eventually(through_r2, "the frame to go through r2", 45, 0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {await uplink_of(edge.endpoint)}") from None
        got = await take(r2.endpoint, "up.q", 3)
        assert sorted(m.body for m in got) == [b"one", b"three", b"two"]
    finally:
        await edge.stop()
        for p in (r1, r2, b1):
            await p.terminate_and_expect_exit(0, within=15)
        await relay.close()


async def test_a_router_cut_off_from_its_broker_before_the_edge_starts(
        tmp_path: Path) -> None:
    """As above, but r1 lost b1 before the edge came: the edge's first session is
    with r1."""
    """The centre: broker b1 and two routers; r1 reaches b1 through a path that is then
    cut (r1 answers UNAVAILABLE: the queue's broker is down behind it), r2 reaches it
    directly. The edge has both routers as endpoints. A frame refused UNAVAILABLE by
    r1 for ever must find its way through r2."""
    from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
    from tests.tcp_relay import TcpRelay

    cluster = tmp_path / "cluster.toml"
    brokers = write_cluster(cluster, ["b1"])
    b1 = await start_cluster_broker(tmp_path, cluster, "b1")
    b1_port = int(brokers["b1"].rsplit(":", 1)[1])
    relay = await TcpRelay(b1_port).start()
    cluster_r1 = tmp_path / "cluster-r1.toml"
    write_cluster(cluster_r1, ["b1"], ports={"b1": int(relay.endpoint.rsplit(":", 1)[1])})
    r1 = await start_router(tmp_path, cluster_r1, router_id="r1")
    r2 = await start_router(tmp_path, cluster, router_id="r2")
    relay.cut("drop")
    await relay.close()  # r1 loses b1 for good
    await asyncio.sleep(2)
    edge = Node(tmp_path, "edge", "--uplink", f"{r1.endpoint},{r2.endpoint}",
                "--uplink-queues", "up.#")
    await edge.start()
    try:
        async with zq.Client(edge.endpoint) as c:
            await c.publish("up.q", b"one")
            await c.publish_many("up.q", [b"two", b"three"])

        async def through_r2() -> bool:
            return bool((await uplink_of(edge.endpoint))["backlog"] == 0)

        try:
            await eventually(through_r2, "the frame to go through r2", 45, 0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {await uplink_of(edge.endpoint)}") from None
        got = await take(r2.endpoint, "up.q", 3)
        assert sorted(m.body for m in got) == [b"one", b"three", b"two"]
    finally:
        await edge.stop()
        for p in (r1, r2, b1):
            await p.terminate_and_expect_exit(0, within=15)
        await relay.close()


# ----------------------------------------------------------------- cost


@pytest.mark.timeout(120)
async def test_a_delayed_publish_to_a_forwarded_queue_does_not_cost_every_delayed_message(
        tmp_path: Path) -> None:
    """An edge holds 100,000 delayed messages in a local queue (retries an hour away,
    say). Each delayed message published to a forwarded queue must not make the broker
    scan (and re-heap) all of them (zq/core/uplink.py, ``_undelay``: delayed_entries()
    and remove_delayed() walk the whole timer heap, in every pass that takes it): here a
    delayed publish to the forwarded queue costs no more than one to a local queue."""
    centre = Node(tmp_path, "centre")
    await centre.start()
    edge = Node(tmp_path, "edge", "--uplink", centre.endpoint, "--uplink-queues", "up.#")
    await edge.start()
    try:
        async with zq.Client(edge.endpoint) as c:
            for _ in range(100):
                await c.publish_many("retry.later", [b"r"] * 1000, delay=3600)

            async def timed(queue: str) -> float:
                t = time.monotonic()
                for i in range(300):
                    await c.publish(queue, b"d%d" % i, delay=60)
                return time.monotonic() - t

            local = await timed("local.later")
            forwarded = await timed("up.later")
        await eventually(lambda: _drained(edge.endpoint), "the edge drained", 30, 0.1)
        print(f"300 delayed publishes: local queue {local:.2f} s, forwarded {forwarded:.2f} s")
        assert forwarded < 5 * local + 0.5, (
            f"300 delayed publishes took {forwarded:.2f} s to a forwarded queue, "
            f"{local:.2f} s to a local one")
    finally:
        await edge.stop()
        await centre.stop()



@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:abc", "tcp://127.0.0.1:0",
                                      "tcp://127.0.0.1:5555;tcp://127.0.0.1:5556",
                                      "inproc://centre"])
async def test_an_uplink_endpoint_that_can_never_connect_stops_the_broker(
        tmp_path: Path, endpoint: str) -> None:
    """As `tcp://127.0.0.1` (no port) does: an endpoint zmq cannot connect to, ever (a
    port that is not a number or is 0, a `;` for a `,`, an inproc:// endpoint of
    another process) is a mistake to say at start (exit code 2), not a broker that
    runs and logs `Invalid argument` or `no WELCOME` every few seconds for ever
    (zq/uplink/settings.py, ``endpoints``)."""
    proc = await Proc.start(zq_argv("broker", "--bind", "tcp://127.0.0.1:*", "--data",
                                    str(tmp_path / "d"), "--uplink", endpoint,
                                    "--uplink-queues", "a.#"), tmp_path / "bad.log")
    try:
        code = await proc.wait(10)
    except TimeoutError:
        await proc.kill()
        raise AssertionError(f"zq broker --uplink {endpoint} started and kept running: "
                             f"{proc.stderr()[-600:]}") from None
    assert code == 2
    assert "--uplink" in proc.stderr()
