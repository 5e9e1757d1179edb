"""Security limits with real broker and worker processes (issue security, acceptance 4-7).

* Peers that complete the ZeroMQ handshake and never say HELLO are closed after
  ``--hello-timeout``: the broker's descriptors come back, STATS counts them, and a
  good client works all along (4).
* ``--max-frame``: the largest PUBLISH PROTOCOL.md allows is stored and delivered, one
  byte more is a FRAME_TOO_LARGE error that leaves the session up; a message of huge
  parts is cut off by ZeroMQ before the broker holds it (5).
* With CURVE, a recording of every byte between a client and the broker holds neither
  the bodies nor the queue name; without CURVE the same recording holds both (6).
* A key removed from the authorized folder, then SIGHUP: its worker's session ends, its
  held messages run on the other worker, and it cannot come back (7).
* Peers that connect while a broker starts (clients reconnecting to a restarted broker)
  meet the same checks: no key gets in unchecked, no silent peer stays.

Every test waits on events (``tests.helpers.eventually``, monitor events), never on a
fixed sleep; the brokers must exit 0 on SIGTERM (``broker_factory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

import zq
from tests.helpers import eventually, free_endpoint
from tests.procs import Proc, start_broker
from tests.system.apps import slow
from tests.system.apps._record import read
from tests.system.rawpeer import Raw, wait_event
from tests.system.test_hostile import assert_alive, cmd, publish, roundtrip
from tests.system.test_workers import start_worker
from zq.protocol import codec
from zq.protocol import frames as f
from zq.security import keys as zkeys
from zq.tasks import TASK_HEADER, encode_body

Factory = Callable[..., Awaitable[Proc]]
MB = 1_000_000
MIB = 1 << 20


# ------------------------------------------------------------------ keys and CURVE


@dataclass(frozen=True)
class Keys:
    """Key pairs in ``folder``; the broker lets in the public keys copied to ``authorized``."""

    folder: Path
    authorized: Path

    def secret(self, name: str) -> Path:
        return self.folder / f"{name}{zkeys.SECRET_SUFFIX}"

    @property
    def server_public(self) -> Path:
        return self.folder / f"server{zkeys.PUBLIC_SUFFIX}"

    def broker_args(self) -> tuple[str, ...]:
        return ("--curve-secret", str(self.secret("server")),
                "--authorized-keys", str(self.authorized))

    def client_args(self, name: str) -> tuple[str, ...]:
        """``--curve-secret`` and ``--server-key`` of a ``zq`` command run as ``name``."""
        return ("--curve-secret", str(self.secret(name)),
                "--server-key", str(self.server_public))

    def client(self, endpoint: str, name: str) -> zq.Client:
        return zq.Client(endpoint, name=name, curve_secret=str(self.secret(name)),
                         server_key=str(self.server_public))

    def revoke(self, name: str) -> None:
        (self.authorized / f"{name}{zkeys.PUBLIC_SUFFIX}").unlink()

    def restore(self, name: str) -> None:
        src = self.folder / f"{name}{zkeys.PUBLIC_SUFFIX}"
        (self.authorized / src.name).write_bytes(src.read_bytes())


def make_keys(tmp: Path, *names: str) -> Keys:
    """A server key pair and one pair per client name, each client authorized."""
    found = Keys(tmp / "keys", tmp / "authorized")
    found.authorized.mkdir(mode=0o700)
    zkeys.generate("server", found.folder)
    for name in names:
        public, _secret = zkeys.generate(name, found.folder)
        (found.authorized / public.name).write_bytes(public.read_bytes())
    return found


async def security(client: zq.Client) -> dict[str, Any]:
    sec: dict[str, Any] = (await client.stats())["security"]
    return sec


# ------------------------------------------------------------------ a process from outside


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed here."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def raise_own_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.fixture
async def workers() -> AsyncIterator[list[Proc]]:
    """``zq worker`` processes a test starts; those still running at teardown are killed
    (before ``broker_factory`` stops the broker)."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        await p.kill()


