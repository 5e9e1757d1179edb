"""The standby's side of replication: apply what the primary ships, in order, and ack.

:class:`Follower` keeps the node's store open while it is a standby. It names its
position to the primary (``follow``), applies the batches that arrive in order
(those that arrived together in one transaction, with ``synchronous=FULL``, their
position in the same transaction), and acks the last one; a batch of an older term
is refused (``stale``), a gap makes it name its position again, and a backup that
arrives in chunks replaces its database. It stops following when etcd names another
leader, or nobody. See docs/HA.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zmq

from zq.errors import MalformedFrame, StorageError, ZqError
from zq.ha import wire
from zq.ha.lease import Leader
from zq.ha.refuse import refuse_hellos
from zq.ha.stream import Incoming, Verdict
from zq.persistence import WriteBatch
from zq.persistence import replica as files
from zq.persistence.sqlite import SqliteStore
from zq.security.curve import ClientKeys
from zq.transport import fd, monitor, readable, recv_parts, send_parts

log = logging.getLogger("zq.ha")

CHECK = 0.25  # seconds between looks at etcd while following
COPY = "replica-in.db"  # a backup being received, in the data folder
DRAIN = 500  # messages read before what they carry is applied


class Follower:
    """A standby's store and its place in the primary's stream."""

    def __init__(self, data: Path, node: str, ctx: zmq.Context[zmq.Socket[bytes]], *,
                 liveness: float = 1.0, keys: ClientKeys | None = None) -> None:
        self.data = data
        self.keys = keys  # CURVE: this broker's own pair, which the primary's holds too
        self.node = node
        self.ctx = ctx
        self.liveness = liveness
        self.store: SqliteStore | None = None
        self.incoming = Incoming()
        self.applied = 0  # batches applied (tests and logs)
        self.backups = 0  # backups installed
        self._copy: IO[bytes] | None = None  # a backup being received
        self._copy_at: tuple[int, int] = (0, 0)
        # While following: the loop is awaiting (the reader leaves the socket to it),
        # messages the reader left to it, a store failure the reader met, and when the
        # primary was last heard from and the position last named.
        self._busy = False
        self._pending: list[list[bytes]] = []
        self._failure: ZqError | None = None
        self._heard = 0.0
        self._asked = 0.0

    @property
    def position(self) -> tuple[int, int]:
        return self.incoming.term, self.incoming.seq

    async def open(self) -> None:
        store = SqliteStore(self.data, fsync="full")
        await store.open(1)  # what recovery reads is not used here
        self.store = store
        self.incoming = Incoming(*await files.position(store))

    async def close(self) -> None:
        self._drop_copy()
        store, self.store = self.store, None
        if store is not None:
            await store.close()

    async def follow(self, leader: Leader, changed: Callable[[], Awaitable[bool]],
                     clients: zmq.Socket[bytes] | None = None) -> None:
        """Follow ``leader`` until ``changed()`` says etcd names another (or nobody).
        ``clients``: this node's client socket, whose HELLOs are refused (naming the
        leader) while the leader is heard from (zq.ha.refuse)."""
        if self.store is None:  # (a backup's install failed after closing it)
            await self.open()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        # One routing id for as long as it follows this leader: a connection dropped
        # (ZeroMQ heartbeats, after a pause) and made again keeps it, so the primary
        # still takes its acks; a fresh id would look like an old standby's until it
        # named its position again, --ha-liveness later.
        sock.setsockopt(zmq.ROUTING_ID, b"zq-standby-" + uuid.uuid4().hex.encode())
        if self.keys is not None:
            self.keys.apply(sock)
        # Each handshake (the first, and one after a connection was lost and made again:
        # the primary may have dropped what it had queued for us) names the position at
        # once, so that the primary sends what is missing now, not after --ha-liveness.
        mon = monitor(sock, zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(leader.repl)
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        self._busy, self._pending, self._failure = False, [], None
        self._heard = self._asked = 0.0  # (it names its position at once)
        loop.add_reader(fd(sock), self._fast, sock, ready)
        loop.add_reader(fd(mon), self._connected, mon, ready)
        if clients is not None:
            loop.add_reader(fd(clients), ready.set)
        log.info("following %s (term %d) at %s from %s", leader.node, leader.term,
                 leader.repl, self.position)
        gone = asyncio.Event()  # etcd names another leader, or nobody (or this node stops)
        watch = loop.create_task(_watch(changed, gone, ready), name="zq ha follow check")
        try:
            await self._follow(sock, ready, gone, leader, clients)
        finally:
            watch.cancel()
            with contextlib.suppress(BaseException):
                await watch
            loop.remove_reader(fd(sock))
            loop.remove_reader(fd(mon))
            sock.disable_monitor()  # first: a monitor left running blocks libzmq's close
            mon.close(linger=0)
            if clients is not None:
                loop.remove_reader(fd(clients))
            sock.close(linger=0)
            self._drop_copy()

    async def _follow(self, sock: zmq.Socket[bytes], ready: asyncio.Event,
                      gone: asyncio.Event, leader: Leader,
                      clients: zmq.Socket[bytes] | None) -> None:
        maintained = time.monotonic()
        while not gone.is_set():
            if self._failure is not None:
                raise self._failure
            now = time.monotonic()
            if now - self._heard > self.liveness and now - self._asked > self.liveness:
                self._send(sock, wire.control("follow", node=self.node, term=self.incoming.term,
                                              seq=self.incoming.seq))
                self._asked = now
            ready.clear()
            if clients is not None and now - self._heard <= self.liveness:
                refuse_hellos(clients, leader.node, leader.endpoint)
            self._busy = True
            try:
                if now - maintained >= 1.0 and self._copy is None:
                    maintained = now
                    await self._store().maintain()
                msgs, self._pending = self._pending + _drain(sock), []
                if msgs:
                    self._heard = time.monotonic()
                    if await self._take(sock, msgs):
                        self._asked = self._heard = 0.0  # a gap: name the position at once
                    continue
            finally:
                self._busy = False
            if readable(sock):  # re-arms the edge-triggered descriptor
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), CHECK)

    def _connected(self, mon: zmq.Socket[bytes], ready: asyncio.Event) -> None:
        """The monitor's reader: a (new) connection to the primary is up."""
        got = False
        while True:
            try:
                mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            got = True
        if got:
            self._asked = self._heard = 0.0  # the loop names the position at once
            ready.set()

    def _fast(self, sock: zmq.Socket[bytes], ready: asyncio.Event) -> None:
        """The socket's reader: shipped batches and pings are applied and acked here, in
        the callback (no task switch per batch); anything else (a backup's chunk, a bad
        message, a store that cannot commit on this thread) goes to the loop."""
        store = self.store
        if (self._busy or self._pending or self._copy is not None or store is None
                or not store.one_hop):
            ready.set()
            return
        msgs = _drain(sock)
        if not msgs:
            return
        self._heard = time.monotonic()
        t = _Taking(Incoming(self.incoming.term, self.incoming.seq))
        try:
            for i, parts in enumerate(msgs):
                if parts[0] == wire.MAGIC:
                    if not self._batch(sock, t, wire.decode(parts)):
                        break
                    continue
                m = wire.decode_control(parts)
                if m["op"] != "ping" or m["term"] < t.inc.term:
                    self._pending += msgs[i:]  # for the loop, after what came before
                    ready.set()
                    break
                t.ack = True
            self._apply_now(t.group)
        except MalformedFrame as exc:
            log.warning("replication: bad message from the primary: %s", exc)
            t.gap = True
        except ZqError as exc:  # the store failed: the loop raises it
            self._failure = exc
            ready.set()
            return
        if t.group or t.ack:
            self._send(sock, wire.control("ack", term=self.incoming.term,
                                          seq=self.incoming.seq))
        if t.gap:
            self._asked = self._heard = 0.0  # the loop names the position at once
            ready.set()
        if readable(sock):
            asyncio.get_running_loop().call_soon(self._fast, sock, ready)

    async def _take(self, sock: zmq.Socket[bytes], msgs: list[list[bytes]]) -> bool:
        """Apply and ack what arrived; True if the primary must be told the position
        again (a gap, or a bad message)."""
        t = _Taking(Incoming(self.incoming.term, self.incoming.seq))
        for parts in msgs:
            try:
                if parts[0] == wire.MAGIC:
                    if self._copy is None and not self._batch(sock, t, wire.decode(parts)):
                        break
                else:
                    await self._control(sock, t, wire.decode_control(parts))
                    if t.gap:
                        break
            except MalformedFrame as exc:
                log.warning("replication: bad message from the primary: %s", exc)
                t.gap = True
                break
        if t.group:
            await self._apply(t.group)
            t.ack = True
        if t.ack and self._copy is None:
            self._send(sock, wire.control("ack", term=self.incoming.term,
                                          seq=self.incoming.seq))
        return t.gap

    def _batch(self, sock: zmq.Socket[bytes], t: _Taking, s: wire.Shipped) -> bool:
        """One shipped batch: into the group, or acked again, or refused; False: a gap
        (what follows is not looked at)."""
        verdict = t.inc.check(s.term, s.seq)
        if verdict is Verdict.APPLY:
            t.inc.applied(s.term, s.seq)
            t.group.append(s.batch)
        elif verdict is Verdict.DUPLICATE:
            t.ack = True
        elif verdict is Verdict.STALE:
            self._send(sock, wire.control("stale", term=t.inc.term))
        else:
            t.gap = True
            return False
        return True

    async def _control(self, sock: zmq.Socket[bytes], t: _Taking, m: dict[str, Any]) -> None:
        if m["op"] == "chunk":  # a backup: what came before it is applied first
            await self._apply(t.group)
            t.group = []
            installed = await self._chunk(m)
            t.ack = t.ack or bool(installed)
            t.gap = t.gap or installed is None
            t.inc = Incoming(self.incoming.term, self.incoming.seq)
        elif m["op"] == "ping":
            if m["term"] < t.inc.term:
                self._send(sock, wire.control("stale", term=t.inc.term))
            t.ack = True
        elif m["op"] == "refused":
            log.warning("the primary does not take this node as standby: %s", m["why"])

    async def _apply(self, group: list[WriteBatch]) -> None:
        """Commit ``group`` as one transaction; the position moves only once it is stored."""
        if group and not self._store().one_hop:
            await self._store().apply(group)
            self._applied(group)
        else:
            self._apply_now(group)

    def _apply_now(self, group: list[WriteBatch]) -> None:
        """:meth:`_apply` on this thread (the loop has nothing else to do meanwhile)."""
        if group:
            self._store().apply_now(group)
            self._applied(group)

    def _applied(self, group: list[WriteBatch]) -> None:
        last = group[-1].position
        assert last is not None
        self.incoming = Incoming(*last)
        self.applied += len(group)

    async def _chunk(self, m: dict[str, Any]) -> bool | None:
        """Write a backup's chunk; the last one replaces the database. True: installed;
        None: the chunk was out of place, or the copy is bad (the copy is dropped, and
        the caller names its position again for a new one)."""
        at = (m["term"], m["seq"])
        try:
            if m["at"] == 0:
                self._drop_copy()
                self._copy = (self.data / COPY).open("wb")
                self._copy_at = at
            elif self._copy is None or at != self._copy_at or self._copy.tell() != m["at"]:
                log.warning("replication: a backup's chunk out of place: starting over")
                self._drop_copy()
                return None
            self._copy.write(m["data"])
            if not m["last"]:
                return False
            copy, self._copy = self._copy, None
            copy.flush()
            os.fsync(copy.fileno())
            copy.close()
            if not await asyncio.to_thread(files.intact, self.data / COPY):
                log.error("replication: the backup received fails SQLite's check: asking again")
                self._drop_copy(always=True)
                return None
            await self.close()
            files.install(self.data, self.data / COPY)
        except OSError as exc:  # a full disk, most likely: nothing of it is installed
            self._drop_copy(always=True)
            raise StorageError(f"receiving a backup: {exc}") from None
        await self.open()
        self.backups += 1
        if self.position != at:
            raise ZqError(f"the backup says {self.position}, its chunks said {at}")
        log.info("replication: installed a backup at %s", at)
        return True

    def _drop_copy(self, always: bool = False) -> None:
        """Close and delete a backup being received (``always``: delete the file even
        when it is not open any more)."""
        copy, self._copy = self._copy, None
        if copy is not None:
            copy.close()
        if copy is not None or always:
            with contextlib.suppress(OSError):
                (self.data / COPY).unlink()

    def _store(self) -> SqliteStore:
        if self.store is None:
            raise ZqError("the standby's store is not open")
        return self.store

    @staticmethod
    def _send(sock: zmq.Socket[bytes], parts: list[bytes]) -> None:
        with contextlib.suppress(zmq.Again):
            send_parts(sock, parts, zmq.NOBLOCK)


async def _watch(changed: Callable[[], Awaitable[bool]], gone: asyncio.Event,
                 ready: asyncio.Event) -> None:
    """Ask etcd every CHECK seconds, beside the applying (a slow etcd never holds up
    the acks), until it names another leader than the one followed."""
    while not await changed():  # noqa: ASYNC110 - asking etcd again is the point
        await asyncio.sleep(CHECK)
    gone.set()
    ready.set()


@dataclass(slots=True)
class _Taking:
    """What one drain of the socket leaves to do."""

    inc: Incoming  # where the group leaves the standby
    group: list[WriteBatch] = field(default_factory=list)  # to apply, in one transaction
    ack: bool = False
    gap: bool = False


def _drain(sock: zmq.Socket[bytes]) -> list[list[bytes]]:
    msgs: list[list[bytes]] = []
    while len(msgs) < DRAIN:
        try:
            msgs.append(recv_parts(sock))
        except zmq.Again:
            break
    return msgs
