from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import zmq.asyncio

from tests.etcd import Etcd
from tests.system.rawpeer import Raw


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[str], Raw]]:
    """Make raw DEALER sockets; all are closed (linger 0) and the context terminated."""
    ctx = zmq.asyncio.Context()
    made: list[Raw] = []

    def make(endpoint: str) -> Raw:
        r = Raw(ctx, endpoint)
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()
        ctx.term()


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[Etcd]:
    """A real etcd (Debian's etcd-server) on free loopback ports, for the HA tests."""
    server = await Etcd(tmp_path / "etcd").start()
    yield server
    await server.stop()
