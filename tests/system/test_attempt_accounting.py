"""Attempts count only attempts that were made, across clean restarts and SIGKILLs.

Issue 10, acceptance 1. A delayed message that is due but not delivered, one
waiting out its retry backoff, and one whose next attempt number the broker
stored ahead of its due time must come back after a restart with the attempt
number of the deliveries consumers really saw: never one more (a phantom
attempt that dead-letters healthy messages), never with a history entry that
did not happen. Nothing is in flight at a kill here, so there is no ambiguity:
each message's next attempt is exactly the number of deliveries seen plus one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import zq
from tests.system.durability_helpers import DurableBroker, integrity, wait_until

N_DELAYED = 40  # published with delays spread over the kill window
N_RETRIED = 20  # delivered once, nacked, waiting out a backoff at the kill


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[DurableBroker]:
    b = DurableBroker(tmp_path)
    try:
        yield b
    finally:
        await b.cleanup()


async def test_a_delayed_message_due_before_a_clean_restart_keeps_its_first_attempt(
        node: DurableBroker) -> None:
    """The repro: --max-attempts 2, --delay 1, 2 s without a consumer, restart."""
    await node.start()
    async with zq.Client(node.endpoint) as c:
        await c.declare_queue("mail", max_attempts=2)
        mid = await c.publish("mail", b"hello", delay=1.0)
        await asyncio.sleep(2.0)  # the scenario itself: due, nobody consuming
    await node.stop()
    await node.start()
    async with zq.Client(node.endpoint) as c, c.consume("mail", prefetch=1) as con:
        m = await con.get(timeout=5)
        assert (m.id, m.attempt, m.history) == (mid, 1, [])
        await m.nack(reason="try again", wait=True)
        m = await con.get(timeout=5)
        assert (m.id, m.attempt, [e["attempt"] for e in m.history]) == (mid, 2, [1])
        await m.nack(reason="still failing", wait=True)
        dead = await c.peek("mail.dlq")
        assert dead[0]["headers"]["zq-reason"] == "2 attempt(s) failed; last: still failing"
    await node.stop()


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
@pytest.mark.parametrize("seed", range(10))
async def test_attempts_survive_a_restart_at_a_random_moment(
        node: DurableBroker, seed: int, how: str) -> None:
    rng = random.Random(seed)
    await node.start()
    seen: dict[int, int] = {}  # id -> deliveries seen before the stop
    async with zq.Client(node.endpoint, name="before") as c:
        await c.declare_queue("acc", max_attempts=3, retry_delay=0.6, retry_max_delay=0.6)
        retried = await c.publish_many("acc", [b"retry-%d" % i for i in range(N_RETRIED)])
        async with c.consume("acc", prefetch=N_RETRIED) as con:
            for _ in range(N_RETRIED):
                m = await con.get(timeout=5)
                seen[m.id] = 1
                await m.nack(reason="backoff")  # retried after 0.6 s
        await c.sync()
        assert set(seen) == set(retried)
        for i in range(N_DELAYED):  # due times spread over the next 1.2 s
            mid = await c.publish("acc", b"delayed-%d" % i, delay=0.05 + 1.2 * i / N_DELAYED)
            seen[mid] = 0
        await asyncio.sleep(rng.uniform(0.1, 1.4))  # some due, some stored ahead, some not
        if how == "sigkill":
            node.sigkill()
    if how == "sigkill":
        await node.crash()
    else:
        await node.stop()
    assert integrity(node.db) == "ok"

    await node.start()
    got: dict[int, tuple[int, list[int]]] = {}
    async with zq.Client(node.endpoint, name="after") as c, \
            c.consume("acc", prefetch=100) as con:
        while len(got) < len(seen):
            m = await con.get(timeout=5)
            assert m.id not in got, f"message {m.id} delivered twice"
            got[m.id] = (m.attempt, [e["attempt"] for e in m.history])
            await m.ack()
        await wait_until(lambda: _empty(c), what="the queue to be empty")
    expected = {mid: (n + 1, list(range(1, n + 1))) for mid, n in seen.items()}
    wrong = {mid: (got[mid], expected[mid]) for mid in seen if got[mid] != expected[mid]}
    assert not wrong, f"(attempt, history) seen vs expected: {wrong}"
    await node.stop()


async def _empty(c: zq.Client) -> bool:
    q = (await c.stats())["queues"].get("acc", {})
    return not (q.get("ready") or q.get("in_flight") or q.get("delayed"))
