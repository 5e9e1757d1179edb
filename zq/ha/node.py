"""``zq broker --ha``: one node of a replicated broker id, primary or standby in turn.

A :class:`Node` binds its client endpoint and its replication endpoint once, then
goes round: while etcd names a leader, it follows it as standby
(:class:`~zq.ha.standby.Follower`); when nobody leads and ``sync`` lets it
(:meth:`~zq.ha.lease.Sync.may_lead`), it takes the leader key, names nobody in
``sync``, and serves as primary (a :class:`~zq.broker.Broker` on the same client
socket, with a :class:`~zq.ha.primary.StandbyLink`) until it stops or is deposed:
its lease lost in etcd, or a standby that has seen a newer term. While etcd cannot
be reached the primary is fenced (nothing confirmed or delivered, publishes refused
with UNAVAILABLE) from its lease's deadline until a renewal works again, or it finds
its lease gone. Until a node has a role its client socket is not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket as socketlib
from collections.abc import Callable
from pathlib import Path

import aetcd
import zmq
from aetcd.exceptions import ClientError

from zq.broker import Broker, claim_identity
from zq.config import BrokerConfig, etcd_address
from zq.errors import ZqError
from zq.ha.directory import Directory, with_leaders
from zq.ha.keeper import LeaseKeeper
from zq.ha.lease import Leader, LeaderLease, leader_key
from zq.ha.primary import StandbyLink
from zq.ha.standby import Follower
from zq.security.auth import REPLICATION
from zq.security.guard import Guard
from zq.transport import serve_options

log = logging.getLogger("zq.ha")

NODE_FILE = "ha-node"  # the node name kept in the data folder
PAUSE = 0.2  # seconds between looks at etcd while nobody leads
MARGIN = 1.0  # seconds of the lease a primary gives up before etcd's deadline
NO_HISTORY = (-1, -1)  # the history end of a database that was never replicated
REPL_HWM = 10_000  # messages queued to the standby (batches, or 1 MiB backup chunks)


def node_name(data: Path, given: str) -> str:
    """``given``, or the name kept in the data folder (made once: host and a random part)."""
    if given:
        return given
    path = data / NODE_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    name = f"{socketlib.gethostname()}-{secrets.token_hex(3)}".replace("/", "-")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(name + "\n", encoding="utf-8")
    tmp.replace(path)
    return name


class Node:
    def __init__(self, cfg: BrokerConfig) -> None:
        self.cfg = cfg
        self.data = Path(cfg.data)
        self.node = ""
        self.endpoint = ""
        self.repl_endpoint = ""
        self.role = "starting"  # "primary", "standby", "waiting"
        self.broker: Broker | None = None
        self.follower: Follower | None = None
        self._stop = asyncio.Event()
        self._announced = False
        self._on_ready: Callable[[str], None] | None = None
        self._leaders: dict[str, str] = {}  # in a cluster: broker id -> its primary
        # CURVE and the doorman, for both sockets: the replication endpoint lets in only
        # a holder of this broker's own secret key (the other node of the pair).
        self.guard = Guard(cfg, f"node of {cfg.id}")

    def reload(self) -> None:
        """SIGHUP: the primary reloads as a broker does; a standby, its keys."""
        if self.broker is not None:
            self.broker.reload()
        else:
            self.guard.reload()  # (a standby has no sessions to end)

    def request_stop(self) -> None:
        self._stop.set()
        if self.broker is not None:
            self.broker.request_stop()

    async def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        cfg = self.cfg
        self._on_ready = on_ready
        self.data.mkdir(parents=True, exist_ok=True)
        claim_identity(self.data, cfg.id)
        self.node = node_name(self.data, cfg.ha_node)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        client = ctx.socket(zmq.ROUTER)
        repl = ctx.socket(zmq.ROUTER)
        host, port = etcd_address(cfg.ha)
        etcd = aetcd.Client(host=host, port=port, timeout=2)
        try:
            serve_options(client, hwm=cfg.send_hwm, max_frame=cfg.max_frame,
                          backlog=cfg.listen_backlog)
            self.guard.protect(client)
            self.guard.start(ctx, asyncio.get_running_loop(), client)  # before any bind
            client.bind(cfg.bind)
            self.endpoint = client.getsockopt_string(zmq.LAST_ENDPOINT)
            # A bounded queue to the standby: a backup's chunks wait for room (the
            # sender yields), a standby that cannot keep up stops the stream (it asks
            # again from where it is) instead of the primary's memory growing.
            serve_options(repl, hwm=REPL_HWM, max_frame=cfg.max_frame + (1 << 20), backlog=64)
            # A standby that reconnects under its routing id takes it over at once, even
            # if its old connection is not known to be gone yet.
            repl.setsockopt(zmq.ROUTER_HANDOVER, 1)
            self.guard.protect(repl, REPLICATION)
            repl.bind(cfg.ha_bind or _beside(self.endpoint))
            self.repl_endpoint = cfg.ha_advertise or repl.getsockopt_string(zmq.LAST_ENDPOINT)
            lease = LeaderLease(etcd, leader_key(cfg.ha_cluster, cfg.id), self.node,
                                self.endpoint, ttl=cfg.ha_ttl, margin=MARGIN,
                                repl=self.repl_endpoint)
            self.follower = Follower(self.data, self.node, ctx, liveness=cfg.ha_liveness,
                                     keys=self.guard.client_keys)
            await self.follower.open()
            log.info("node %s of broker %s: clients at %s, replication at %s, position %s",
                     self.node, cfg.id, self.endpoint, self.repl_endpoint,
                     self.follower.position)
            directory = None
            if cfg.cluster:  # MOVED answers name the other ids' primaries
                directory = asyncio.create_task(
                    Directory(etcd, cfg.ha_cluster, self._primaries).run(), name="zq primaries")
            try:
                while not self._stop.is_set():
                    await self._round(lease, client, repl, ctx)
            finally:
                if directory is not None:
                    directory.cancel()
                    with contextlib.suppress(BaseException):
                        await directory
        finally:
            if self.follower is not None:
                await self.follower.close()
            with contextlib.suppress(Exception):
                await etcd.close()
            self.guard.close()
            client.close(linger=0)
            repl.close(linger=0)
            ctx.term()

    def _announce(self) -> None:
        if not self._announced and self._on_ready is not None:
            self._announced = True
            self._on_ready(self.endpoint)

    async def _round(self, lease: LeaderLease, client: zmq.Socket[bytes],
                     repl: zmq.Socket[bytes], ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        """Look at etcd once: follow the leader, take the lead, or wait a little."""
        try:
            leader = await lease.current()
            if leader is None:
                sync = await lease.sync()
                won = await lease.take_over(sync) if sync is None or sync.may_lead(
                    self.node) else None
                if won is not None:
                    await self._lead(lease, won, client, repl, ctx)
                    return
            elif leader.node != self.node and leader.repl:
                self.role = "standby"
                self._announce()
                assert self.follower is not None
                await self.follower.follow(leader, lambda: self._changed(lease, leader), client)
                return
        except (ClientError, TimeoutError) as exc:
            log.warning("etcd cannot be reached (%s)", type(exc).__name__)
        except ZqError as exc:  # the standby's store failed (a full disk): try again
            log.error("cannot follow the primary: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)
        self.role = "waiting"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), PAUSE)

    async def _changed(self, lease: LeaderLease, leader: Leader) -> bool:
        """Whether etcd names another leader than ``leader`` now (or this node stops)."""
        if self._stop.is_set():
            return True
        try:
            now = await asyncio.wait_for(lease.current(), 1.0)
        except (ClientError, TimeoutError):
            return False  # etcd away: keep following; it decides when it is back
        return now is None or now.term != leader.term

    async def _lead(self, lease: LeaderLease, leader: Leader, client: zmq.Socket[bytes],
                    repl: zmq.Socket[bytes], ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        """Serve as primary at ``leader.term`` until stopped or deposed."""
        cfg = self.cfg
        assert self.follower is not None
        keeper = asyncio.create_task(self._keep(lease), name="zq ha lease")
        try:
            if not await lease.set_sync(None):  # nobody else may take over from here
                log.warning("took the lead at term %d but could not write sync", leader.term)
                return
            history_end = self.follower.position
            if history_end == (0, 0):  # never replicated: its content may be anything,
                history_end = NO_HISTORY  # so no follower is taken to share it
            await self.follower.close()
            log.info("primary of broker %s at term %d (history ends at %s)", cfg.id,
                     leader.term, history_end)
            broker = Broker(cfg, context=ctx, socket=client, guard=self.guard)
            link = StandbyLink(repl, term=leader.term, history_end=history_end,
                               data=self.data, lease_holds=lease.holds,
                               set_sync=lease.set_sync, read_sync=lease.sync,
                               deposed=broker.demote,
                               wake=broker.wake, liveness=cfg.ha_liveness,
                               strict=cfg.ha_strict)
            broker.commits.replicator = link
            broker.core.ha_stats = lambda: {**link.stats(), "node": self.node,
                                            "id": cfg.id, "history_end": list(history_end)}
            self.broker, self.role = broker, "primary"
            if self._stop.is_set():  # SIGTERM while it was taking over
                broker.request_stop()
            if keeper.done():  # the lease was lost while it was taking over
                broker.demote("the lease was lost while taking over")
            self._use_leaders()
            link.start(asyncio.get_running_loop())
            try:
                await broker.run(lambda _ep: self._announce())
            finally:
                await link.close()
                self.broker = None
        finally:
            keeper.cancel()
            with contextlib.suppress(BaseException):
                await keeper
            # Give the key up at once (only this term's): the standby need not wait
            # for the TTL. A deposed primary's key is gone already.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lease.resign(), 2.0)
            if self.follower.store is None and not self._stop.is_set():
                await self.follower.open()

    async def _keep(self, lease: LeaderLease) -> None:
        """Keep the lease: on its deadline the broker is fenced (``holds()`` is false)
        and renewals go on; one that works resumes it, one that finds the lease gone
        deposes it."""
        while True:
            await LeaseKeeper(lease, lambda _why: self._wake()).run()
            if lease.term is None:
                self._depose("the lease ended in etcd, or the key is another's")
                return
            log.error("fenced: etcd cannot be reached; nothing is confirmed or delivered")
            link = self._link()
            if link is not None:
                link.fenced()
            while True:
                try:
                    ok = await asyncio.wait_for(lease.renew(), 1.0)
                except (ClientError, TimeoutError):
                    await asyncio.sleep(0.1)
                    continue
                if not ok:
                    self._depose("the lease ran out while etcd could not be reached")
                    return
                log.warning("etcd is back: the lease holds again, serving resumes")
                link = self._link()
                if link is not None:
                    link.resumed()
                self._wake()
                break

    def _primaries(self, leaders: dict[str, str]) -> None:
        """In a cluster: the replicated broker ids' primaries now, for MOVED answers."""
        self._leaders = leaders
        self._use_leaders()

    def _use_leaders(self) -> None:
        m = None if self.broker is None else self.broker.core.membership
        if m is None or not self._leaders:
            return
        try:
            m.reload(with_leaders(m.cfg, self._leaders))
        except ValueError as exc:
            log.error("primaries from etcd not used: %s", exc)

    def _link(self) -> StandbyLink | None:
        link = None if self.broker is None else self.broker.commits.replicator
        return link if isinstance(link, StandbyLink) else None

    def _wake(self) -> None:
        if self.broker is not None:
            self.broker.wake()

    def _depose(self, why: str) -> None:
        if self.broker is not None:
            self.broker.demote(why)


def _beside(endpoint: str) -> str:
    """A free port on ``endpoint``'s host (tcp), else an ipc path beside it."""
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://"):].rpartition(":")[0]
        return f"tcp://{host}:*"
    return endpoint + ".repl"
