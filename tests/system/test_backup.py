"""``zq backup`` of a running broker, restored: every message confirmed before the
backup began is in the copy, none is corrupted or stored twice, and the broker served
publishes all along and still has all of its own.

Counted as the durability tests count (tests/system/test_durability.py): lost,
unexpected and duplicated messages, for the restored copy and for the first broker.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import zq
from tests.procs import Proc, start_broker, zq_argv
from tests.system.durability_helpers import drain, queue_stats

QUEUE = "backup"
BEFORE = 5_000  # messages confirmed before the backup starts
BATCH = 100
BACKGROUND_BATCH = 20
SUMMARY = re.compile(r"^backed up .+ to .+: (\d+) bytes, (\d+) messages, [0-9.]+ s$")


def make_body(kind: str, i: int) -> bytes:
    """A body whose every byte follows from (kind, i): a damaged one does not parse."""
    head = f"{kind}-{i:07d}-".encode()
    return head + bytes((i + k) % 251 for k in range(500 - len(head)))


def parse_body(body: bytes) -> tuple[str, int] | None:
    kind, _, rest = body.partition(b"-")
    try:
        i = int(rest[:7])
        decoded = (kind.decode(), i)
    except ValueError:
        return None
    return decoded if make_body(*decoded) == body else None


class Background:
    """Publishes batches to the broker until stopped, recording what was confirmed and
    when the first confirm came."""

    def __init__(self, client: zq.Client) -> None:
        self.client = client
        self.attempted: set[bytes] = set()
        self.confirmed: list[bytes] = []
        self.first = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            bodies = [make_body("bg", i + k) for k in range(BACKGROUND_BATCH)]
            i += BACKGROUND_BATCH
            self.attempted.update(bodies)
            await self.client.publish_many(QUEUE, bodies)
            self.confirmed += bodies
            self.first.set()


def count(got: list[bytes], must: set[bytes], may: set[bytes]) -> tuple[int, int, int, int]:
    """(lost, unexpected, duplicated, corrupted) of ``got`` against the bodies that must
    be there and those that may be."""
    corrupted = sum(parse_body(b) is None for b in got)
    lost = len(must - set(got))
    unexpected = len(set(got) - must - may)
    return lost, unexpected, len(got) - len(set(got)), corrupted


async def run_backup(data: Path, dest: Path) -> int:
    """Run ``zq backup`` as a process; return how many messages it reported."""
    proc = await asyncio.create_subprocess_exec(
        *zq_argv("backup", "--data", str(data), "--pages-per-step", "16", str(dest)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, f"zq backup exited {proc.returncode}: {err.decode()}"
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got {text!r}"
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    return int(match.group(2))


async def consume_all(proc: Proc) -> list[bytes]:
    async with zq.Client(proc.endpoint, name="counter") as c:
        ready = queue_stats(await c.stats(), QUEUE)["ready"]
    return [g.body for g in await drain(proc.endpoint, QUEUE, ready, timeout=20)]


async def test_a_backup_taken_under_load_restores_every_confirmed_message(
        tmp_path: Path) -> None:
    first = await start_broker(tmp_path)
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    second: Proc | None = None
    try:
        before = [make_body("pre", i) for i in range(BEFORE)]
        async with zq.Client(first.endpoint, name="producer") as c:
            for at in range(0, BEFORE, BATCH):
                await c.publish_many(QUEUE, before[at:at + BATCH])
            bg = Background(c)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(bg.run())
                async with asyncio.timeout(10):
                    await bg.first.wait()
                confirmed_at_start = set(before) | set(bg.confirmed)
                n_at_start = len(bg.confirmed)
                reported = await run_backup(tmp_path / "data", restored_dir / "data")
                n_during = len(bg.confirmed) - n_at_start
                bg.stop.set()
        assert n_during > 0, "the broker confirmed nothing while the backup ran"
        assert (restored_dir / "data" / "zq.db").exists()
        assert not (restored_dir / "data" / "zq.lock").exists()

        second = await start_broker(restored_dir)
        got = await consume_all(second)
        assert len(got) == reported, "the restored broker holds what the backup counted"
        attempted = set(before) | bg.attempted
        lost, unexpected, duplicated, corrupted = count(got, confirmed_at_start, attempted)
        assert (lost, unexpected, duplicated, corrupted) == (0, 0, 0, 0), (
            f"restored: lost {lost}, unexpected {unexpected}, duplicated {duplicated}, "
            f"corrupted {corrupted} of {len(got)}")

        # The first broker served on and kept everything it confirmed.
        mine = await consume_all(first)
        lost, unexpected, duplicated, corrupted = count(
            mine, set(before) | set(bg.confirmed), attempted)
        assert (lost, unexpected, duplicated, corrupted) == (0, 0, 0, 0), (
            f"first broker: lost {lost}, unexpected {unexpected}, duplicated {duplicated}, "
            f"corrupted {corrupted} of {len(mine)}")
        await second.terminate_and_expect_exit(0)
        await first.terminate_and_expect_exit(0)
    finally:
        for proc in (first, second):
            if proc is not None:
                await proc.kill()
    conn = sqlite3.connect(f"file:{restored_dir / 'data' / 'zq.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


async def test_backup_of_a_folder_that_is_not_a_brokers_exits_1(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *zq_argv("backup", "--data", str(tmp_path), str(tmp_path / "copy")),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 1
    assert out == b""
    assert err.decode().splitlines() == [
        f"Error: {tmp_path} holds no zq.db: not a zq broker's data folder (a broker with "
        f"--storage memory keeps nothing to back up)"]
