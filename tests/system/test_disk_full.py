"""A real full disk: an 8 MiB tmpfs under the broker's data folder.

Issue 10, acceptance 3. ``--max-db-bytes`` makes SQLite refuse to grow the file
while the disk keeps room for its log; a full filesystem is harsher: even a
transaction that only deletes needs room for its write-ahead log, so before the
disk reserve acks failed too, every request waiting for a commit hung, and a
restart could fail. Here, on a tmpfs made in a mount namespace of its own (as
root, with ``unshare``; brokers enter it with ``nsenter``):

* publishing until refused gives STORAGE_FULL, nothing else;
* acks and admin calls answer within a second, and once acks have freed space
  publishing resumes within 5 s;
* three restarts on the full disk (clean and SIGKILL) all start and serve
  consumers;
* lost = 0, unexpected = 0, duplicated = 0 over every confirmed message.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import zq
from tests.helpers import free_endpoint
from tests.procs import Proc, zq_argv
from tests.system.durability_helpers import HEARTBEAT, wait_until

BODY = 1024


def body(i: int) -> bytes:
    return f"fill-{i:08d}-".encode().ljust(BODY, b".")


def index(b: bytes) -> int:
    return int(b.split(b"-")[1])


class Disk:
    """An 8 MiB tmpfs at ``path`` in a mount namespace held open by a sleeping process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.holder: subprocess.Popen[bytes] | None = None

    def mount(self, size: str = "8m") -> None:
        if os.geteuid() != 0:
            pytest.skip("needs root to mount a tmpfs in a mount namespace")
        for tool in ("unshare", "nsenter", "mount"):
            assert shutil.which(tool), f"{tool} (util-linux) is needed for this test"
        self.path.mkdir(parents=True)
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o size={size} tmpfs '{self.path}' && echo mounted "
             f"&& exec sleep 3600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != b"mounted":
            err = self.holder.stderr.read().decode() if self.holder.stderr else ""
            raise AssertionError(f"the kernel refused the tmpfs: {err.strip()}")

    def argv(self, *args: str) -> list[str]:
        """``args`` run inside the namespace that sees the tmpfs."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", *args]

    def unmount(self) -> None:
        if self.holder is not None:
            self.holder.kill()  # the namespace, and the tmpfs with it, go away
            self.holder.wait()


class FullBroker:
    def __init__(self, tmp: Path, disk: Disk) -> None:
        self.tmp = tmp
        self.disk = disk
        self.endpoint = free_endpoint()
        self.proc: Proc | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        argv = self.disk.argv(*zq_argv("--log-level", "info", "broker", "--bind", self.endpoint,
                                       "--data", str(self.disk.path / "data"),
                                       "--heartbeat", HEARTBEAT))
        self.proc = await Proc.start(argv, self.tmp / f"broker{self.starts}.log")
        await self.proc.ready_line(timeout=20)

    async def stop(self, how: str) -> None:
        assert self.proc is not None
        if how == "sigkill":
            self.proc.signal(signal.SIGKILL)
            assert await self.proc.wait(10) == -signal.SIGKILL
        else:
            await self.proc.terminate_and_expect_exit(0, within=10)

    async def cleanup(self) -> None:
        if self.proc is not None:
            await self.proc.kill()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[FullBroker]:
    disk = Disk(tmp_path / "disk")
    b = FullBroker(tmp_path, disk)
    try:
        disk.mount()
        yield b
    finally:
        await b.cleanup()
        disk.unmount()


async def fill(c: zq.Client, start: int, confirmed: dict[int, int]) -> int:
    """Publish 100 at a time until the broker refuses; record each confirm. Returns the
    next unused index. Every refusal must be STORAGE_FULL."""
    i = start
    while True:
        results = await asyncio.gather(*(c.publish("fill", body(k)) for k in range(i, i + 100)),
                                       return_exceptions=True)
        refused = 0
        for k, r in zip(range(i, i + 100), results, strict=True):
            if isinstance(r, BaseException):
                assert isinstance(r, zq.StorageFull), repr(r)
                refused += 1
            else:
                confirmed[k] = r
        i += 100
        if refused:
            return i
        assert i - start < 20_000, "the disk never filled"


async def timed(call: asyncio.Future[object] | object, within: float = 1.0) -> object:
    async with asyncio.timeout(within):
        return await call  # type: ignore[misc]


async def test_a_full_disk_refuses_publishes_keeps_serving_and_loses_nothing(
        node: FullBroker) -> None:
    await node.start()
    confirmed: dict[int, int] = {}  # index -> id
    acked: set[int] = set()
    async with zq.Client(node.endpoint, name="t") as c:
        nxt = await fill(c, 0, confirmed)
        assert len(confirmed) > 1000, "the tmpfs filled before the broker stored much"
        st = (await timed(c.stats()))["store"]  # type: ignore[index]
        assert st.get("full") is True  # publishes are now refused without being tried

        # Acks and admin calls answer within a second; then publishing resumes.
        async with c.consume("fill", prefetch=100) as con:
            for _ in range(len(confirmed) // 3):
                m = await timed(con.get(timeout=1))
                assert isinstance(m, zq.Message)
                await timed(m.ack(wait=True))
                acked.add(index(m.body))
        await timed(c.queue_info("fill"))
        await timed(c.declare_queue("fill", max_attempts=7))
        await timed(c.sync())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            try:
                confirmed[nxt] = await c.publish("fill", body(nxt))
                nxt += 1
                break
            except zq.StorageFull:
                assert loop.time() - t0 < 5.0, "publishing did not resume within 5 s"
                await asyncio.sleep(0.1)
        nxt = await fill(c, nxt, confirmed)  # and full again

    # Three restarts on the full disk: each starts and serves a consumer.
    for how in ("sigterm", "sigkill", "sigterm"):
        await node.stop(how)
        await node.start()
        async with zq.Client(node.endpoint, name="r") as c, \
                c.consume("fill", prefetch=1) as con:
            m = await con.get(timeout=5)
            await timed(m.ack(wait=True))
            acked.add(index(m.body))

    # Count what the store gives back: lost, unexpected, duplicated.
    seen: list[int] = []
    async with zq.Client(node.endpoint, name="drain") as c:
        async with c.consume("fill", prefetch=500) as con:
            while len(seen) < len(confirmed) - len(acked):
                try:
                    m = await con.get(timeout=5)
                except TimeoutError:
                    break
                seen.append(index(m.body))
                await m.ack()
        await wait_until(lambda: _empty(c), what="the queue to drain")
    lost = set(confirmed) - acked - set(seen)
    unexpected = set(seen) - set(confirmed)
    duplicated = len(seen) - len(set(seen)) + len(set(seen) & acked)
    assert (len(lost), len(unexpected), duplicated) == (0, 0, 0), (
        f"lost {sorted(lost)[:10]}, unexpected {sorted(unexpected)[:10]}")
    await node.stop("sigterm")
    assert sys.platform.startswith("linux")


@pytest.mark.parametrize("size", ["8m", "3m", "2m"])
async def test_draining_a_full_disk_at_full_speed_stores_every_ack(
        tmp_path: Path, size: str) -> None:
    """The hostile check's case: a consumer with prefetch 500 acks as fast as it can,
    so each commit would delete hundreds of rows, more write-ahead log than a nearly
    full disk holds. The acks go in small transactions; publishing resumes; after a
    restart, nothing acked comes back and nothing confirmed is missing."""
    disk = Disk(tmp_path / "disk")
    node = FullBroker(tmp_path, disk)
    try:
        disk.mount(size)
        await node.start()
        confirmed: dict[int, int] = {}
        async with zq.Client(node.endpoint, name="t") as c:
            nxt = await fill(c, 0, confirmed)
            acked: set[int] = set()
            async with c.consume("fill", prefetch=500) as con:
                while len(acked) < len(confirmed):
                    m = await con.get(timeout=5)
                    acked.add(index(m.body))
                    await m.ack()
            await _stored(c)  # every ack stored (a sync refused until then)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            while True:
                try:
                    confirmed[nxt] = await c.publish("fill", body(nxt))
                    break
                except zq.StorageFull:
                    assert loop.time() - t0 < 5.0, "publishing did not resume within 5 s"
                    await asyncio.sleep(0.1)
        await node.stop("sigkill")
        await node.start()
        async with zq.Client(node.endpoint, name="after") as c, \
                c.consume("fill", prefetch=10) as con:
            m = await con.get(timeout=5)
            assert index(m.body) == nxt  # only the one published after the drain
            await m.ack(wait=True)
            with pytest.raises(TimeoutError):
                await con.get(timeout=0.5)  # and no acked message came back
        await node.stop("sigterm")
    finally:
        await node.cleanup()
        disk.unmount()


async def _stored(c: zq.Client, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        try:
            await timed(c.sync())
            return
        except zq.StorageFull:
            assert loop.time() - t0 < within, "the acks were not stored"
            await asyncio.sleep(0.1)


async def _empty(c: zq.Client) -> bool:
    q = (await c.stats())["queues"].get("fill", {})
    return not (q.get("ready") or q.get("in_flight") or q.get("delayed"))
