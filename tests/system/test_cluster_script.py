"""``scripts/cluster`` and the README's cluster commands, as a new user runs them."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
from pathlib import Path

from tests.helpers import eventually
from tests.procs import ROOT


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base(offsets: tuple[int, ...] = (1, 2, 3, 101, 102)) -> int:
    """A base port whose brokers (base+1..3) and routers (base+101..102) are all free."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 40_000, 10)
        if all(_free(base + d) for d in offsets):
            return base
    raise AssertionError("no free ports for a local cluster")


async def _zq(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "zq"), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env, cwd=str(ROOT))
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


async def test_scripts_cluster_starts_a_cluster_the_readme_commands_use(tmp_path: Path) -> None:
    base = _base()
    folder = tmp_path / "zq-cluster"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ZQ_ENDPOINT", None)
    log = (tmp_path / "script.log").open("wb")
    script = await asyncio.create_subprocess_exec(
        "bash", str(ROOT / "scripts" / "cluster"), str(folder), str(base),
        stdout=asyncio.subprocess.PIPE, stderr=log, env=env, cwd=str(ROOT),
        start_new_session=True)
    try:
        assert script.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):
            while not any(ln.startswith("cluster ready") for ln in lines):
                line = await script.stdout.readline()
                assert line, f"scripts/cluster ended early: {lines}"
                lines.append(line.decode().rstrip())
        assert [ln.split(":")[0] for ln in lines[:5]] == ["b1", "b2", "b3", "r1", "r2"]
        routers = f"tcp://127.0.0.1:{base + 101},tcp://127.0.0.1:{base + 102}"
        env["ZQ_ENDPOINT"] = routers
        rc, out = await _zq(env, "publish", "jobs", "hello")
        assert rc == 0, out
        rc, out = await _zq(env, "consume", "jobs", "--count", "1")
        assert rc == 0, out
        assert "hello" in out
        rc, out = await _zq(env, "cluster", "status", "--cluster", str(folder / "cluster.toml"),
                            "--router", f"tcp://127.0.0.1:{base + 101}")
        assert rc == 0, out
        assert out.count(" up ") >= 3, out
        assert "DOWN" not in out
    finally:
        os.killpg(script.pid, signal.SIGTERM)
        rc = await asyncio.wait_for(script.wait(), 30)
        log.close()
    assert rc in (0, 143, -signal.SIGTERM), rc

    def group_gone() -> bool:
        try:
            os.killpg(script.pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(group_gone, "every node of the cluster to stop", 15)


async def test_scripts_cluster_ha_starts_replicated_brokers_behind_a_router(
        tmp_path: Path) -> None:
    """``scripts/cluster --ha``: etcd, two broker ids each served by a primary and a
    standby in sync, a router that follows the primaries; the commands it prints work
    (a failover behind a router: tests/system/test_ha_router.py)."""
    base = _base((1, 2, 11, 12, 90, 91, 101))
    folder = tmp_path / "zq-cluster-ha"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ZQ_ENDPOINT", None)
    log = (tmp_path / "script.log").open("wb")
    script = await asyncio.create_subprocess_exec(
        "bash", str(ROOT / "scripts" / "cluster"), "--ha", str(folder), str(base),
        stdout=asyncio.subprocess.PIPE, stderr=log, env=env, cwd=str(ROOT),
        start_new_session=True)
    try:
        assert script.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(90):
            while not any(ln.startswith("Ctrl-C") for ln in lines):
                line = await script.stdout.readline()
                assert line, f"scripts/cluster --ha ended early: {lines}"
                lines.append(line.decode().rstrip())
        assert [ln.split(":")[0] for ln in lines[:5]] == ["b1a", "b1b", "b2a", "b2b", "r1"]
        status = next(ln for ln in lines if "zq cluster status" in ln).split()[1:]
        env["ZQ_ENDPOINT"] = f"tcp://127.0.0.1:{base + 101}"
        rc, out = await _zq(env, "publish", "jobs", "hello")
        assert rc == 0, out

        async def in_sync() -> bool:
            rc, out = await _zq(env, *status)
            return rc == 0 and out.count("in sync, mode sync, lag 0") == 2

        await eventually(in_sync, "both brokers' standbys in sync", 20, 0.2)
        rc, out = await _zq(env, "consume", "jobs", "--count", "1")
        assert rc == 0, out
        assert "hello" in out
    finally:
        os.killpg(script.pid, signal.SIGTERM)
        rc = await asyncio.wait_for(script.wait(), 30)
        log.close()
    assert rc in (0, 143, -signal.SIGTERM), rc