# ------------------------------------------------------------------ 4. silent peers


class SilentPeers:
    """``n`` DEALERs that complete the ZeroMQ handshake and never send a frame, with
    what each one's monitor saw (and when: the poll that read it).

    ``reconnect_ms``: -1 (a dropped peer stays dropped), or how often to try again
    (a peer waiting for a broker to bind). ``curve``: (public, secret, server public)
    keys, z85, to be a CURVE client.
    """

    EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, n: int, *,
                 reconnect_ms: int = -1, curve: tuple[bytes, bytes, bytes] | None = None
                 ) -> None:
        self.socks: list[zmq.Socket[Any]] = []
        self.mons: list[zmq.Socket[Any]] = []
        self.shook: dict[int, float] = {}  # peer -> handshake seen at
        self.gone: dict[int, float] = {}  # peer -> disconnect seen at
        for _ in range(n):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, reconnect_ms)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, max(0, reconnect_ms))
            if curve is not None:
                sock.setsockopt(zmq.CURVE_PUBLICKEY, curve[0])
                sock.setsockopt(zmq.CURVE_SECRETKEY, curve[1])
                sock.setsockopt(zmq.CURVE_SERVERKEY, curve[2])
            self.mons.append(sock.get_monitor_socket(self.EVENTS))
            self.socks.append(sock)
            sock.connect(endpoint)

    def poll(self) -> None:
        now = time.monotonic()
        for i, mon in enumerate(self.mons):
            while True:
                try:
                    event = parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))["event"]
                except zmq.Again:
                    break
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.shook.setdefault(i, now)
                elif event == zmq.EVENT_DISCONNECTED:
                    self.gone.setdefault(i, now)

    def close(self) -> None:
        for sock, mon in zip(self.socks, self.mons, strict=True):
            sock.disable_monitor()
            mon.close(linger=0)
            sock.close(linger=0)


@pytest.mark.parametrize("peers", [200, pytest.param(1000, marks=pytest.mark.slow)])
async def test_peers_that_never_say_hello_are_closed_after_the_hello_timeout(
        broker_factory: Factory, peers: int) -> None:
    raise_own_fd_limit()
    hello_timeout = 1.0
    broker = await broker_factory("--heartbeat", "0.5", "--hello-timeout", f"{hello_timeout:g}")
    ep, pid = broker.endpoint, broker.pid
    closed_reason = f"no HELLO within {hello_timeout:g} s"
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 3 * peers + 64)
    async with zq.Client(ep, name="good") as good, \
            good.consume("good", prefetch=100) as consumer:
        await roundtrip(good, consumer, "before")
        base = peak = open_fds(pid)
        stop = asyncio.Event()
        rounds = 0

        async def traffic() -> None:  # a good client, all along
            nonlocal rounds
            while not stop.is_set():
                await roundtrip(good, consumer, f"during-{rounds}", n=5)
                rounds += 1

        t0 = time.monotonic()  # every connection is accepted after this
        silent = SilentPeers(ctx, ep, peers)

        def all_of(seen: dict[int, float]) -> bool:
            nonlocal peak
            silent.poll()
            peak = max(peak, open_fds(pid))
            return len(seen) == peers

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(traffic())
                try:
                    await eventually(lambda: all_of(silent.shook), f"{peers} handshakes",
                                     timeout=20, step=0.02)
                    # a client that comes while they all wait is served
                    async with zq.Client(ep, name="late") as late:
                        assert (await security(late))["connections"] >= 2
                    await eventually(lambda: all_of(silent.gone),
                                     f"{peers} silent peers disconnected", timeout=20,
                                     step=0.02)
                    await eventually(lambda: open_fds(pid) <= base + 16,
                                     "the broker's descriptors back", timeout=10)
                finally:
                    stop.set()
            after = open_fds(pid)
            sec = await security(good)
        finally:
            silent.close()
            ctx.term()
        await roundtrip(good, consumer, "after")
    waited = sorted(silent.gone[i] - silent.shook[i] for i in range(peers))
    print(f"\n{peers} silent peers: broker fds {base} -> peak {peak} -> {after}; first "
          f"dropped {min(silent.gone.values()) - t0:.2f} s after the first connect; each "
          f"closed {waited[0]:.2f}..{waited[-1]:.2f} s after its handshake (median "
          f"{waited[len(waited) // 2]:.2f}); {rounds} good round trips meanwhile; "
          f"security {sec}")
    assert peak >= base + peers // 2, (base, peak)  # they did hold descriptors
    # closed by the hello timeout: none before it, all soon after it
    first_drop = min(silent.gone.values()) - t0
    assert first_drop >= hello_timeout - 0.02, first_drop
    assert waited[-1] <= hello_timeout + 3, waited[-5:]
    assert sec["closed"].get(closed_reason) == peers, sec
    assert sec["without_session"] == 0, sec
    assert sec["connections"] == 1, sec  # the good client's
    assert rounds >= 1
    assert_alive(broker)


