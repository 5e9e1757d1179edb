"""A router's JSON views for the admin listener: the cluster as it sees it (each
broker's link and the queues it serves), its clients and counters. No I/O.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from zq import __version__
from zq.core.state import STATS_SHOWN
from zq.router.stats import link_stats, router_stats

if TYPE_CHECKING:
    from zq.router.process import Router


class RouterViews:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.ready = False

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Ready once the router announced it; the links that are up, for a check that
        wants more than the process (it serves the brokers that are up either way)."""
        links = self.router.core.links.values()
        return self.ready, {"kind": "router", "id": self.router.cfg.id,
                            "links_up": sum(1 for k in links if k.state == "up"),
                            "links_total": len(links)}

    def overview(self) -> dict[str, Any]:
        core = self.router.core
        now = time.monotonic()
        links = core.links
        return {"kind": "router", "id": core.cfg.id, "version": __version__,
                "endpoint": self.router.endpoint, "time": round(time.time(), 3),
                "uptime_s": round(now - core.started, 3),
                "cluster": {"id": core.cluster.cluster_id, "version": core.cluster.version},
                "clients": len(core.clients), "counters": dict(core.counters),
                "links_up": sum(1 for k in links.values() if k.state == "up"),
                "links_total": len(links),
                "queues_total": sum(len(k.catalog) for k in links.values())}

    def cluster(self) -> dict[str, Any]:
        core = self.router.core
        now = time.monotonic()
        out = router_stats(core, now)
        out["brokers"] = {
            bid: {**link_stats(link, now), "in_flight_publishes": link.in_flight_publishes,
                  "held_frames": len(link.held),
                  "queue_names": sorted(n.decode("utf-8", "replace")
                                        for n in link.catalog)[:STATS_SHOWN]}
            for bid, link in sorted(core.links.items())}
        return out

    def queues(self) -> dict[str, Any]:
        """The queues each broker serves (their figures are on that broker's listener)."""
        rows = [{"name": n.decode("utf-8", "replace"), "broker": bid}
                for bid, link in sorted(self.router.core.links.items()) for n in link.catalog]
        rows.sort(key=lambda r: (r["name"], r["broker"]))
        return {"queues": rows[:STATS_SHOWN], "total": len(rows)}

    def table(self) -> dict[str, Any]:
        return {"/api": lambda: {"paths": ["/", "/metrics", "/health", "/api/overview",
                                           "/api/cluster", "/api/queues"]},
                "/api/overview": self.overview, "/api/cluster": self.cluster,
                "/api/queues": self.queues}
