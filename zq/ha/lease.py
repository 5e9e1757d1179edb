"""The leader lease of one broker id in etcd: which node is primary, and at which term.

The key ``/zq/<cluster>/brokers/<id>/leader`` names the primary (its node name and
endpoint, JSON) and is attached to an etcd lease of ``ttl`` seconds. A node becomes
primary by creating the key in a transaction that requires it to be absent (its
create revision is 0), so at most one node holds it at a time; the key's create
revision is the **term**, higher for every new holder, which replication and acks
carry so that a replica can refuse an older primary.

A holder keeps the lease alive with :meth:`LeaderLease.renew`. It counts itself
primary only until ``ttl - margin`` seconds after the start of its last successful
renewal (monotonic clock), whatever etcd says later: when etcd cannot be reached or
the process was paused, the lease may expire on etcd's side and another node may
take the key, and by then the old holder has already stopped (the Patroni rule: the
renew interval plus the time a renewal may take stays under the TTL). Availability
is given up, never the single primary.

The key ``sync`` names the standby that may be promoted, with the term of the primary
that wrote it. Only the current primary changes it (:meth:`LeaderLease.set_sync`
compares the leader key's create revision with its term in the same transaction),
and a standby takes the leader key only while ``sync`` names it, unchanged since it
read it (:meth:`LeaderLease.campaign` with ``in_sync=True``): a standby that fell out
of sync never takes over.

aetcd is an optional dependency (``pip install 'zq[ha]'``): only this package imports
it, and only a broker started with ``--ha`` imports this package.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aetcd

MIN_TTL = 2  # etcd refuses shorter leases (1.5 s with its default election timeout)


@dataclass(frozen=True, slots=True)
class Sync:
    standby: str | None  # the node that may be promoted; None: the primary is alone
    term: int  # the term of the primary that wrote it
    revision: int  # the key's mod revision (what a takeover compares)
    primary: str | None = None  # the node that wrote it (the primary at ``term``)

    def may_lead(self, node: str) -> bool:
        """Whether ``node`` has every confirmed message: the standby in sync, or the
        primary that wrote this (nobody else confirmed anything after it)."""
        return node in (self.standby, self.primary)


@dataclass(frozen=True, slots=True)
class Leader:
    node: str
    endpoint: str
    term: int  # the leader key's create revision
    repl: str = ""  # the endpoint its standby replicates from


def broker_prefix(cluster: str, broker_id: str) -> bytes:
    """``/zq/<cluster>/brokers/<id>/``: the keys of one broker id."""
    for name, what in ((cluster, "cluster"), (broker_id, "broker id")):
        if not name or "/" in name:
            raise ValueError(f"{what} must be non-empty and without '/': {name!r}")
    return f"/zq/{cluster}/brokers/{broker_id}/".encode()


def leader_key(cluster: str, broker_id: str) -> bytes:
    return broker_prefix(cluster, broker_id) + b"leader"


def sync_key(leader: bytes) -> bytes:
    """The ``sync`` key beside a ``leader`` key."""
    if not leader.endswith(b"/leader"):
        raise ValueError(f"not a leader key: {leader!r}")
    return leader[:-len(b"leader")] + b"sync"


def _decode(value: bytes, term: int) -> Leader | None:
    try:
        d = json.loads(value)
        return Leader(str(d["node"]), str(d["endpoint"]), term, str(d.get("repl", "")))
    except (ValueError, KeyError, TypeError):
        return None  # not written by zq: nobody we can follow


class LeaderLease:
    """One node's claim on a broker id's leader key."""

    def __init__(self, client: aetcd.Client, key: bytes, node: str, endpoint: str, *,
                 ttl: int = 5, margin: float = 1.0, repl: str = "") -> None:
        if ttl < MIN_TTL:
            raise ValueError(f"ttl must be at least {MIN_TTL} s, got {ttl!r}")
        if not 0 < margin < ttl:
            raise ValueError(f"margin must be in (0, ttl), got {margin!r}")
        self.client = client
        self.key = key
        self.node = node
        self.endpoint = endpoint
        self.repl = repl
        self.ttl = ttl
        self.margin = margin
        self.sync_key = sync_key(key)
        self.term: int | None = None  # set while this node holds the key
        self._lease: Any = None
        self._valid_until = 0.0  # monotonic: primary until then, if term is set

    def holds(self, now: float | None = None) -> bool:
        """Whether this node may act as primary now (see the module's rule)."""
        if self.term is None:
            return False
        return (time.monotonic() if now is None else now) < self._valid_until

    @property
    def valid_until(self) -> float:
        """The monotonic time at which this node stops acting as primary unless a
        renewal succeeds first (0 when it holds nothing)."""
        return self._valid_until if self.term is not None else 0.0

    async def campaign(self, in_sync: bool = False) -> Leader | None:
        """Take the key if nobody holds it; return this node as leader, or None.

        ``in_sync``: only if ``sync`` names this node and has not changed since it was
        read here (a standby's takeover; the first primary of a broker id campaigns
        without it)."""
        tx = self.client.transactions
        compare = [tx.create(self.key) == 0]
        if in_sync:
            sync = await self.sync()
            if sync is None or sync.standby != self.node:
                return None
            compare.append(tx.mod(self.sync_key) == sync.revision)
        return await self._take(compare)

    async def take_over(self, sync: Sync | None) -> Leader | None:
        """Take the key if nobody holds it and ``sync`` (as read just before) lets this
        node lead (:meth:`Sync.may_lead`; None: the broker id never had a primary), and
        is still what etcd has."""
        tx = self.client.transactions
        compare = [tx.create(self.key) == 0]
        if sync is None:
            compare.append(tx.version(self.sync_key) == 0)
        elif sync.may_lead(self.node):
            compare.append(tx.mod(self.sync_key) == sync.revision)
        else:
            return None
        return await self._take(compare)

    async def _take(self, compare: list[Any]) -> Leader | None:
        tx = self.client.transactions
        start = time.monotonic()
        lease = await self.client.lease(self.ttl)
        value = json.dumps({"node": self.node, "endpoint": self.endpoint,
                            "repl": self.repl}).encode()
        ok, replies = await self.client.transaction(
            compare=compare,
            success=[tx.put(self.key, value, lease=lease), tx.get(self.key)],
            failure=[],
        )
        if not ok:
            await lease.revoke()
            return None
        _, kv = replies[1][0]
        self._lease = lease
        self.term = int(kv.create_revision)
        self._valid_until = start + self.ttl - self.margin
        return Leader(self.node, self.endpoint, self.term, self.repl)

    async def set_sync(self, standby: str | None, revision: int | None = None) -> bool:
        """As primary: name the standby that may be promoted (None: nobody, this node
        confirms alone). False, and nothing written, unless this node holds the key at
        its term, in etcd as well as by its own clock, and (``revision`` given) ``sync``
        was last written at that revision (0: never): a write decided on what was read
        then, or one sent earlier that etcd applies late, never lands on a newer one."""
        term = self.term
        if term is None or not self.holds():
            return False
        tx = self.client.transactions
        value = json.dumps({"standby": standby, "term": term, "primary": self.node}).encode()
        compare = [tx.create(self.key) == term]
        if revision is not None:
            compare.append(tx.mod(self.sync_key) == revision)
        ok, _ = await self.client.transaction(
            compare=compare, success=[tx.put(self.sync_key, value)], failure=[])
        return bool(ok)

    async def sync(self) -> Sync | None:
        """The ``sync`` key as etcd has it (None: never written, or not zq's)."""
        got = await self.client.get(self.sync_key)
        if got is None:
            return None
        try:
            d = json.loads(got.value)
            standby, primary = d["standby"], d.get("primary")
            return Sync(None if standby is None else str(standby), int(d["term"]),
                        int(got.mod_revision), None if primary is None else str(primary))
        except (ValueError, KeyError, TypeError):  # not zq's: nobody may be promoted
            return Sync(None, 0, int(got.mod_revision))

    async def renew(self) -> bool:
        """Keep the lease alive; False (and no longer leader) if it has expired or the
        key is no longer this node's. An error reaching etcd propagates: the caller
        retries, and :meth:`holds` turns false on its own when the time is up."""
        if self.term is None or self._lease is None:
            return False
        start = time.monotonic()
        reply = await self._lease.refresh()
        if reply is None or reply.TTL <= 0:
            self._lost()
            return False
        got = await self.client.get(self.key)
        if got is None or int(got.create_revision) != self.term:
            self._lost()  # deleted or replaced by an operator
            return False
        self._valid_until = start + self.ttl - self.margin
        return True

    async def resign(self) -> None:
        """Give the key up at once (a clean stop): the next node need not wait for the
        TTL. Only this term's key is deleted."""
        term, lease = self.term, self._lease
        self._lost()
        if term is None:
            return
        tx = self.client.transactions
        await self.client.transaction(compare=[tx.create(self.key) == term],
                                      success=[tx.delete(self.key)], failure=[])
        if lease is not None:
            await lease.revoke()

    async def current(self) -> Leader | None:
        """Who holds the key now, as etcd says (None: nobody)."""
        got = await self.client.get(self.key)
        if got is None:
            return None
        return _decode(got.value, int(got.create_revision))

    def _lost(self) -> None:
        self.term = None
        self._lease = None
        self._valid_until = 0.0