# ------------------------------------------------------------------ 5. max_frame

MAX_FRAME = MIB
# PROTOCOL.md (PUBLISH): a message must fit a DELIVER from any queue with room to
# spare, 64 + 255 + 24 + len(headers) + R + len(body) <= max_frame, R = min(4096,
# max_frame / 16). The largest body without headers:
LARGEST_BODY = MAX_FRAME - 64 - 255 - 24 - min(4096, MAX_FRAME // 16)
PART_SLACK = 64 * 1024  # a part up to max_frame + 64 KiB is read (and refused)


@pytest.fixture
async def mib_broker(broker_factory: Factory) -> Proc:
    return await broker_factory("--heartbeat", "0.5", "--max-frame", str(MAX_FRAME))


def events_now(mon: zmq.Socket[Any]) -> list[int]:
    """The events queued now on a monitor socket."""
    events = []
    with contextlib.suppress(zmq.Again):
        while True:
            events.append(parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))["event"])
    return events


async def async_events_now(mon: zmq.asyncio.Socket) -> list[int]:
    """The events queued now on an asyncio monitor socket (a ``Raw`` peer's)."""
    events = []
    while await mon.poll(timeout=0):
        events.append(parse_monitor_message(await mon.recv_multipart())["event"])
    return events


async def test_largest_publish_is_delivered_and_one_byte_more_is_refused(
        mib_broker: Proc, raw: Callable[[str], Raw]) -> None:
    ep = mib_broker.endpoint
    body = random.Random(5).randbytes(LARGEST_BODY + 1)
    at_limit, over = body[:LARGEST_BODY], body
    r = raw(ep)
    mon = r.monitor()
    welcome = await r.hello()
    assert welcome.max_frame == MAX_FRAME

    await r.send(publish(1, [over], queue=b"edge"))
    err = await r.error()
    assert (err.name, err.op, err.ref) == ("FRAME_TOO_LARGE", f.PUBLISH, 1), err
    assert "max_frame" in err.text, err
    # all parts together one byte over max_frame, in a part ZeroMQ still reads
    whole = publish(2, [b""], queue=b"edge")
    whole[-1] = b"w" * (MAX_FRAME + 1 - sum(map(len, whole)))
    await r.send(whole)
    err = await r.error()
    assert (err.name, err.op, err.ref) == ("FRAME_TOO_LARGE", f.PUBLISH, 2), err

    await r.send(publish(3, [at_limit], queue=b"edge"))
    confirm = await r.recv()
    assert isinstance(confirm, f.Confirm), confirm
    assert [e[0] for e in confirm.entries] == [3], confirm
    await r.send(codec.encode(f.Stats(4)))  # the session is still up
    reply = await r.recv()
    assert isinstance(reply, f.StatsReply), reply
    assert zmq.EVENT_DISCONNECTED not in await async_events_now(mon), "cut off"

    async with zq.Client(ep, name="consumer") as c:
        async with c.consume("edge", prefetch=1) as consumer, asyncio.timeout(5):
            msg = await consumer.get()
            assert msg.body == at_limit
            await msg.ack()
        st = (await c.queue_info("edge"))["stats"]
        assert (st["ready"], st["acked"]) == (0, 1), st  # nothing of the refused ones
        # the SDK does the same arithmetic
        mid = await c.publish("edge.sdk", at_limit)
        with pytest.raises(zq.FrameTooLarge):
            await c.publish("edge.sdk", over)
        async with c.consume("edge.sdk", prefetch=1) as consumer, asyncio.timeout(5):
            msg = await consumer.get()
            assert (msg.id, msg.body) == (mid, at_limit)
            await msg.ack()
    assert_alive(mib_broker)


