"""Counters for STATS and the queue operations. No I/O.
"""

from __future__ import annotations

from typing import Any

from zq.core.backlog import Backlog
from zq.core.model import Peer, Queue
from zq.core.state import (
    STATS_SHOWN,
)


def _move_of(q: Queue) -> dict[str, Any]:
    """A move under way (PROTOCOL.md 17.5): ``moving`` to, or ``incoming`` from, a broker."""
    if q.moving is not None:
        return {"moving": {"to": q.moving.to, "phase": q.moving.phase}}
    if q.incoming is not None:
        return {"incoming": {"from": q.incoming.source}}
    return {}


class Stats(Backlog):
    """What the broker reports about itself."""

    def tenant_in_flight(self, q: Queue) -> dict[str, int]:
        if self.track_tenants:
            return {t.name: t.in_flight for t in q.tenants.values()}
        counts = dict.fromkeys(q.tenants, 0)
        for p in self.peers.values():
            for m in p.held.values():
                if m.q is q:
                    counts[m.lane.tenant] = counts.get(m.lane.tenant, 0) + 1
        return counts

    def queue_stats(self, q: Queue, in_flight: int, now: float) -> dict[str, Any]:
        oldest = q.oldest()
        counts = self.tenant_in_flight(q)
        return {
            "ready": q.ready_count() + q.disk,
            "on_disk": q.disk,
            "delayed": q.delayed,
            "in_flight": in_flight,
            "consumers": len(q.subs),
            "published": q.published,
            "delivered": q.delivered,
            "acked": q.acked,
            "nacked": q.nacked,
            "dead": q.dead,
            "undeliverable": q.undeliverable,
            "paused": q.paused,
            "oldest_age": round(now - oldest, 3) if oldest else 0.0,
            "rates": {k: round(v, 1) for k, v in q.rates.items() if not k.startswith("_")},
            "tenants": {t.name: {"in_flight": counts.get(t.name, 0), "weight": t.weight,
                                 "cap": t.cap}
                        for t in q.tenants.values() if t.name},
            **_move_of(q),
            **({"stream": q.stream.stats()} if q.stream is not None else {}),
        }

    def in_flight(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.peers.values():  # cancelled subscriptions may still hold messages
            for name, s in p.subs.items():
                counts[name] = counts.get(name, 0) + s.window.in_flight - s.window.owed
        return counts

    def stats(self) -> dict[str, Any]:
        """Counters, and the first STATS_SHOWN queues and peers (by name and routing id;
        ``queues_total`` and ``peers_total`` count them all): the reply is one header
        part, within 4 MiB however many there are. MANAGE ``list`` pages through queues."""
        c: dict[str, Any] = dict(self.counters)
        frames = c["deliver_frames"]
        c["avg_deliver_batch"] = c["delivered"] / frames if frames else 0.0
        in_flight = self.in_flight()
        now = self.now
        names = sorted(self.queues)[:STATS_SHOWN]
        queues = {n: self.queue_stats(self.queues[n], in_flight.get(n, 0), now) for n in names}
        shown = sorted(self.peers)[:STATS_SHOWN]
        peers = {identity.hex(): self._peer_stats(self.peers[identity]) for identity in shown}
        out = {"broker": self.broker_id, "counters": c, "queues": queues, "peers": peers,
               "queues_total": len(self.queues), "peers_total": len(self.peers),
               "store": self.store_stats()}
        if self.ha_stats is not None:
            out["ha"] = self.ha_stats()
        if self.uplink_stats is not None:
            out["uplink"] = self.uplink_stats()
        if self.streams:
            out["streams"] = {n: self.streams[n].stats()
                              for n in sorted(self.streams)[:STATS_SHOWN]}
        if self.topics:
            ts = self.topics.values()
            out["topics"] = {"total": len(self.topics),
                             "bindings": sum(len(t.bindings) for t in ts),
                             "published": sum(t.published for t in ts),
                             "copies": sum(t.copies for t in ts),
                             "dropped": sum(t.dropped for t in ts),
                             "refused": sum(t.refused for t in ts)}
        if self.nodes:
            out["nodes"] = self.node_stats(now)
        if self.security_stats is not None:
            out["security"] = {**self.security_stats(),
                               "sessions_per_key": {k: n for k, n in self.per_key.items()
                                                    if k is not None}}
        m = self.membership
        if m is not None:
            out["cluster"] = {**m.welcome(), "links": len(self.links),
                              "inner_sessions": len(self.routes),
                              "by_link": self._link_stats()}
        return out

    def node_stats(self, now: float) -> dict[str, Any]:
        """Each work node's latest report (MANAGE node), how long ago, and ``up`` or
        ``lost`` (silent for three of its intervals, at least 3 s)."""
        out: dict[str, Any] = {}
        for name, entry in self.nodes.items():
            ago = now - entry["seen"]
            out[name] = {**entry["report"], "seen_s": round(ago, 3),
                         "state": "lost" if ago > max(3.0, 3 * entry["interval"]) else "up"}
        return out

    def _link_stats(self) -> dict[str, Any]:
        """Each router's link, by routing id: who said it is (``router <id>``), its
        clients, and the FORWARD frames received on it and sent on it."""
        return {identity.hex(): {"name": p.name, "inner_sessions": len(p.inner or ()),
                                 "forwards_in": p.forwards_in, "forwards_out": p.forwards_out}
                for identity, p in sorted(self.links.items())[:STATS_SHOWN]}

    @staticmethod
    def _peer_stats(p: Peer) -> dict[str, Any]:
        subs = sorted(p.subs.items())[:STATS_SHOWN]
        return {"name": p.name, "held": len(p.held), "subs_total": len(p.subs), "subs": {
            name: {"in_flight": s.window.in_flight - s.window.owed,
                   "available": max(0, s.window.available),
                   "peak_in_flight": s.window.peak, "active": s.active} for name, s in subs}}
