from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import Proc, start_broker
from zq.client import context as zmq_context


@pytest.fixture(autouse=True)
def no_socket_left_open() -> Iterator[None]:
    """A test that closed its clients (and in-process brokers) leaves no ZeroMQ socket
    of the shared context open (checked after every other fixture's teardown)."""
    yield
    ctx = zmq_context._context
    if ctx is None or ctx.closed:
        return
    gc.collect()  # sockets nobody refers to any more are gone, not open
    left = [s for s in list(ctx._sockets) if not s.closed]
    for sock in left:
        sock.close(linger=0)  # so that the next test starts clean
    assert not left, f"{len(left)} ZeroMQ socket(s) left open: {left}"


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
