"""Inspection keeps working with big messages and many queues (the hostile check).

A reply is one msgpack header part, at most 4 MiB: STATS with 12,000 queues and a
peek at a 5 MiB message both went past it and failed with FRAME_TOO_LARGE.
"""

from __future__ import annotations

import asyncio

import zq
from tests.procs import Proc
from tests.system.test_cli import cli

N_QUEUES = 12_000


async def test_twelve_thousand_queues_can_be_listed_and_counted(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as c:
        await asyncio.gather(*(c.publish(f"q{i:05d}", b"x") for i in range(N_QUEUES)))
        s = await c.stats()
        assert (s["queues_total"], len(s["queues"])) == (N_QUEUES, 1000)
        queues = await c.queues()  # page by page
        assert len(queues) == N_QUEUES
        assert all(q["ready"] == 1 for q in queues.values())
    rc, out, _ = await cli("queue", "ls", endpoint=broker.endpoint)
    assert rc == 0
    assert len(out.splitlines()) == N_QUEUES + 1
    rc, out, _ = await cli("stats", endpoint=broker.endpoint)
    assert rc == 0
    assert f"{N_QUEUES - 1000} more queues not shown" in out


async def test_a_message_larger_than_a_header_part_can_still_be_peeked(broker: Proc) -> None:
    big = b"b" * (5 * 1024 * 1024)
    async with zq.Client(broker.endpoint) as c:
        mid = await c.publish("big", big)
        await c.publish("big", b"small")
        [m] = await c.peek("big", limit=10)  # the first, cut short, and no more
        assert (m["id"], m["truncated"], m["size"]) == (mid, True, len(big))
        assert 0 < len(m["body"]) < 4 * 1024 * 1024
        assert big.startswith(m["body"])
    rc, out, _ = await cli("queue", "peek", "big", endpoint=broker.endpoint)
    assert rc == 0
    assert f"id {mid}" in out
