"""MANAGE ``cluster_config``: hand a broker a newer cluster file (``zq cluster reload``).

The command line reads the file and sends its content, so the broker core stays
without I/O; the broker takes it only if it is of its own cluster and not older
than the one it has (PROTOCOL.md section 17).
"""

from __future__ import annotations

from typing import Any

from zq.cluster.config import ClusterConfig
from zq.errors import InvalidArgument


def cluster_config(core: Any, args: dict[str, Any], now: float) -> dict[str, Any]:
    m = core.membership
    if m is None:
        raise InvalidArgument("this broker is not in a cluster (started without --cluster)")
    raw = args.get("config")
    if not isinstance(raw, dict):
        raise InvalidArgument("cluster_config needs 'config', the cluster file as a map")
    try:
        cfg = ClusterConfig.from_dict(raw)
    except ValueError as exc:
        raise InvalidArgument(f"cluster file not valid: {exc}") from None
    outcome = m.reload(cfg)
    return {"node": m.node, "version": m.cfg.version, "outcome": outcome}
