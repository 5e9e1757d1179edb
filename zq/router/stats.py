"""The STATS_REPLY map of a router: its cluster file, each link's state, its counters. No I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zq.router.state import Link, RouterState


def _ago(now: float, then: float | None) -> float | None:
    return None if then is None else round(now - then, 3)


def link_stats(link: Link, now: float) -> dict[str, Any]:
    return {"state": link.state, "endpoint": link.endpoint, "process": link.process,
            "up_since_s": _ago(now, link.up_since), "last_heard_s": _ago(now, link.last_heard),
            "forwarded_in": link.forwarded_in, "forwarded_out": link.forwarded_out,
            "errors": link.errors, "queues": len(link.catalog)}


def router_stats(state: RouterState, now: float) -> dict[str, Any]:
    """``{router, cluster: {id, version}, links: {broker id: {...}}, clients, counters}``."""
    return {"router": state.cfg.id,
            "cluster": {"id": state.cluster.cluster_id, "version": state.cluster.version},
            "links": {bid: link_stats(link, now) for bid, link in state.links.items()},
            "clients": len(state.clients),
            "uptime_s": round(now - state.started, 3),
            "counters": dict(state.counters),
            "security": {**state.security_stats(),
                         "sessions_per_key": {k: n for k, n in state.per_key.items()
                                              if k is not None}}}
