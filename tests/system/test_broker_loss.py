"""Clients notice a dead broker by heartbeats and resume when one comes back."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

import zq
from tests.procs import Proc, start_broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_killed_broker_is_detected_then_client_resumes(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    hb = 0.2
    first: Proc | None = await start_broker(tmp_path, "--bind", endpoint, "--heartbeat", str(hb))
    second: Proc | None = None
    try:
        async with zq.Client(endpoint) as c:
            await c.publish("q", b"before")
            async with c.consume("q", prefetch=5) as consumer:
                assert (await consumer.get(timeout=5)).body == b"before"
                loop = asyncio.get_running_loop()
                assert first is not None
                first.signal(signal.SIGSTOP)  # silent, connection still open
                t0 = loop.time()
                with pytest.raises(zq.ConnectionLost, match="silent"):
                    await consumer.get(timeout=10)
                assert loop.time() - t0 <= 3 * hb + 1.0
                with pytest.raises(zq.ConnectionLost):
                    await c.publish("q", b"while down")
                await first.kill()
                first = None
                # a new broker on the same endpoint: the client opens a new session by itself
                second = await start_broker(tmp_path, "--bind", endpoint, "--heartbeat", str(hb))
                assert not c.connected
                await c.wait_connected(timeout=10)
                mid = await c.publish("q", b"after")
                assert mid == 2  # the store kept "before" and the ids it has used
                # The consumer got its credit back with the new session. "before" was in
                # flight when the broker died: it comes back first; a broker crash is no
                # message's fault, so that attempt does not count (PROTOCOL.md 12.5).
                m = await consumer.get(timeout=5)
                assert (m.body, m.attempt) == (b"before", 1)
                await m.ack()
                m = await consumer.get(timeout=5)
                assert (m.body, m.attempt) == (b"after", 1)
                await m.ack()
            stats = await c.stats()
            assert stats["queues"]["q"]["ready"] == 0
    finally:
        if first is not None:
            await first.kill()
        if second is not None:
            await second.terminate_and_expect_exit(0)


async def test_unconfirmed_publish_is_resent_to_a_restarted_broker(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    first = await start_broker(tmp_path, "--bind", endpoint, "--heartbeat", "1.0")
    second: Proc | None = None
    try:
        async with zq.Client(endpoint) as c:
            assert await c.publish("q", b"one") == 1
            await first.kill()
            pending = asyncio.ensure_future(c.publish("q", b"two"))
            second = await start_broker(tmp_path, "--bind", endpoint, "--heartbeat", "1.0")
            # sent to a dead broker, resent to the new one once it asks us for HELLO
            assert await asyncio.wait_for(pending, 10) == 2
            async with c.consume("q", prefetch=1) as consumer:
                for body in (b"one", b"two"):  # "one" was confirmed, so it was on disk
                    m = await consumer.get(timeout=5)
                    assert (m.body, m.attempt) == (body, 1)
                    await m.ack()
    finally:
        await first.kill()
        if second is not None:
            await second.terminate_and_expect_exit(0)
