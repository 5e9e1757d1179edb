"""What many tests need: loopback ports, and waiting for a condition (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port that nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


async def eventually(cond: Callable[[], Awaitable[bool] | bool], what: str,
                     timeout: float = 10.0, step: float = 0.01) -> float:
    """Poll ``cond`` (sync or async) until it holds; return the seconds it took. Fail
    after ``timeout`` seconds, naming ``what`` was awaited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        ok = cond()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


def install_distribution(root: Path, package: Path, entry_points: dict[str, str]
                         ) -> dict[str, str]:
    """``package`` (a folder) as an installed distribution in ``root/site``: the package
    and a dist-info whose entry points are ``entry_points`` (name -> "module:attr") in
    the ``zq.policies`` group; the environment that puts it on a child's path."""
    name = package.name
    site = root / "site"
    shutil.copytree(package, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[zq.policies]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(site) + (os.pathsep + path if path else "")}


def markdown_table(lines: list[str], header: str) -> list[list[str]]:
    """The rows (cells stripped) of the one Markdown table among ``lines`` whose header
    line is ``header``; fails unless there is exactly one and every row has its cells."""
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    assert len(starts) == 1, f"expected exactly one table headed {header!r}"
    rows: list[list[str]] = []
    for line in lines[starts[0] + 2:]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == header.count("|") - 1, f"bad row: {line!r}"
        rows.append(cells)
    return rows
