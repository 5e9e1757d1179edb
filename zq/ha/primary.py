"""The primary's side of replication: the standby's link, and what waits for it.

:class:`StandbyLink` is the broker's :class:`~zq.committer.Replicator`. Every batch
the primary commits is numbered ``(term, seq)`` before its commit (stored with it)
and shipped after it on a ROUTER socket to the standby, pipelined; the confirms,
replies and deliveries that waited for the batch go out once the standby has acked
it (acks are cumulative), and only while this node holds its lease. The link's
modes (docs/HA.md, "Replication"):

* ``alone``: no standby in ``sync``; what waits goes out after the local commit.
* ``joining``: a standby has acked everything shipped; from now on what waits waits
  for its acks, while the primary names it in ``sync`` (compare-and-swap in etcd).
* ``sync``: the standby is in ``sync``; nothing is confirmed before its ack.
* ``dropping``: the standby went silent, or acked nothing new while batches waited,
  for ``liveness`` seconds (or fell more than the window behind); the primary takes it
  out of ``sync`` and only then confirms alone.
* ``waiting`` (``strict`` only, instead of ``dropping``): the standby stays in
  ``sync``; the publishes that waited for it are answered UNAVAILABLE (their
  messages stay stored here: not confirmed, not forgotten), and new ones are refused
  with UNAVAILABLE until it is back and has caught up.

A standby that follows names its position: the end of this primary's history (the
position its database had at the takeover) or a batch of this term still in the
window is caught up from the window; anything else gets an online backup of the
database, then the batches after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from zq.errors import MalformedFrame, Unavailable, ZqError
from zq.ha import wire
from zq.ha.backup import send_backup
from zq.ha.lease import Sync
from zq.ha.stream import Outgoing
from zq.persistence import WriteBatch
from zq.transport import fd, readable, recv_parts, send_parts

log = logging.getLogger("zq.ha")



@dataclass(slots=True)
class Held:
    """What waits for one commit: its publishes' answer (``confirm(None)`` confirms,
    ``confirm(error)`` refuses), then the frames that go after it (``send``). Each
    runs once; ``confirm`` is None once it has."""

    confirm: Callable[[ZqError | None], None] | None
    send: Callable[[], None]


Helds = list[Held]


class StandbyLink:
    """One primary term's link to its standby (see the module's doc)."""

    def __init__(self, sock: zmq.Socket[bytes], *, term: int, history_end: tuple[int, int],
                 data: Path, lease_holds: Callable[[], bool],
                 set_sync: Callable[[str | None, int], Awaitable[bool]],
                 read_sync: Callable[[], Awaitable[Sync | None]],
                 deposed: Callable[[str], None], wake: Callable[[], None],
                 liveness: float = 1.0, strict: bool = False) -> None:
        self.sock = sock
        self.term = term
        self.history_end = history_end
        self.data = data
        self._holds = lease_holds
        self._set_sync = set_sync
        self._read_sync = read_sync
        self._deposed = deposed
        self._wake = wake
        self.liveness = liveness
        self.strict = strict
        self.out: Outgoing[Helds] = Outgoing(term)
        self.mode = "alone"
        self.standby: bytes | None = None  # the standby's socket identity
        self.node = ""  # its node name
        self.acked = 0  # the standby has applied this term's batches up to here
        self.heard = 0.0  # monotonic: the standby's last message
        self.progress_at = 0.0  # monotonic: its last ack that moved on (or the wait began)
        self.streaming = False  # batches go out as they are committed (no backup under way)
        self.installing: tuple[int, int] | None = None  # a backup sent, not acked yet
        self.parked: Helds = []  # answered while the lease did not hold: to send later
        self.backups = 0
        self._backup: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None  # a change of ``sync``
        self._timer: asyncio.TimerHandle | None = None
        self._read_due = False  # _on_readable is scheduled
        self._sync_lock = asyncio.Lock()  # writes of ``sync`` land in the order decided
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(fd(self.sock), self._on_readable)
        self._timer = loop.call_later(self.liveness / 4, self._on_timer)

    async def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError, zmq.ZMQError):
                self._loop.remove_reader(fd(self.sock))
        if self._timer is not None:
            self._timer.cancel()
        for task in (self._task, self._backup):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._task = self._backup = None

    def stats(self) -> dict[str, Any]:
        """For STATS (``ha``): this term, the mode, the standby and how far behind it is."""
        return {"role": "primary", "term": self.term, "mode": self.mode,
                "standby": self.node or None, "standby_connected": self.standby is not None,
                "shipped": self.out.last_seq, "acked": self.acked,
                "lag": self.out.last_seq - self.acked if self.standby is not None else None,
                "backups_sent": self.backups, "lease_holds": self.holds()}

    @property
    def idle(self) -> bool:
        """Nothing waits for the standby."""
        return self.out.unacked == 0 and not self.parked

    # ------------------------------------------------------------ the Replicator

    def prepare(self, batch: WriteBatch) -> None:
        batch.position = (self.term, self.out.last_seq + 1)

    def shipped(self, batch: WriteBatch) -> None:
        parts = wire.encode(self.term, self.out.last_seq + 1, batch)
        if self.out.unacked == 0:
            self.progress_at = time.monotonic()  # from now on an ack is awaited
        seq = self.out.ship(parts, [])
        if self.streaming and self.standby is not None:
            self._send(parts)
        if self.mode == "alone":
            self._run(self.out.acked(seq))
        elif self.mode == "waiting":  # (strict, no standby): nothing waits for an ack
            self._run(self.out.acked(seq), self._no_standby())

    def hold(self, confirm: Callable[[ZqError | None], None], send: Callable[[], None]
             ) -> None:
        held = Held(confirm, send)
        waiting = self.out.waiting_last()
        if waiting is not None:
            waiting.append(held)
        elif self.mode == "waiting":
            self._run([held], self._no_standby())
        else:
            self._run([held])

    def _no_standby(self) -> ZqError:
        return Unavailable("the standby is lost and the broker runs with --ha-strict: "
                           "not confirmed (the message may still be delivered)")

    def holds(self) -> bool:
        return self._holds()

    def refusal(self) -> ZqError | None:
        if not self.holds():
            return Unavailable("this broker's primary lease is not confirmed (etcd cannot "
                               "be reached): publishes are refused until it is")
        if self.strict and self.mode != "sync":
            return Unavailable("no standby is in sync and the broker runs with --ha-strict: "
                               "publishes are refused until one has caught up")
        return None

    def fenced(self) -> None:
        """The lease's deadline passed (etcd cannot be reached): every publish still
        waiting is answered UNAVAILABLE now (stored, not confirmed); the frames after
        them wait for the lease to hold again."""
        err = self._fenced_error()
        for waiting in self.out.waiting_unacked():
            for held in waiting:
                if held.confirm is not None:
                    held.confirm(err)
                    held.confirm = None
        self._wake()

    def resumed(self) -> None:
        """The lease holds again: the frames that waited meanwhile go out now."""
        parked, self.parked = self.parked, []
        self._run(parked)

    @staticmethod
    def _fenced_error() -> ZqError:
        return Unavailable("this broker's primary lease could not be renewed (etcd cannot "
                           "be reached): not confirmed (the message may still be delivered)")

    def _run(self, released: list[Helds] | Helds, error: ZqError | None = None) -> None:
        """Answer and send what waited for acked batches, in order; while the lease
        does not hold, publishes are answered UNAVAILABLE and the rest is parked."""
        flat: Helds = []
        for r in released:
            if isinstance(r, list):
                flat += r
            else:
                flat.append(r)
        if not flat:
            return
        holds = self.holds()
        if error is None and not holds:
            error = self._fenced_error()
        for held in flat:
            if held.confirm is not None:
                held.confirm(error)
                held.confirm = None
        if not holds:
            self.parked += flat
        else:
            if self.parked:
                flat, self.parked = self.parked + flat, []
            for held in flat:
                held.send()
        self._wake()

    # ------------------------------------------------------------ the standby's messages

    def _on_readable(self) -> None:
        self._read_due = False
        sock = self.sock
        for _ in range(1000):
            try:
                msg = recv_parts(sock)
            except zmq.Again:
                return
            if len(msg) < 2:
                continue
            try:
                self._handle(msg[0], wire.decode_control(msg[1:]))
            except MalformedFrame as exc:
                log.warning("replication: bad message from a standby: %s", exc)
        self._read_due = True
        self._loop_soon(self._on_readable)

    def _loop_soon(self, fn: Callable[[], None]) -> None:
        if self._loop is not None:
            self._loop.call_soon(fn)

    def _handle(self, identity: bytes, m: dict[str, Any]) -> None:
        op = m["op"]
        if op == "follow":
            self._follow(identity, m["node"], (m["term"], m["seq"]))
            return
        if identity != self.standby:
            return  # an old standby's late message
        self.heard = time.monotonic()
        if op == "ack":
            self._ack(m["term"], m["seq"])
        elif op == "stale":
            self._deposed(f"standby {self.node} has seen term {m['term']} (this is "
                          f"{self.term})")

    def _follow(self, identity: bytes, node: str, position: tuple[int, int]) -> None:
        now = time.monotonic()
        if (self.standby is not None and identity != self.standby and node != self.node
                and now - self.heard < self.liveness):
            self._send_to(identity, wire.control("refused", why=f"{self.node} is the standby"))
            return
        if self.mode in ("sync", "joining") and node != self.node:
            return  # the one in sync must be dropped first (it is silent: the timer does)
        self.standby, self.node, self.heard = identity, node, now
        log.info("replication: %s follows from %s", node, position)
        self._catch_up(position)

    def _catch_up(self, position: tuple[int, int], backup: bool = False) -> None:
        """Send the batches after ``position`` from the window, else a backup. After a
        ``backup`` (at ``position``) the standby is not taken into ``sync`` before it
        acks that position or a batch after it: until then it may not have installed it."""
        term, seq = position
        if position == self.history_end or (backup and term != self.term):
            # (a backup taken before this term's first commit is as of the takeover)
            base: int | None = 0
        elif term == self.term:
            base = seq
        else:
            base = None
        missed = None if base is None or base > self.out.last_seq else self.out.since(base)
        if missed is None:
            if self._backup is None and self._loop is not None:
                self._backup = self._loop.create_task(self._send_backup(), name="zq ha backup")
            return
        self.acked = base or 0
        self.installing = position if backup else None
        self.streaming = True
        for _, parts in missed:
            self._send(parts)
        self._maybe_join()

    def _ack(self, term: int, seq: int) -> None:
        if self.installing is not None and (term == self.term or
                                            (term, seq) == self.installing):
            self.installing = None  # the backup is in place: joining may follow
        if term != self.term:
            self._maybe_join()
            return  # its position before this term's first batch
        if seq > self.out.last_seq:
            log.warning("replication: %s acked batch %d of %d shipped: ignored",
                        self.node, seq, self.out.last_seq)
            return
        if seq > self.acked:
            self.progress_at = time.monotonic()
        self.acked = max(self.acked, seq)
        if self.mode not in ("alone", "waiting"):
            self._run(self.out.acked(seq))
        self._maybe_join()

    def _maybe_join(self) -> None:
        if (self.mode in ("alone", "waiting") and self.streaming and self._task is None
                and self.installing is None and self.acked == self.out.last_seq
                and self.holds()):
            # Everything confirmed so far is on the standby: from now on confirms wait
            # for it, and it is named in ``sync``.
            self.mode = "joining"
            self._start(self._change_sync(self.node), "join")

    # ------------------------------------------------------------ liveness

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self.liveness / 4, self._on_timer)
        now = time.monotonic()
        if self.parked and self.holds():  # the lease holds again (renewed in time)
            self.resumed()
        if self.standby is None:
            return
        stalled = (self.mode in ("sync", "joining") and self.out.unacked > 0
                   and now - self.progress_at > self.liveness)
        behind = self.streaming and self.out.last_seq - self.acked > self.out.keep
        if now - self.heard > self.liveness or stalled or behind or (
                self.mode == "sync" and self.out.over):
            why = ("silent" if now - self.heard > self.liveness else
                   "not acking" if stalled else "too far behind")
            log.warning("replication: standby %s is %s", self.node, why)
            self.standby, self.streaming = None, False
            if self.mode in ("sync", "joining") and self.strict:
                self.mode = "waiting"
                self._run(self.out.acked(self.out.last_seq), self._no_standby())
            elif self.mode in ("sync", "joining"):
                self.mode = "dropping"
                self._start(self._change_sync(None), "drop")
            return
        if self.streaming:
            self._send(wire.control("ping", term=self.term))

    async def _change_sync(self, standby: str | None) -> None:
        """Name ``standby`` in ``sync`` (None: confirm alone), then switch modes.

        Each attempt reads ``sync`` and writes it only if it is unchanged since (etcd
        compares its revision), under a lock: a write decided earlier, or sent earlier
        and applied late by etcd, never lands on a later one. A write whose outcome is
        unknown (etcd did not answer) is tried again; until etcd says, the standby may
        be named there, so confirms keep waiting for it. A join no longer wanted (the
        standby was dropped meanwhile) is not written."""
        while True:
            if not self.holds():  # fenced: etcd cannot be written now
                self._task = None
                if standby is None:  # it can neither confirm nor drop: it steps down,
                    self._deposed("fenced with its standby lost")  # and clients move on
                else:
                    self._sync_changed(standby, False)
                return
            try:
                async with self._sync_lock:
                    if standby is not None and self.mode != "joining":
                        self._task = None
                        return
                    cur = await asyncio.wait_for(self._read_sync(), 2.0)
                    revision = 0 if cur is None else cur.revision
                    ok = await asyncio.wait_for(self._set_sync(standby, revision), 2.0)
            except Exception as exc:  # (TimeoutError, an etcd client error)
                log.warning("replication: writing sync failed (%r), trying again", exc)
                await asyncio.sleep(0.1)
                continue
            if ok or not self.holds() or standby is not None:
                break
            await asyncio.sleep(0.1)  # a drop that found sync changed since: read it again
        self._task = None
        self._sync_changed(standby, ok)

    def _sync_changed(self, standby: str | None, ok: bool) -> None:
        if standby is None:
            if ok:
                self.mode = "alone"
                self._run(self.out.acked(self.out.last_seq))
                log.warning("replication: confirming alone (no standby in sync)")
            else:
                self._deposed("could not take the standby out of sync")
        elif self.mode == "joining" and ok:
            self.mode = "sync"
            log.info("replication: %s is in sync", standby)
        elif self.mode == "joining" and self.strict:
            self.mode = "waiting"
            self._run(self.out.acked(self.out.last_seq), self._no_standby())
        elif self.mode == "joining":
            self.mode = "alone"
            self._run(self.out.acked(self.out.last_seq))

    # ------------------------------------------------------------ backups

    async def _send_backup(self) -> None:
        """An online copy of the database, in chunks, then the batches after it."""
        identity = self.standby
        self.streaming = False
        try:
            if identity is None:
                return
            position = await send_backup(self.data, identity, self._send_waiting)
        except (ZqError, OSError) as exc:
            log.error("replication: backup for %s failed: %s", self.node, exc)
            return
        finally:
            self._backup = None
        self.backups += 1
        log.info("replication: backup at %s sent to %s", position, self.node)
        if identity == self.standby:
            self._catch_up(position, backup=True)

    async def _send_waiting(self, identity: bytes, parts: list[bytes]) -> None:
        """Send, waiting for room in the socket's bounded queue (a backup's chunks)."""
        while True:
            try:
                self.sock.send(identity, zmq.SNDMORE | zmq.NOBLOCK)
                send_parts(self.sock, parts, zmq.NOBLOCK)
                if not self._read_due and readable(self.sock):
                    self._read_due = True
                    self._loop_soon(self._on_readable)
                return
            except zmq.Again:
                await asyncio.sleep(0.005)
            except zmq.ZMQError as exc:
                raise Unavailable(f"the standby went away: {exc}") from None

    # ------------------------------------------------------------ sending

    def _start(self, coro: Any, what: str) -> None:
        """Run a change of ``sync`` (one at a time: the caller checks ``_task``)."""
        if self._loop is None:
            coro.close()
            return
        self._task = self._loop.create_task(coro, name=f"zq ha {what}")

    def _send(self, parts: list[bytes]) -> None:
        if self.standby is not None:
            self._send_to(self.standby, parts)

    def _send_to(self, identity: bytes, parts: list[bytes]) -> None:
        try:
            self.sock.send(identity, zmq.SNDMORE | zmq.NOBLOCK)
            send_parts(self.sock, parts, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # full or gone: it asks again from where it is
            if identity == self.standby:
                log.warning("replication: cannot send to %s (%s)", self.node, exc)
                self.streaming = False
        # A send may take in what arrived without the descriptor telling (ZeroMQ's is
        # edge-triggered): look, and read it soon if so.
        if not self._read_due and readable(self.sock):
            self._read_due = True
            self._loop_soon(self._on_readable)
