"""Helpers for the durability tests: a broker restartable on one endpoint and data
folder, reading its SQLite file from the side, and draining queues."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zq
from tests.helpers import eventually, free_endpoint
from tests.procs import Proc, start_broker

HEARTBEAT = "0.2"  # clients notice a killed broker within 3 heartbeats


class DurableBroker:
    """A sqlite broker that can be SIGKILLed and started again on the same
    endpoint and ``--data`` folder (``tmp/data``, as ``start_broker`` passes it)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.endpoint = free_endpoint()
        self.data = tmp / "data"
        self.db = self.data / "zq.db"
        self.proc: Proc | None = None
        self.args: tuple[str, ...] = ()

    async def start(self, *args: str) -> Proc:
        assert self.proc is None or self.proc.proc.returncode is not None, "already running"
        self.args = args or self.args
        self.proc = await start_broker(self.tmp, "--bind", self.endpoint,
                                       "--heartbeat", HEARTBEAT, *self.args)
        assert self.proc.endpoint == self.endpoint
        return self.proc

    def sigkill(self) -> None:
        """SIGKILL now, from synchronous code: waits for nothing."""
        assert self.proc is not None
        if self.proc.proc.returncode is None:
            # The child may already be reaped while asyncio has not yet set returncode.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def crash(self) -> None:
        """SIGKILL (if not already sent) and reap the process."""
        assert self.proc is not None
        self.sigkill()
        rc = await self.proc.wait(10)
        assert rc == -signal.SIGKILL, f"broker exited {rc} before it was killed; " \
                                      f"stderr:\n{self.proc.stderr()}"

    async def stop(self) -> None:
        assert self.proc is not None
        await self.proc.terminate_and_expect_exit(0, within=5.0)

    async def cleanup(self) -> None:
        if self.proc is not None and self.proc.proc.returncode is None:
            self.sigkill()
            await self.proc.wait(10)


# ------------------------------------------------------------------ the file


def read_db(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run a query on a fresh read-only connection: it sees every committed
    transaction, in the WAL too, and never checkpoints or changes the files."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def integrity(db: Path) -> str:
    rows = read_db(db, "PRAGMA integrity_check")
    return "\n".join(str(r[0]) for r in rows)


def snapshot(data: Path, dest: Path) -> Path:
    """Copy a stopped broker's database and WAL as they are (no -shm: SQLite
    rebuilds the WAL index); return the copy's database path."""
    dest.mkdir(parents=True)
    for name in ("zq.db", "zq.db-wal"):
        if (data / name).exists():
            shutil.copy2(data / name, dest / name)
    return dest / "zq.db"


def message_rows(db: Path) -> list[tuple[int, str, int, float, bytes]]:
    """(id, queue, attempts, ready_at, body) of every stored message, by id."""
    return [(int(r[0]), str(r[1]), int(r[2]), float(r[3]), bytes(r[4])) for r in read_db(
        db, "SELECT m.id, q.name, m.attempts, m.ready_at, m.body "
            "FROM messages m JOIN queues q USING (qid) ORDER BY m.id")]


# ------------------------------------------------------------------ waiting


async def wait_until(cond: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                     what: str = "condition", interval: float = 0.02) -> None:
    """Poll ``cond`` until it holds; fail after ``timeout`` seconds."""
    await eventually(cond, what, timeout, interval)


def queue_stats(stats: dict[str, Any], queue: str) -> dict[str, Any]:
    return dict(stats["queues"].get(queue, {"ready": 0, "in_flight": 0}))


async def queue_settled(client: zq.Client, queue: str) -> bool:
    """No message of ``queue`` is ready, in flight or delayed. A STATS reply is
    sent after the commit of the loop pass that received it, so acks sent before
    it are stored once this holds."""
    q = queue_stats(await client.stats(), queue)
    return q["ready"] == 0 and q["in_flight"] == 0 and q.get("delayed", 0) == 0


@dataclass(frozen=True, slots=True)
class Got:
    id: int
    body: bytes
    attempt: int
    at: float  # loop time of receipt


async def drain(endpoint: str, queue: str, expected: int, *, prefetch: int = 1000,
                timeout: float = 10.0) -> list[Got]:
    """Consume and ack ``expected`` messages of ``queue``, then check that the
    broker has nothing more for it (none ready, in flight or delayed)."""
    got: list[Got] = []
    loop = asyncio.get_running_loop()
    async with zq.Client(endpoint, name="drain") as c, \
            c.consume(queue, prefetch=prefetch) as consumer:
        while len(got) < expected:
            try:
                m = await consumer.get(timeout=timeout)
            except TimeoutError:
                raise AssertionError(
                    f"{queue}: got {len(got)} of {expected} messages, then none for "
                    f"{timeout}s; stats: {queue_stats(await c.stats(), queue)}") from None
            got.append(Got(m.id, m.body, m.attempt, loop.time()))
            await m.ack()
        await wait_until(lambda: queue_settled(c, queue), what=f"{queue} to be empty")
    return got
