"""examples/pipeline runs as its README says: ingest -> enrich -> a stream read by two
groups, one of which replays from the start (issue 17, the docs' example)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.procs import ROOT, Proc, start_broker

N = 20


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "examples.pipeline", *args]


async def _step(tmp: Path, endpoint: str, *args: str) -> str:
    """Run one step to its end; its output."""
    p = await asyncio.create_subprocess_exec(
        *_argv(*args), cwd=ROOT, env=_env(endpoint), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), 60)
    assert p.returncode == 0, out.decode()
    return out.decode()


def _env(endpoint: str) -> dict[str, str]:
    return {**os.environ, "ZQ_ENDPOINT": endpoint}


async def test_the_pipeline_enriches_bills_and_audits_every_order_and_replays(
        tmp_path: Path) -> None:
    broker = await start_broker(tmp_path)
    procs: list[Proc] = []
    try:
        assert "stream orders: declared" in await _step(tmp_path, broker.endpoint, "setup")
        for step in ("enrich", "billing"):
            p = await Proc.start(_argv(step, "-n", str(N)), tmp_path / f"{step}.log",
                                 {"ZQ_ENDPOINT": broker.endpoint})
            procs.append(p)
            await p.wait_for_line("READY", 20)
        await _step(tmp_path, broker.endpoint, "ingest", "-n", str(N))
        billed = [await procs[1].wait_for_line("billed order", 30) for _ in range(N)]
        for p in procs:
            assert await p.wait(30) == 0
        assert sorted(int(line.split()[2].rstrip(":")) for line in billed) == list(range(N))
        audit = await _step(tmp_path, broker.endpoint, "audit", "--idle", "1")
        lines = [x for x in audit.splitlines() if x.startswith("audit offset")]
        assert len(lines) == N
        offsets = [int(x.split()[2].rstrip(":")) for x in lines]
        assert offsets == sorted(offsets)
        again = await _step(tmp_path, broker.endpoint, "audit", "--idle", "0.5")
        assert "audit offset" not in again  # caught up: nothing new
        replay = await _step(tmp_path, broker.endpoint, "audit", "--idle", "1", "--replay")
        assert [x for x in replay.splitlines() if x.startswith("audit offset")] == lines
    finally:
        for p in procs:
            if p.proc.returncode is None:
                await p.kill()
        await broker.terminate_and_expect_exit(0, within=10)
