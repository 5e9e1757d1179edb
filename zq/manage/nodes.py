"""MANAGE ``node``: a work node (``zq node``) says what it runs; STATS shows the nodes.

A node reports every interval: its name, host, App and queues, its workers (number,
pid, state, restarts, last exit codes), its target and the last scaling decision with
its reason, its CPU and memory. The broker keeps the latest report of each node (at most
MAX_NODES, the longest silent dropped first) in memory; a node silent for three of its
intervals (at least 3 s) is shown as ``lost``.
"""

from __future__ import annotations

import math
from typing import Any

from zq.errors import InvalidArgument

MAX_NODES = 1_000
MAX_WORKERS = 1_000  # workers listed per node
_TEXT = 1_000  # octets of a reason or a name kept


def report(core: Any, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Keep node ``args["name"]``'s report (validated, bounded)."""
    name = args.get("name")
    if type(name) is not str or not 0 < len(name) <= 255:
        raise InvalidArgument("node: 'name' must be 1 to 255 characters")
    interval = args.get("interval", 1.0)
    if not isinstance(interval, int | float) or not math.isfinite(interval) or interval <= 0:
        raise InvalidArgument("node: 'interval' must be a positive number of seconds")
    workers = args.get("workers", [])
    if not isinstance(workers, list) or not all(isinstance(w, dict) for w in workers):
        raise InvalidArgument("node: 'workers' must be a list of maps")
    kept = {k: _short(v) for k, v in args.items() if k != "workers"}
    kept["workers"] = [{k: _short(v) for k, v in w.items()} for w in workers[:MAX_WORKERS]]
    nodes: dict[str, dict[str, Any]] = core.nodes
    nodes.pop(name, None)
    nodes[name] = {"report": kept, "seen": now, "interval": float(interval)}
    while len(nodes) > MAX_NODES:  # the oldest report first (dicts keep their order)
        del nodes[next(iter(nodes))]
    return {"node": name, "nodes": len(nodes)}


def _short(v: Any) -> Any:
    return v[:_TEXT] if isinstance(v, str) else v