async def test_a_part_64_kib_over_max_frame_is_read_one_byte_more_cuts(
        mib_broker: Proc, raw: Callable[[str], Raw]) -> None:
    ep = mib_broker.endpoint
    r = raw(ep)
    mon = r.monitor()
    await r.hello()
    await r.send(publish(1, [b"p" * (MAX_FRAME + PART_SLACK)], queue=b"parts"))
    err = await r.error()
    assert (err.name, err.ref) == ("FRAME_TOO_LARGE", 1), err
    assert zmq.EVENT_DISCONNECTED not in await async_events_now(mon)
    await r.send(publish(2, [b"p" * (MAX_FRAME + PART_SLACK + 1)], queue=b"parts"))
    await wait_event(mon, zmq.EVENT_DISCONNECTED)
    async with zq.Client(ep, name="good") as good, \
            good.consume("good", prefetch=100) as consumer:
        await roundtrip(good, consumer, "after")
        with pytest.raises(zq.UnknownQueue):  # nothing of either was stored
            await good.queue_info("parts")
    assert_alive(mib_broker)


@pytest.mark.parametrize("part_mib", [8, pytest.param(60, marks=pytest.mark.slow)])
async def test_a_message_of_huge_parts_is_cut_before_it_is_buffered(
        mib_broker: Proc, part_mib: int) -> None:
    ep, pid = mib_broker.endpoint, mib_broker.pid
    parts_n = 8
    async with zq.Client(ep, name="good") as good, \
            good.consume("good", prefetch=100) as consumer:
        await roundtrip(good, consumer, "before")
        rss0 = status_kb(pid, "VmRSS")
        exact_peak = reset_peak_rss(pid)
        ctx: zmq.Context[Any] = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        seen: list[int] = []

        def saw(event: int) -> bool:
            seen.extend(events_now(mon))
            return event in seen

        try:
            sock.connect(ep)
            await eventually(lambda: saw(zmq.EVENT_HANDSHAKE_SUCCEEDED), "the handshake")
            sock.send_multipart(codec.encode(f.Hello("huge")))  # a peer in session
            welcome: list[f.Frame] = []

            def welcomed() -> bool:
                with contextlib.suppress(zmq.Again):
                    welcome.append(codec.decode(sock.recv_multipart(zmq.NOBLOCK)))
                return any(isinstance(w, f.Welcome) for w in welcome)

            await eventually(welcomed, "WELCOME")
            chunk = b"Z" * (part_mib * MIB)  # one object; the parts are views of it
            parts: list[Any] = [cmd(f.PUBLISH), b"huge", codec.packb([1, []]),
                                *(memoryview(chunk) for _ in range(parts_n))]
            t0 = time.monotonic()
            sock.send_multipart(parts, copy=False)
            await eventually(lambda: saw(zmq.EVENT_DISCONNECTED), "the connection cut",
                             timeout=30)
            cut_after = time.monotonic() - t0
            peak = status_kb(pid, "VmHWM")
            rss1 = status_kb(pid, "VmRSS")
        finally:
            sock.disable_monitor()
            mon.close(linger=0)
            sock.close(linger=0)
            ctx.term()
        await roundtrip(good, consumer, "after")
        with pytest.raises(zq.UnknownQueue):  # nothing of it reached the broker
            await good.queue_info("huge")
    growth = (peak - rss0) * 1024
    print(f"\n{parts_n} x {part_mib} MiB: cut after {cut_after:.3f} s; broker RSS "
          f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
          f"({'since the test began' if exact_peak else 'since the broker started'}), "
          f"growth {growth / MB:.1f} MB")
    assert growth < 32 * MB, f"the broker's RSS grew by {growth / MB:.1f} MB"
    assert_alive(mib_broker)


