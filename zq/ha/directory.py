"""Where each replicated broker id's primary is now, from etcd, for whoever links to it.

A router (and a replicated broker in a cluster, for its MOVED answers) runs on its
cluster file, whose entry for a broker id names one endpoint; when that id is served
by a pair of nodes (``zq broker --ha``), the endpoint that counts is the current
primary's, which etcd's ``leader`` key holds. :class:`Directory` reads every leader
key under ``/zq/<cluster>/brokers/`` once, then follows them with an etcd watch,
and calls ``on_change`` with ``{broker id: endpoint}`` each time a primary changes
(and again after etcd was lost and is back). :func:`with_leaders` is the cluster file
as it then is: each replicated id's entry pointing at its primary. A broker id whose
leader key is missing keeps its cluster file endpoint (not replicated, or between
two primaries).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import aetcd

from zq.cluster.config import ClusterConfig

log = logging.getLogger("zq.ha")

RETRY = 1.0  # seconds before following etcd again after it failed


def with_leaders(cfg: ClusterConfig, leaders: dict[str, str]) -> ClusterConfig:
    """``cfg`` with each broker's endpoint its primary's where ``leaders`` names one
    (the same object when nothing changes). ValueError if that makes two brokers share
    an endpoint (a node of one id given as another id's endpoint)."""
    brokers = tuple(b if leaders.get(b.id, b.endpoint) == b.endpoint
                    else dataclasses.replace(b, endpoint=leaders[b.id]) for b in cfg.brokers)
    if brokers == cfg.brokers:
        return cfg
    return dataclasses.replace(cfg, brokers=brokers)


def parse(prefix: bytes, kvs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """``{broker id: endpoint}`` from the ``.../brokers/<id>/leader`` keys among ``kvs``."""
    out: dict[str, str] = {}
    for key, value in kvs:
        rest = key[len(prefix):] if key.startswith(prefix) else b""
        bid, _, name = rest.decode(errors="replace").partition("/")
        if name != "leader" or not bid:
            continue
        try:
            endpoint = json.loads(value)["endpoint"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(endpoint, str) and "://" in endpoint:
            out[bid] = endpoint
    return out


async def snapshot(client: aetcd.Client, cluster: str) -> dict[str, dict[str, Any]]:
    """What etcd says of every broker id of ``cluster``: ``{id: {"leader": {node,
    endpoint, term}, "sync": {standby, term, primary}}}`` (either may be missing)."""
    prefix = f"/zq/{cluster}/brokers/".encode()
    got = await asyncio.wait_for(client.get_prefix(prefix), 5.0)
    out: dict[str, dict[str, Any]] = {}
    for kv in got:
        bid, _, name = kv.key[len(prefix):].decode(errors="replace").partition("/")
        if name not in ("leader", "sync") or not bid:
            continue
        try:
            value = json.loads(kv.value)
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        if name == "leader":
            value = {"node": value.get("node"), "endpoint": value.get("endpoint"),
                     "term": int(kv.create_revision)}
        out.setdefault(bid, {})[name] = value
    return out


class Directory:
    """Follows the primaries of every broker id of one HA cluster name in etcd."""

    def __init__(self, client: aetcd.Client, cluster: str,
                 on_change: Callable[[dict[str, str]], None]) -> None:
        self.client = client
        self.prefix = f"/zq/{cluster}/brokers/".encode()
        self.on_change = on_change
        self.leaders: dict[str, str] = {}
        self.reads = 0

    async def run(self) -> None:
        """Until cancelled: read all, watch, read again after any change or failure."""
        while True:
            try:
                await self._follow()
            except (aetcd.ClientError, TimeoutError, OSError) as exc:
                log.warning("following the primaries in etcd failed (%s); again in %g s",
                            type(exc).__name__, RETRY)
            await asyncio.sleep(RETRY)

    async def read(self) -> int:
        """Read every leader key; report a change. Returns etcd's revision."""
        got = await asyncio.wait_for(self.client.get_prefix(self.prefix), 5.0)
        self.reads += 1
        leaders = parse(self.prefix, [(kv.key, kv.value) for kv in got])
        if leaders != self.leaders:
            self.leaders = leaders
            self.on_change(dict(leaders))
        return int(got.header.revision) if got.header is not None else 0

    async def _follow(self) -> None:
        revision = await self.read()
        watch = await self.client.watch_prefix(self.prefix, start_revision=revision + 1)
        try:
            async for _event in watch:
                await self.read()
        finally:
            await watch.cancel()
