from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.procs import Proc, start_broker


@pytest.fixture
async def broker_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Proc]]]:
    """Start brokers with extra flags; each must exit 0 on SIGTERM at teardown.

    ``env`` adds environment variables, e.g. ``{"ZQ_BROKER_MAX_FRAME": "65536"}``.
    """
    started: list[Proc] = []

    async def make(*args: str, env: dict[str, str] | None = None) -> Proc:
        proc = await start_broker(tmp_path, *args, env=env)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        if proc.proc.returncode is None:
            await proc.terminate_and_expect_exit(0, within=5.0)


@pytest.fixture
async def broker(broker_factory: Callable[..., Awaitable[Proc]]) -> Proc:
    """A broker on its defaults (memory storage), heartbeats every 0.5 s."""
    return await broker_factory("--heartbeat", "0.5")
