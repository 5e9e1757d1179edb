"""A real ``zq router`` process in front of two fake brokers written here.

The fakes speak just enough of PROTOCOL.md section 17 on loopback: a link HELLO gets
WELCOME and a CATALOG snapshot, a forwarded inner HELLO a forwarded WELCOME, a
forwarded PUBLISH a forwarded CONFIRM; they send HEARTBEAT on each link and record
every frame. So the router is tested on its own, without the real broker's cluster
mode. Waits are on conditions with a timeout, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

import zq
from tests.helpers import eventually
from tests.procs import Proc, zq_argv
from zq.protocol import codec
from zq.protocol import frames as f

HEARTBEAT = 0.2
LIVENESS = 3


class FakeBroker:
    """A ROUTER socket that answers a router's link like a clustered broker would."""

    def __init__(self, bid: str, catalog: list[str], cluster_id: str = "fake") -> None:
        self.bid = bid
        self.catalog = catalog
        self.cluster_id = cluster_id
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.links: set[bytes] = set()
        self.link_frames: list[f.Frame] = []  # the links' own frames
        self.inner: list[tuple[bytes, f.Frame]] = []  # (client key, frame) via FORWARD
        self.next_id = 1
        self.changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._serve()), asyncio.create_task(self._beat())]

    async def close(self) -> None:
        """Stop answering at once: tasks cancelled and awaited, socket closed."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if not self.sock.closed:
            self.sock.close(linger=0)
            self.ctx.term()

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(cond)

    def published(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for _, fr in self.inner:
            if isinstance(fr, f.Publish):
                out.setdefault(fr.queue, []).extend(fr.bodies)
        return out

    async def _send(self, link: bytes, parts: list[bytes]) -> None:
        await self.sock.send_multipart([link, *parts])

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT / 2)  # the fake's own heartbeat timer
            for link in list(self.links):
                await self._send(link, codec.encode(f.Heartbeat()))

    async def _serve(self) -> None:
        while True:
            link, *parts = await self.sock.recv_multipart()
            frame = codec.decode(parts)
            if isinstance(frame, f.Forward):
                await self._inner(link, frame)
            else:
                self.link_frames.append(frame)
                await self._link_frame(link, frame)
            async with self.changed:
                self.changed.notify_all()

    async def _link_frame(self, link: bytes, frame: f.Frame) -> None:
        if isinstance(frame, f.Hello) and frame.link is not None:
            self.links.add(link)
            await self._send(link, codec.encode(f.Welcome(
                f"fake-{self.bid}", int(HEARTBEAT * 1000), LIVENESS, 1000, 100_000, 1 << 26,
                cluster={"id": self.cluster_id, "version": 1, "node": self.bid,
                         "role": "broker"})))
            await self._send(link, codec.encode(f.Catalog(1, "snapshot", self.catalog)))
        elif isinstance(frame, f.Bye):
            self.links.discard(link)

    async def _inner(self, link: bytes, fw: f.Forward) -> None:
        inner = codec.decode(fw.parts)
        self.inner.append((fw.key, inner))
        if isinstance(inner, f.Hello):
            reply = f.Welcome(f"fake-{self.bid}", 1000, 3, 1000, 100_000, 1 << 26)
            await self._send(link, codec.forward(fw.key, codec.encode(reply)))
        elif isinstance(inner, f.Publish):
            first, self.next_id = self.next_id, self.next_id + len(inner.bodies)
            confirm = codec.encode_confirm([[inner.seq, first, len(inner.bodies)]])
            await self._send(link, codec.forward(fw.key, confirm))


def link_said_bye(fake: FakeBroker) -> bool:
    return any(isinstance(fr, f.Bye) for fr in fake.link_frames)


def write_cluster(path: Path, brokers: dict[str, str], version: int = 1,
                  cluster_id: str = "fake") -> None:
    lines = [f'cluster_id = "{cluster_id}"', f"version = {version}"]
    for bid, endpoint in brokers.items():
        lines += ["[[brokers]]", f'id = "{bid}"', f'endpoint = "{endpoint}"']
    lines += ["[pins]", '"a." = "b1"', '"b." = "b2"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def router_argv(cluster: Path, *extra: str) -> list[str]:
    return zq_argv("--log-level", "info", "router", "--bind", "tcp://127.0.0.1:*",
                   "--cluster", str(cluster), "--id", "r1", "--heartbeat", str(HEARTBEAT),
                   "--liveness", str(LIVENESS), *extra)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeBroker, FakeBroker]]:
    b1 = FakeBroker("b1", ["a.one"])
    b2 = FakeBroker("b2", ["a.moved"])  # pinned to b1 by name, but b2 has it
    b1.start()
    b2.start()
    try:
        yield b1, b2
    finally:
        await b1.close()
        await b2.close()


@pytest.fixture
async def router(tmp_path: Path, fakes: tuple[FakeBroker, FakeBroker]) -> AsyncIterator[Proc]:
    b1, b2 = fakes
    cluster = tmp_path / "cluster.toml"
    write_cluster(cluster, {"b1": b1.endpoint, "b2": b2.endpoint})
    proc = await Proc.start(router_argv(cluster), tmp_path / "router.log")
    try:
        await proc.ready_line()
        yield proc
    finally:
        if proc.proc.returncode is None:
            await proc.terminate_and_expect_exit(0)


async def test_publishes_reach_their_brokers_and_a_lost_broker_is_unavailable(
        router: Proc, fakes: tuple[FakeBroker, FakeBroker]) -> None:
    b1, b2 = fakes
    await b1.wait_for(lambda: bool(b1.links))
    await b2.wait_for(lambda: bool(b2.links))
    sent = {"a.one": [b"", b"\x00\xff" * 1000, os.urandom(70_000)],
            "b.two": [b"plain", os.urandom(300)],
            "a.moved": [b"catalog beats the pin"]}
    async with zq.Client(router.endpoint, name="producer", connect_timeout=5) as client:
        ids = await asyncio.wait_for(asyncio.gather(
            *(client.publish(q, body) for q, bodies in sent.items() for body in bodies)), 10)
        assert all(isinstance(i, int) for i in ids)  # every publish confirmed
        assert b1.published() == {"a.one": sent["a.one"]}  # byte-identical, in order
        assert b2.published() == {"b.two": sent["b.two"], "a.moved": sent["a.moved"]}
        for fake in fakes:  # the client's own HELLO opened its inner session, once
            hellos = [fr for _, fr in fake.inner if isinstance(fr, f.Hello)]
            assert len(hellos) == 1
            assert hellos[0].producer == client.producer_id
            assert isinstance(fake.inner[0][1], f.Hello)

        loop = asyncio.get_running_loop()
        await b1.close()  # the broker is gone: no frame, no heartbeat
        t0 = loop.time()
        limit = HEARTBEAT * LIVENESS + 1.0
        with pytest.raises(zq.Unavailable) as err:
            await asyncio.wait_for(client.publish("a.one", b"after"), limit + 1.0)
        assert loop.time() - t0 <= limit
        assert err.value.info == {"broker": "b1"}  # type: ignore[attr-defined]
        # Once the link is found silent, the client's router session ends (it had an
        # inner session at b1): b2 gets its BYE, and the client says HELLO again.
        await b2.wait_for(lambda: any(isinstance(fr, f.Bye) for _, fr in b2.inner),
                          limit - (loop.time() - t0))
        with pytest.raises(zq.Unavailable):
            await asyncio.wait_for(client.publish("a.one", b"again"), limit)

        before = len(b2.published()["b.two"])
        await asyncio.wait_for(client.publish("b.two", b"still served"), 5)
        assert b2.published()["b.two"][before:] == [b"still served"]
        # BYE before the new session's HELLO: a second HELLO would be a violation.
        kinds = [type(fr) for _, fr in b2.inner if not isinstance(fr, f.Publish)]
        assert kinds == [f.Hello, f.Bye, f.Hello]

    await router.terminate_and_expect_exit(0)
    await b2.wait_for(functools.partial(link_said_bye, b2))


async def test_sigterm_says_bye_to_clients_and_links(
        router: Proc, fakes: tuple[FakeBroker, FakeBroker]) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(router.endpoint)
        await sock.send_multipart(codec.encode(f.Hello("raw")))
        w = codec.decode(await asyncio.wait_for(sock.recv_multipart(), 5))
        assert isinstance(w, f.Welcome)
        assert w.cluster == {"id": "fake", "version": 1, "node": "r1", "role": "router"}
        await router.terminate_and_expect_exit(0)
        while True:
            fr = codec.decode(await asyncio.wait_for(sock.recv_multipart(), 5))
            if not isinstance(fr, f.Heartbeat):
                break
        assert isinstance(fr, f.Bye)
        for fake in fakes:
            await fake.wait_for(functools.partial(link_said_bye, fake))
    finally:
        sock.close(linger=0)
        ctx.term()


async def test_sighup_takes_a_newer_file_and_ignores_a_bad_one(
        tmp_path: Path, router: Proc, fakes: tuple[FakeBroker, FakeBroker]) -> None:
    b1, b2 = fakes
    b3 = FakeBroker("b3", [])
    b3.start()
    try:
        cluster = tmp_path / "cluster.toml"
        cluster.write_text("cluster_id = 'fake'\nversion = 'two'\n", encoding="utf-8")
        router.signal(signal.SIGHUP)  # invalid: logged, and the router goes on
        # Read before the file changes again (a busy router may take both SIGHUPs late).
        await eventually(lambda: "not reloaded" in router.stderr(), "the bad file's log line")
        write_cluster(cluster, {"b1": b1.endpoint, "b2": b2.endpoint, "b3": b3.endpoint}, 2)
        router.signal(signal.SIGHUP)
        await b3.wait_for(lambda: bool(b3.links))
        link_hello = next(fr for fr in b3.link_frames if isinstance(fr, f.Hello))
        assert link_hello.link == {"cluster": "fake", "version": 2, "router": "r1"}
        # b1's link said version 1; it is opened again to say version 2.
        await b1.wait_for(lambda: any(isinstance(fr, f.Hello) and fr.link is not None
                                      and fr.link["version"] == 2 for fr in b1.link_frames))
    finally:
        await b3.close()


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read cluster file"),
    ("cluster_id = 'x'\nversion = 1\n[[brokers]]\nid = 'b1'\n"
     "endpoint = 'tcp://127.0.0.1:1'\nwieght = 2\n", "unknown key 'wieght'"),
    ("cluster_id = \n", "TOML syntax error"),
])
async def test_a_bad_cluster_file_exits_2_with_a_clear_message(
        tmp_path: Path, content: str | None, message: str) -> None:
    cluster = tmp_path / "cluster.toml"
    if content is not None:
        cluster.write_text(content, encoding="utf-8")
    proc = await Proc.start(router_argv(cluster), tmp_path / "router.log")
    try:
        assert await proc.wait(15) == 2
    finally:
        await proc.kill()
    assert message in proc.stderr()
    assert str(cluster) in proc.stderr()