# ------------------------------------------------------------------ 6. encryption


class RecordingRelay:
    """A loopback TCP relay to ``target_port`` that keeps every byte, both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = bytearray()  # client -> server
        self.down = bytearray()  # server -> client
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def start(self) -> RecordingRelay:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
                    ) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [c_writer, s_writer]
        with contextlib.suppress(OSError):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._copy(c_reader, s_writer, self.up))
                tg.create_task(self._copy(s_reader, c_writer, self.down))

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    record: bytearray) -> None:
        try:
            while data := await reader.read(65536):
                record += data
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for w in self._writers:
            w.close()


@pytest.mark.parametrize("curve", [True, False], ids=["curve", "plain"])
async def test_a_capture_of_curve_traffic_holds_no_body_nor_queue_name(
        broker_factory: Factory, tmp_path: Path, curve: bool) -> None:
    keys = make_keys(tmp_path, "alice")
    broker = await broker_factory("--heartbeat", "0.5", *(keys.broker_args() if curve else ()))
    relay = await RecordingRelay(port_of(broker.endpoint)).start()
    queue = "payroll.canary-q7"
    bodies = [f"CANARY-body-{i}-salary-of-bob".encode() for i in range(5)]
    try:
        client = (keys.client(relay.endpoint, "alice") if curve
                  else zq.Client(relay.endpoint, name="alice"))
        async with client:
            ids = await client.publish_many(queue, bodies)
            ids.append(await client.publish(queue, bodies[0]))
            got: dict[int, bytes] = {}
            async with client.consume(queue, prefetch=10) as consumer, asyncio.timeout(5):
                while len(got) < len(ids):
                    msg = await consumer.get()
                    got[msg.id] = msg.body
                    await msg.ack()
            assert got == dict(zip(ids, [*bodies, bodies[0]], strict=True))
            assert (await client.queue_info(queue))["stats"]["acked"] == len(ids)
    finally:
        await relay.close()
    needles = [b"CANARY-body", queue.encode(), b"salary-of-bob"]
    found = {n.decode(): (n in relay.up, n in relay.down) for n in needles}
    print(f"\n{'curve' if curve else 'plain'}: recorded {len(relay.up)} bytes up, "
          f"{len(relay.down)} down; found (up, down): {found}")
    assert len(relay.up) > sum(map(len, bodies)), "the relay recorded the traffic"
    assert len(relay.down) > sum(map(len, bodies))
    if curve:
        assert not any(up or down for up, down in found.values()), found
    else:  # the capture works: in clear, both ways
        assert all(up and down for up, down in found.values()), found


# ------------------------------------------------------------------ 7. revocation


async def test_a_revoked_workers_session_ends_and_its_tasks_run_on_the_other(
        broker_factory: Factory, workers: list[Proc], tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "w1", "w2", "observer")
    broker = await broker_factory("--heartbeat", "0.5", *keys.broker_args())
    ep = broker.endpoint
    n = 6
    started = tmp_path / "started.jsonl"

    def started_by(pid: int) -> set[int]:
        return {r["i"] for r in read(started) if r["pid"] == pid}

    async with keys.client(ep, "observer") as obs:
        w1 = await start_worker(workers, tmp_path, "tests.system.apps.slow:app",
                                "--concurrency", str(n), *keys.client_args("w1"), endpoint=ep)
        by_id = {}
        for i in range(n):
            mid = await obs.publish("slow", encode_body((i,), {}),
                                    headers={TASK_HEADER: slow.hold.name})
            by_id[mid] = i
        await eventually(lambda: started_by(w1.pid) == set(range(n)),
                         "worker 1 running every task", timeout=15)
        w2 = await start_worker(workers, tmp_path, "tests.system.apps.slow:app",
                                "--concurrency", str(n), *keys.client_args("w2"), endpoint=ep)

        async def both() -> bool:  # worker 1 holds all, worker 2 has credit and waits
            subs = [p["subs"]["slow"] for p in (await obs.stats())["peers"].values()
                    if "slow" in p["subs"]]
            return sorted((s["in_flight"], s["available"] > 0) for s in subs) == [
                (0, True), (n, False)]

        await eventually(both, "both workers subscribed", timeout=15)
        sec = await security(obs)
        assert sec["sessions_per_key"] == {"w1": 1, "w2": 1, "observer": 1}, sec
        assert started_by(w2.pid) == set()
        refused_before = sum(sec["keys_refused"].values())

        keys.revoke("w1")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        broker.signal(signal.SIGHUP)

        async def w1_gone() -> bool:
            return "w1" not in (await security(obs))["sessions_per_key"]

        await eventually(w1_gone, "worker 1's session gone", timeout=5)
        gone_after = loop.time() - t0
        await eventually(lambda: started_by(w2.pid) == set(range(n)),
                         "worker 2 running worker 1's tasks", timeout=max(0.1, 5 - gone_after))
        moved_after = loop.time() - t0

        async def refused() -> bool:
            return sum((await security(obs))["keys_refused"].values()) > refused_before

        await eventually(refused, "worker 1's reconnect refused", timeout=10)
        refused_after = loop.time() - t0
        sec = await security(obs)
        assert sec["keys_refused"].get("unknown key", 0) >= 1, sec
        assert sec["closed"].get("key removed") == 1, sec
        assert sec["sessions_per_key"] == {"w2": 1, "observer": 1}, sec
        assert sec["keys"] == 2, sec

        (tmp_path / "release").touch()

        async def all_done() -> bool:
            return (await obs.queue_info("slow"))["stats"]["acked"] == n

        await eventually(all_done, "every task acked", timeout=15)
        for mid, i in by_id.items():
            st = await obs.task_status("slow", mid)
            # the broker ended worker 1's session, no failure of the task: not charged
            assert (st["state"], st["result"], st["attempt"]) == ("succeeded", i, 1), st
            assert st.get("history") == [], st
            assert str(w2.pid) in str(st.get("worker")), st
        st = (await obs.queue_info("slow"))["stats"]
        assert (st["ready"], st["in_flight"]) == (0, 0), st
        assert "w1" not in (await security(obs))["sessions_per_key"]
        # The revoked worker says why it cannot connect, and keeps trying (libzmq gives a
        # refused connection up): once its key is back, it is served again by itself.
        assert "refused the connection: the server does not accept this key" in w1.stderr()
        keys.restore("w1")
        t1 = loop.time()
        broker.signal(signal.SIGHUP)

        async def w1_back() -> bool:
            return (await security(obs))["sessions_per_key"].get("w1") == 1

        await eventually(w1_back, "worker 1 back with its key", timeout=40)
        back_after = loop.time() - t1
    print(f"\nrevocation: worker 1's session gone {gone_after:.3f} s after SIGHUP, its "
          f"{n} tasks running on worker 2 after {moved_after:.3f} s, a reconnect refused "
          f"after {refused_after:.3f} s; its key back, it was served again after "
          f"{back_after:.1f} s; security {sec}")
    await w2.terminate_and_expect_exit(0, within=10)


# ------------------------------------------------------------------ the start-up window
#
# A broker binds its socket before it recovers its store: the ZAP authenticator and the
# doorman must run from before the bind, or peers that connect in between (clients
# reconnecting to a restarted broker do) would not be checked.

EARLY = 20  # peers that try to connect every 2 ms from before the broker starts
BACKLOG = 50_000  # stored messages: the broker recovers them between bind and ready


async def stored_backlog(tmp: Path) -> None:
    """Leave ``BACKLOG`` messages in ``tmp``'s data folder, as a broker restarted on a
    busy store finds them (its recovery is the window those tests aim at)."""
    broker = await start_broker(tmp, "--heartbeat", "0.5")
    try:
        async with zq.Client(broker.endpoint, name="filler") as c:
            for _ in range(BACKLOG // 10_000):
                await c.publish_many("backlog", [b"b" * 100] * 10_000)
        await broker.terminate_and_expect_exit(0)
    finally:
        await broker.kill()


async def test_no_key_gets_in_while_a_curve_broker_starts(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "alice")
    await stored_backlog(tmp_path)
    ep = free_endpoint()
    public, secret = zmq.curve_keypair()  # not authorized
    curve = (public, secret, zkeys.public_key(keys.server_public))
    ctx: zmq.Context[Any] = zmq.Context()
    intruders = SilentPeers(ctx, ep, EARLY, reconnect_ms=2, curve=curve)
    broker: Proc | None = None
    try:
        broker = await start_broker(tmp_path, "--bind", ep, "--heartbeat", "0.5",
                                    *keys.broker_args())
        intruders.poll()
        for sock in intruders.socks:
            with contextlib.suppress(zmq.Again):
                sock.send_multipart(codec.encode(f.Hello("intruder")), zmq.NOBLOCK)
        async with keys.client(ep, "alice") as alice, \
                alice.consume("good", prefetch=100) as consumer:
            await roundtrip(alice, consumer, "after")
            sec = await security(alice)
        answers = []
        for sock in intruders.socks:
            with contextlib.suppress(zmq.Again):
                answers.append(codec.decode(sock.recv_multipart(zmq.NOBLOCK)))
        intruders.poll()
        print(f"\n{EARLY} intruders: {len(intruders.shook)} handshakes, answers {answers}, "
              f"security {sec}")
        assert not any(isinstance(a, f.Welcome) for a in answers), answers
        await broker.terminate_and_expect_exit(0)
    finally:
        intruders.close()
        ctx.term()
        if broker is not None:
            await broker.kill()


async def test_peers_that_connect_while_the_broker_starts_get_the_hello_timeout(
        tmp_path: Path) -> None:
    await stored_backlog(tmp_path)
    ep = free_endpoint()
    ctx: zmq.Context[Any] = zmq.Context()
    silent = SilentPeers(ctx, ep, EARLY, reconnect_ms=2)
    broker: Proc | None = None

    def seen(what: dict[int, float]) -> bool:
        silent.poll()
        return len(what) == EARLY

    try:
        broker = await start_broker(tmp_path, "--bind", ep, "--heartbeat", "0.5",
                                    "--hello-timeout", "1")
        await eventually(lambda: seen(silent.shook), "the handshakes", timeout=10)
        try:
            await eventually(lambda: seen(silent.gone), "the early peers dropped", timeout=5)
        finally:
            async with zq.Client(ep, name="good") as good:
                sec = await security(good)
            print(f"\n{EARLY} early peers: {len(silent.shook)} handshakes, {len(silent.gone)} "
                  f"dropped; security {sec}")
        assert sum(sec["closed"].values()) >= EARLY, sec
        await broker.terminate_and_expect_exit(0)
    finally:
        silent.close()
        ctx.term()
        if broker is not None:
            await broker.kill()
