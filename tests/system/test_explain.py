"""`zq explain MESSAGE_ID` on a real broker (issue 16): each situation set up with the SDK,
then explained by the command as a user types it.

"Waiting for the commit" is covered by tests/unit/test_explain.py: on a real broker
the window between a publish and its commit cannot be held open deterministically.
"""

from __future__ import annotations

import json
import time
from typing import Any

import zq
from tests.helpers import free_endpoint
from tests.procs import Proc
from tests.system.test_cli import cli


async def explain(broker: Proc, mid: int) -> tuple[str, dict[str, str]]:
    """The reason line and the ``key: value`` detail lines of ``zq explain``."""
    rc, out, err = await cli("explain", str(mid), "--endpoint", broker.endpoint)
    assert rc == 0, err
    reason, *rest = out.splitlines()
    details = dict(line.strip().split(": ", 1) for line in rest)
    assert details["id"] == str(mid)
    return reason, details


async def explain_json(broker: Proc, mid: int) -> dict[str, Any]:
    rc, out, err = await cli("explain", str(mid), "--json", "--endpoint", broker.endpoint)
    assert rc == 0, err
    reply: dict[str, Any] = json.loads(out)
    return reply


async def test_delayed_until_its_due_time(broker: Proc) -> None:
    async with zq.Client(broker.endpoint, name="producer") as c:
        before = time.time()
        mid = await c.publish("later", b"x", delay=60)
    reason, d = await explain(broker, mid)
    assert reason.startswith("Delayed until ")
    assert "(in 5" in reason  # 59.x s
    assert (d["state"], d["queue"]) == ("delayed", "later")
    due = (await explain_json(broker, mid))["due"]
    assert before + 59 < due < time.time() + 60


async def test_ready_without_consumers_then_in_a_paused_queue(broker: Proc) -> None:
    async with zq.Client(broker.endpoint, name="producer") as c:
        first = await c.publish("idle", b"a")
        mid = await c.publish("idle", b"b")
        reason, d = await explain(broker, mid)
        assert reason.startswith("Ready in queue 'idle', but no consumer is subscribed")
        assert (d["state"], d["why"], d["ahead"]) == ("ready", "no_consumers", "1")
        await c.pause_queue("idle")
        async with c.consume("idle", prefetch=5):
            reason, d = await explain(broker, first)
            assert d["why"] == "paused"
            assert "the queue is paused" in reason
            assert "zq queue resume idle" in reason


async def test_every_consumer_at_its_credit_limit_is_named(broker: Proc) -> None:
    async with zq.Client(broker.endpoint, name="producer") as c, \
            zq.Client(broker.endpoint, name="slow-worker") as w:
        await c.publish("busy", b"a")
        mid = await c.publish("busy", b"b")
        async with w.consume("busy", prefetch=1) as con:
            held = await con.get(timeout=5)  # held unacked: its one unit of credit is used
            reason, d = await explain(broker, mid)
            assert d["why"] == "consumers_at_credit_limit"
            assert "every consumer is at its credit limit: 'slow-worker' (1 in flight)" \
                in reason
            assert d["consumers"] == "slow-worker (1 in flight, 0 credit left)"
            await held.ack(wait=True)


async def test_a_tenant_at_its_in_flight_cap(broker: Proc) -> None:
    async with zq.Client(broker.endpoint, name="producer") as c, \
            zq.Client(broker.endpoint, name="worker") as w:
        await c.declare_queue("shared", caps={"acme": 1})
        await c.publish("shared", b"a", tenant="acme")
        mid = await c.publish("shared", b"b", tenant="acme")
        async with w.consume("shared", prefetch=5) as con:
            held = await con.get(timeout=5)
            reason, d = await explain(broker, mid)
            assert (d["why"], d["tenant"], d["cap"], d["in_flight"]) == (
                "tenant_at_cap", "acme", "1", "1")
            assert "tenant 'acme' is at its in-flight cap (1 of 1)" in reason
            await held.ack(wait=True)


async def test_in_flight_at_a_consumer_with_its_attempt_and_time_limit(broker: Proc) -> None:
    async with zq.Client(broker.endpoint, name="producer") as c, \
            zq.Client(broker.endpoint, name="worker-7") as w:
        await c.declare_queue("timed", time_limit=60)
        mid = await c.publish("timed", b"x")
        async with w.consume("timed", prefetch=1) as con:
            m = await con.get(timeout=5)
            await m.nack(reason="flaky", wait=True)  # back at once: attempt 2 next
            m = await con.get(timeout=5)
            assert m.attempt == 2
            before = time.time()
            reason, d = await explain(broker, mid)
            assert reason.startswith("In flight at consumer 'worker-7', attempt 2, held "
                                     "while worker-7 heartbeats")
            assert "Its time limit runs out at" in reason
            assert (d["state"], d["consumer"], d["attempt"], d["alive"]) == (
                "in_flight", "worker-7", "2", "yes")
            deadline = (await explain_json(broker, mid))["deadline"]
            assert before + 50 < deadline < time.time() + 60
            await m.ack(wait=True)


async def test_dead_lettered_after_its_attempts_with_the_last_reason(broker: Proc) -> None:
    async with zq.Client(broker.endpoint, name="producer") as c, \
            zq.Client(broker.endpoint, name="worker") as w:
        await c.declare_queue("poison", max_attempts=2)
        mid = await c.publish("poison", b"x")
        async with w.consume("poison", prefetch=1) as con:
            for reason in ("first try", "bad input"):
                m = await con.get(timeout=5)
                await m.nack(reason=reason, wait=True)
    reason, d = await explain(broker, mid)
    assert reason == ("Dead-lettered from queue 'poison': 2 attempt(s) failed; last: bad "
                      "input. It waits in 'poison.dlq'; `zq dlq redrive poison.dlq` sends "
                      "it back.")
    assert (d["state"], d["queue"], d["origin"], d["attempts"], d["last_error"]) == (
        "dead", "poison.dlq", "poison", "2", "bad input")


async def test_not_found_when_acked_or_never_issued(broker: Proc) -> None:
    async with zq.Client(broker.endpoint, name="producer") as c:
        mid = await c.publish("done", b"x")
        async with c.consume("done", prefetch=1) as con:
            m = await con.get(timeout=5)
            await m.ack(wait=True)
    reason, d = await explain(broker, mid)
    assert reason.startswith(f"Message {mid} is not on this broker any more: it was acked")
    assert (d["state"], d["never_issued"]) == ("not_found", "no")
    reason, d = await explain(broker, 10**9)
    assert reason.startswith(f"No message {10**9} was ever published to this broker")
    assert (d["state"], d["never_issued"]) == ("not_found", "yes")


async def test_errors_exit_non_zero(broker: Proc) -> None:
    rc, _, err = await cli("explain", "-3", "--endpoint", broker.endpoint)
    assert rc == 2  # click's usage error: not a message id
    assert "MESSAGE_ID" in err
    rc, out, err = await cli("explain", "1", "--timeout", "0.3", "--endpoint", free_endpoint())
    assert (rc, out) == (1, "")  # no broker answered: an error, not an explanation
    assert err.startswith("Error: ")
