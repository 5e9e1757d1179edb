"""A clustered broker's view of its cluster: which new queue names are its own. No I/O.

A broker in a cluster (``zq broker --cluster FILE --id NAME``) is the only authority
on the queues it has. A name it does not have becomes its queue only if the cluster
file places the name on it (PROTOCOL.md section 17.1) and the router that forwarded
the frame, if any, placed it with the same version of the file; otherwise the frame
is refused with MOVED (it goes elsewhere) or STALE_CONFIG (the versions differ). That
check, here at the store, is what keeps two routers with different views from
creating one queue on two brokers.
"""

from __future__ import annotations

from typing import Any

from zq.cluster.config import ClusterConfig
from zq.cluster.placement import place
from zq.errors import ClusterMismatch, Moved, StaleConfig, ZqError


class Membership:
    """This broker's id and the cluster file it runs under (replaced on reload)."""

    def __init__(self, cfg: ClusterConfig, node: str) -> None:
        if cfg.broker(node) is None:
            raise ValueError(f"broker id {node!r} is not in the cluster file "
                             f"(brokers: {', '.join(cfg.ids)})")
        self.cfg = cfg
        self.node = node

    def reload(self, cfg: ClusterConfig) -> str:
        """Take a newer file; returns what happened, for the log."""
        if cfg.cluster_id != self.cfg.cluster_id:
            return f"ignored: cluster_id {cfg.cluster_id!r} is not {self.cfg.cluster_id!r}"
        if cfg.version < self.cfg.version:
            return f"ignored: version {cfg.version} is older than {self.cfg.version}"
        if cfg.broker(self.node) is None:
            return f"ignored: broker {self.node!r} is not in version {cfg.version}"
        self.cfg = cfg
        return f"now on version {cfg.version}"

    def welcome(self) -> dict[str, Any]:
        """The ``cluster`` map of this broker's WELCOME."""
        return {"id": self.cfg.cluster_id, "version": self.cfg.version, "node": self.node,
                "role": "broker"}

    def check_link(self, link: dict[str, Any]) -> ZqError | None:
        """A router's HELLO ``link``: None if it is in this cluster."""
        if link.get("cluster") != self.cfg.cluster_id:
            return ClusterMismatch(f"this broker is in cluster {self.cfg.cluster_id!r}, "
                                   f"not {link.get('cluster')!r}")
        return None

    def where(self, name: str) -> dict[str, Any]:
        """Where a new queue ``name`` goes: ``{queue, broker, endpoint, version}``."""
        owner = place(name, self.cfg)
        entry = self.cfg.broker(owner)
        return {"queue": name, "broker": owner, "endpoint": entry.endpoint if entry else "",
                "version": self.cfg.version}

    def refuse_new(self, name: str, version: int | None) -> ZqError | None:
        """Why this broker must not create queue ``name`` for a frame placed with cluster
        file ``version`` (None: a client that came directly), or None if it may."""
        if version is not None and version != self.cfg.version:
            return StaleConfig(
                f"the router placed {name!r} with cluster file version {version}; this "
                f"broker has version {self.cfg.version}",
                info={"version": self.cfg.version, "config": self.cfg.to_dict()})
        info = self.where(name)
        if info["broker"] == self.node:
            return None
        return Moved(f"queue {name!r} belongs on broker {info['broker']} at "
                     f"{info['endpoint']}", info=info)

    def location(self, name: str, exists: bool) -> dict[str, Any]:
        """The LOCATION map for ``name``: here if this broker has it, else its placement."""
        if exists:
            entry = self.cfg.broker(self.node)
            return {"queue": name, "broker": self.node,
                    "endpoint": entry.endpoint if entry else "", "version": self.cfg.version,
                    "exists": True}
        return {**self.where(name), "exists": False}
