"""A broker's JSON views for the admin listener: overview, queues, one queue, consumers,
dead letters, explain and health. They read the core in the loop's thread; no I/O
but the sizes of the store's files.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zq import __version__
from zq.admin.windows import Recent
from zq.core.state import STATS_SHOWN
from zq.history import DEAD_AT, ORIGIN, REASON, entries

if TYPE_CHECKING:
    from zq.broker import Broker
    from zq.core.model import Msg, Peer, Queue

DEAD_SHOWN = 50  # dead letters listed per dead-letter queue


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class BrokerViews:
    """What the admin listener shows of ``broker``; ``ready`` once it has recovered."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.ready = False
        self.started = time.monotonic()
        core = broker.core
        self.confirm = Recent(core.confirm_latency)
        self.deliver = Recent(core.deliver_latency)
        self.commit = Recent(broker.commits.commit_seconds)

    def health(self) -> tuple[bool, dict[str, Any]]:
        b = self.broker
        details: dict[str, Any] = {"kind": "broker", "id": b.cfg.id or b.core.broker_id}
        if b.demoted:
            details["demoted"] = b.demoted
        return self.ready and not b.demoted, details

    def store_files(self) -> dict[str, int]:
        cfg = self.broker.cfg
        if cfg.storage != "sqlite":
            return {"database_bytes": 0, "wal_bytes": 0}
        db = Path(cfg.data) / "zq.db"
        return {"database_bytes": file_size(db),
                "wal_bytes": file_size(db.with_name(db.name + "-wal"))}

    def overview(self) -> dict[str, Any]:
        b = self.broker
        core = b.core
        now = time.monotonic()
        rates = {"publish": 0.0, "deliver": 0.0, "ack": 0.0}
        ready = in_flight = 0
        counts = core.in_flight()
        for q in core.queues.values():
            for k in rates:
                rates[k] += q.rates.get(k, 0.0)
            ready += q.ready_count() + q.disk
            in_flight += counts.get(q.name, 0)
        return {
            "kind": "broker", "id": b.cfg.id or core.broker_id, "broker": core.broker_id,
            "version": __version__, "endpoint": b.endpoint, "storage": b.cfg.storage,
            "time": round(time.time(), 3), "uptime_s": round(now - self.started, 3),
            "queues_total": len(core.queues), "peers_total": len(core.peers),
            "consumers_total": sum(len(q.subs) for q in core.queues.values()),
            "ready": ready, "in_flight": in_flight,
            "rates": {k: round(v, 1) for k, v in rates.items()},
            "latency_s": {"publish_confirm": self.confirm.quantiles(now),
                          "publish_deliver": self.deliver.quantiles(now),
                          "store_commit": self.commit.quantiles(now)},
            "counters": dict(core.counters),
            "store": {**core.store_stats(), **self.store_files()},
        }

    def queues(self) -> dict[str, Any]:
        core = self.broker.core
        counts = core.in_flight()
        now = time.monotonic()
        names = sorted(core.queues)[:STATS_SHOWN]
        return {"queues": [{"name": n, **core.queue_stats(core.queues[n], counts.get(n, 0), now)}
                           for n in names],
                "total": len(core.queues)}

    def queue(self, name: str) -> dict[str, Any] | None:
        core = self.broker.core
        q = core.queues.get(name)
        if q is None:
            return None
        stats = core.queue_stats(q, core.in_flight().get(name, 0), time.monotonic())
        return {"name": name, **stats, "redelivered": q.redelivered,
                "settings": q.settings.to_map(), "dead_letter_queue": q.dlq or None,
                "consumer_list": [c for c in self._consumers() if c["queue"] == name],
                "dead_letters": self._dead_of(core.queues.get(q.dlq)) if q.dlq else []}

    def consumers(self) -> dict[str, Any]:
        found = self._consumers()
        return {"consumers": found[:STATS_SHOWN], "total": len(found)}

    def _consumers(self) -> list[dict[str, Any]]:
        core = self.broker.core
        now = time.monotonic()
        out: list[dict[str, Any]] = []
        for identity, p in core.peers.items():
            for name, s in p.subs.items():
                out.append({"id": identity.hex(), "name": p.name, "queue": name,
                            "in_flight": s.window.in_flight - s.window.owed,
                            "credit": max(0, s.window.available), "active": s.active,
                            "held": len(p.held), "user": p.user,
                            "last_seen_s": round(now - p.last_seen, 3),
                            "state": _state(p)})
        out.sort(key=lambda c: (c["queue"], c["name"], c["id"]))
        return out

    def dead(self) -> dict[str, Any]:
        """The latest dead letters of every dead-letter queue that exists, newest first."""
        core = self.broker.core
        names = sorted({q.dlq for q in core.queues.values() if q.dlq} & set(core.queues))
        out: list[dict[str, Any]] = []
        total = 0
        for n in names:
            d = core.queues[n]
            total += d.ready_count() + d.disk
            out.extend(self._dead_of(d))
        return {"dead": out, "total": total}

    def _dead_of(self, d: Queue | None) -> list[dict[str, Any]]:
        if d is None:
            return []
        msgs: list[Msg] = []
        for pool in d.pools():  # the newest end of each lane, without copying the lane
            msgs.extend(itertools.islice(reversed(pool), DEAD_SHOWN))
        msgs.sort(key=lambda m: m.id, reverse=True)
        return [_dead_letter(d.name, m) for m in msgs[:DEAD_SHOWN]]

    def explain(self, mid: int) -> dict[str, Any]:
        from zq.manage.explain import explain

        core = self.broker.core
        return explain(core, mid, time.monotonic())

    def index(self) -> dict[str, Any]:
        return {"paths": ["/", "/metrics", "/health", "/api/overview", "/api/queues",
                          "/api/queues/NAME", "/api/consumers", "/api/dead",
                          "/api/messages/ID/explain"]}

    def table(self) -> dict[str, Any]:
        return {"/api": self.index, "/api/overview": self.overview, "/api/queues": self.queues,
                "/api/consumers": self.consumers, "/api/dead": self.dead}


def _state(p: Peer) -> str:
    return str(getattr(p.state, "name", p.state)).lower()


def _dead_letter(dlq: str, m: Msg) -> dict[str, Any]:
    h = m.headers or {}
    past = entries(h)
    last = past[-1] if past and isinstance(past[-1], dict) else {}
    n = last.get("attempt")  # an expired message never delivered: attempt 0
    return {"queue": dlq, "id": m.id, "origin": h.get(ORIGIN), "reason": h.get(REASON),
            "dead_at": h.get(DEAD_AT), "attempts": n if type(n) is int else len(past),
            "body_bytes": len(m.body)}
