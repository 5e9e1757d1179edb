"""Helpers for the HA system tests: a replicated broker id served by two real nodes
(``zq broker --ha``) on a real etcd, producers that keep publishing through
failovers, and reading what each node stored."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aetcd

import zq
from tests.etcd import Etcd
from tests.helpers import eventually, free_port
from tests.procs import Proc, zq_argv
from tests.system.durability_helpers import read_db
from zq.errors import ZqError

BROKER = "B1"
PREFIX = f"/zq/zq/brokers/{BROKER}/".encode()


class HaPair:
    """Nodes ``n0`` and ``n1`` serving broker ``B1``, each on a fixed client port and
    its own data folder, restartable."""

    def __init__(self, tmp: Path, etcd: Etcd, *args: str, etcd_port: int | None = None,
                 ttl: int = 5) -> None:
        self.tmp = tmp
        self.etcd = etcd
        self.etcd_url = f"etcd://127.0.0.1:{etcd.port}"
        self.etcd_ports = [etcd_port or etcd.port, etcd.port]  # n0 may go through a relay
        self.ttl = ttl
        self.args = args
        self.ports = [free_port(), free_port()]
        self.endpoints = [f"tcp://127.0.0.1:{p}" for p in self.ports]
        self.procs: list[Proc | None] = [None, None]
        self.client: aetcd.Client = etcd.client()
        self.starts = 0

    def data(self, i: int) -> Path:
        return self.tmp / f"n{i}"

    async def start(self, i: int, *extra: str) -> Proc:
        self.starts += 1
        argv = zq_argv("--log-level", "info", "broker", "--id", BROKER, "--ha", f"etcd://127.0.0.1:{self.etcd_ports[i]}",
                       "--data", str(self.data(i)), "--bind", self.endpoints[i],
                       "--ha-node", f"n{i}", "--heartbeat", "0.2", "--ha-ttl", str(self.ttl),
                       *self.args, *extra)
        proc = await Proc.start(argv, self.tmp / f"n{i}.{self.starts}.log")
        assert await proc.ready_line(30) == self.endpoints[i]
        self.procs[i] = proc
        return proc

    async def start_both(self) -> None:
        """n0 first (it becomes primary), then n1, once it is in sync."""
        await self.start(0)
        await self.wait_leader("n0")
        await self.start(1)
        await self.wait_sync("n1")

    async def leader(self) -> str | None:
        got = await self.client.get(PREFIX + b"leader")
        return None if got is None else str(json.loads(got.value)["node"])

    async def term(self) -> int:
        got = await self.client.get(PREFIX + b"leader")
        return 0 if got is None else int(got.create_revision)

    async def sync(self) -> dict[str, Any]:
        got = await self.client.get(PREFIX + b"sync")
        return {} if got is None else dict(json.loads(got.value))

    async def wait_leader(self, node: str, timeout: float = 20.0) -> None:
        async def cond() -> bool:
            with contextlib.suppress(aetcd.ClientError):
                return await self.leader() == node
            return False
        await eventually(cond, f"{node} leads", timeout, 0.05)

    async def wait_sync(self, node: str | None, timeout: float = 30.0) -> None:
        async def cond() -> bool:
            with contextlib.suppress(aetcd.ClientError):
                return (await self.sync()).get("standby") == node
            return False
        await eventually(cond, f"sync names {node}", timeout, 0.05)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        assert proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    async def reap(self, i: int) -> int:
        proc = self.procs[i]
        assert proc is not None
        return await proc.wait(15)

    async def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.proc.returncode is None:
                self.kill(i, signal.SIGCONT)
                self.kill(i, signal.SIGKILL)
                await proc.wait(15)
        await self.client.close()

    def bodies(self, i: int, queue: str = "q") -> list[bytes]:
        """The bodies node ``i`` has stored in ``queue``, in id order."""
        return [bytes(r[0]) for r in read_db(
            self.data(i) / "zq.db", "SELECT m.body FROM messages m JOIN queues q USING (qid) "
                                    "WHERE q.name = ? ORDER BY m.id", (queue,))]

    def rows(self, i: int) -> list[tuple[int, bytes]]:
        return [(int(r[0]), bytes(r[1])) for r in read_db(
            self.data(i) / "zq.db", "SELECT id, body FROM messages ORDER BY id")]


class Producers:
    """``n`` clients, each publishing numbered bodies one after another to ``queue``
    through both endpoints, until stopped; every confirm is timed."""

    def __init__(self, endpoints: list[str], n: int = 4, queue: str = "q") -> None:
        self.endpoints = endpoints
        self.n = n
        self.queue = queue
        self.confirmed: dict[bytes, float] = {}  # body -> monotonic time of its confirm
        self.errors: list[tuple[float, str]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self.n)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def count(self) -> int:
        return len(self.confirmed)

    async def _run(self, i: int) -> None:
        async with zq.Client(self.endpoints, name=f"producer-{i}", connect_timeout=30) as c:
            k = 0
            while not self._stop.is_set():
                body = b"p%d-%d" % (i, k)
                k += 1
                try:
                    await c.publish(self.queue, body)
                except ZqError as exc:  # not confirmed: may or may not be stored
                    self.errors.append((time.monotonic(), f"{exc.name}: {exc}"))
                    await asyncio.sleep(0.05)
                    continue
                self.confirmed[body] = time.monotonic()

    def largest_gap(self, after: float, before: float) -> float:
        """The longest time without a confirm between ``after`` and ``before``."""
        times = sorted(t for t in self.confirmed.values() if after <= t <= before)
        if not times:
            return before - after
        edges = [after, *times, before]
        return max(b - a for a, b in itertools.pairwise(edges))


def check_stored(pair: HaPair, confirmed: dict[bytes, float], i: int) -> None:
    """Node ``i`` holds every confirmed body, each once."""
    stored = pair.bodies(i)
    twice = [b for b, n in Counter(stored).items() if n > 1]
    assert not twice, f"stored more than once on n{i}: {twice[:10]} ({len(twice)})"
    lost = set(confirmed) - set(stored)
    assert not lost, f"confirmed but not on n{i}: {sorted(lost)[:10]} ({len(lost)})"


async def same_rows(pair: HaPair, timeout: float = 20.0) -> None:
    """Both nodes hold the same messages (the standby has caught up)."""
    await eventually(lambda: pair.rows(0) == pair.rows(1), "both nodes hold the same rows",
                     timeout, 0.1)
