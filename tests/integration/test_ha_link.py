"""The primary's link to its standby (zq.ha.primary.StandbyLink) in one process, with
a scripted standby on a real ZeroMQ socket and a fake ``sync`` writer: what waits for
the standby is released on its acks and only then; a standby that stops acking (while
still answering) or goes silent is taken out of ``sync`` before anything is confirmed
alone; strict answers UNAVAILABLE instead; a fenced link answers UNAVAILABLE and holds
its frames until the lease holds again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from tests.helpers import eventually
from zq.errors import ZqError
from zq.ha import wire
from zq.ha.lease import Sync
from zq.ha.primary import StandbyLink
from zq.persistence import WriteBatch

LIVENESS = 0.3


@dataclass
class World:
    link: StandbyLink
    standby: zmq.asyncio.Socket
    holds: list[bool] = field(default_factory=lambda: [True])
    syncs: list[str | None] = field(default_factory=list)
    deposed: list[str] = field(default_factory=list)
    answers: list[tuple[int, str | None]] = field(default_factory=list)  # (batch, error)
    sent: list[int] = field(default_factory=list)

    def commit(self, n: int) -> None:
        """Batch ``n`` committed here: shipped, and its answer held."""
        b = WriteBatch(inserts=[(n, "q", None, [b"m%d" % n])])
        self.link.prepare(b)
        self.link.shipped(b)
        self.link.hold(lambda err, n=n: self.answers.append((n, _name(err))),
                       lambda n=n: self.sent.append(n))

    async def expect(self, op: str) -> dict[str, object]:
        async with asyncio.timeout(5):
            while True:
                parts = await self.standby.recv_multipart()
                if parts[0] == wire.MAGIC and op == "batch":
                    s = wire.decode(parts)
                    return {"term": s.term, "seq": s.seq}
                if parts[0] == wire.CONTROL and wire.decode_control(parts)["op"] == op:
                    return wire.decode_control(parts)

    async def send(self, op: str, **fields: object) -> None:
        await self.standby.send_multipart(wire.control(op, **fields))


def _name(err: ZqError | None) -> str | None:
    return None if err is None else err.name


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind("tcp://127.0.0.1:*")
    actx = zmq.asyncio.Context()
    standby = actx.socket(zmq.DEALER)
    standby.setsockopt(zmq.LINGER, 0)
    standby.connect(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    strict = getattr(request, "param", False)
    w: World

    async def set_sync(node: str | None, revision: int) -> bool:
        if revision != len(w.syncs):  # etcd's compare on sync's revision
            return False
        w.syncs.append(node)
        return True

    async def read_sync() -> Sync | None:
        return Sync(w.syncs[-1], 5, len(w.syncs), "p") if w.syncs else None

    link = StandbyLink(sock, term=5, history_end=(0, 0), data=tmp_path,
                       lease_holds=lambda: w.holds[0], set_sync=set_sync,
                       read_sync=read_sync,
                       deposed=lambda why: w.deposed.append(why), wake=lambda: None,
                       liveness=LIVENESS, strict=strict)
    w = World(link, standby)
    link.start(asyncio.get_running_loop())
    try:
        yield w
    finally:
        await link.close()
        standby.close(linger=0)
        actx.term()
        sock.close(linger=0)
        ctx.term()


async def joined(w: World) -> None:
    await w.send("follow", node="s1", term=0, seq=0)
    for seq in range(1, w.link.out.last_seq + 1):  # what it missed comes from the window
        assert (await w.expect("batch"))["seq"] == seq
    await w.send("ack", term=5, seq=w.link.out.last_seq)
    await eventually(lambda: w.link.mode == "sync", "in sync", 5)
    assert w.syncs == ["s1"]


async def test_alone_it_confirms_after_the_local_commit(world: World) -> None:
    world.commit(1)
    assert world.answers == [(1, None)]
    assert world.sent == [1]


async def test_in_sync_what_waits_goes_on_the_standbys_ack_and_in_order(world: World) -> None:
    await joined(world)
    world.commit(1)
    world.commit(2)
    assert (await world.expect("batch"))["seq"] == 1
    assert world.answers == []  # not before the ack
    await world.send("ack", term=5, seq=2)
    await eventually(lambda: world.answers == [(1, None), (2, None)], "released", 5)
    assert world.sent == [1, 2]
    await world.send("ack", term=4, seq=9)  # another term's: ignored
    world.commit(3)
    await asyncio.sleep(0)
    assert len(world.answers) == 2


async def test_a_standby_that_answers_but_stops_acking_is_dropped_first(world: World) -> None:
    await joined(world)
    world.commit(1)

    async def answering() -> None:  # it keeps acking what it had before batch 1
        while True:
            await world.send("ack", term=5, seq=0)
            await asyncio.sleep(LIVENESS / 5)

    task = asyncio.create_task(answering())
    try:
        await eventually(lambda: world.syncs == ["s1", None], "dropped from sync", 5)
    finally:
        task.cancel()
    await eventually(lambda: world.answers == [(1, None)], "confirmed alone, after", 5)
    assert world.link.mode == "alone"


@pytest.mark.parametrize("world", [True], indirect=True)
async def test_strict_answers_unavailable_when_the_standby_goes_silent(world: World) -> None:
    world.commit(1)  # no standby in sync yet
    assert world.link.refusal() is not None
    await joined(world)
    assert world.link.refusal() is None
    world.commit(2)
    await eventually(lambda: world.answers[-1:] == [(2, "UNAVAILABLE")], "refused", 5)
    assert world.syncs == ["s1"]  # it stays in sync: nobody else may be promoted
    assert world.link.mode == "waiting"
    assert world.link.refusal() is not None


async def test_fenced_it_answers_unavailable_and_holds_the_rest(world: World) -> None:
    await joined(world)
    world.commit(1)
    world.holds[0] = False
    world.link.fenced()
    assert world.answers == [(1, "UNAVAILABLE")]
    assert world.link.refusal() is not None
    await world.send("ack", term=5, seq=1)
    await asyncio.sleep(0.05)
    assert world.sent == []  # frames after it wait for the lease
    world.holds[0] = True
    world.link.resumed()
    assert world.sent == [1]
    assert world.answers == [(1, "UNAVAILABLE")]  # answered once


async def test_a_stale_standby_deposes_the_primary(world: World) -> None:
    await joined(world)
    await world.send("stale", term=9)
    await eventually(lambda: bool(world.deposed), "deposed", 5)
