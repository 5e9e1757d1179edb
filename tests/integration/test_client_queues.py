"""Queue semantics through the SDK against an in-process broker: publish options,
queue operations (MANAGE), dead letters and redrive, and settlements waited on."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

import zq
from zq.broker import Broker
from zq.core import Peer


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def peer_named(broker: Broker, name: str) -> Peer:
    (peer,) = [p for p in broker.core.peers.values() if p.name == name]
    return peer


# ------------------------------------------------------------------ publish options


async def test_priority_serves_higher_first_at_prefetch_1(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.publish("prio", b"low-1")
        await c.publish("prio", b"high", priority=9)
        await c.publish_many("prio", [b"mid-1", b"mid-2"], priority=5)
        await c.publish("prio", b"low-2", priority=0)
        async with c.consume("prio", prefetch=1) as consumer:
            got = []
            for _ in range(5):
                m = await consumer.get(timeout=5)
                got.append(m.body)
                await m.ack()
        assert got == [b"high", b"mid-1", b"mid-2", b"low-1", b"low-2"]


async def test_delay_and_eta_are_never_early(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        start = time.monotonic()
        wall = time.time()
        await c.publish("later", b"delayed", delay=0.3)
        await c.publish("later", b"eta", eta=wall + 0.4)
        await c.publish("later", b"eta-dt",
                        eta=datetime.fromtimestamp(wall + 0.5, tz=UTC))
        await c.publish("later", b"now")
        async with c.consume("later", prefetch=10) as consumer:
            got = []
            for _ in range(4):
                m = await consumer.get(timeout=5)
                got.append((m.body, time.monotonic() - start, time.time() - wall))
                await m.ack()
        assert [b for b, _, _ in got] == [b"now", b"delayed", b"eta", b"eta-dt"]
        assert got[1][1] >= 0.3
        assert got[2][2] >= 0.4
        assert got[3][2] >= 0.5


async def test_dedup_id_returns_the_original_id(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        first = await c.publish("dd", b"one", dedup_id="order-7")
        again = await c.publish("dd", b"one again", dedup_id="order-7")
        other = await c.publish("dd", b"two", dedup_id="order-8")
        # In one loop turn too: each dedup publish travels alone, so they do not clash.
        same = await asyncio.gather(*(c.publish("dd", b"x", dedup_id="order-9")
                                      for _ in range(3)))
        assert again == first
        assert other != first
        assert len(set(same)) == 1
        info = await c.queue_info("dd")
        assert info["stats"]["ready"] == 3
        assert inproc_broker.core.counters["deduplicated"] == 3


async def test_messages_with_options_coalesce_only_with_same_options(
        inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.sync()
        before = inproc_broker.core.counters["frames_in"]
        ids = await asyncio.gather(
            *(c.publish("co", b"p", priority=3) for _ in range(5)),
            *(c.publish("co", b"plain") for _ in range(5)),
            *(c.publish("co", b"t", tenant="acme", priority=3) for _ in range(5)),
            c.publish("co", b"d1", dedup_id="a"),
            c.publish("co", b"d2", dedup_id="b"),
        )
        assert len(set(ids)) == 17
        assert inproc_broker.core.counters["frames_in"] - before == 5


async def test_bad_options_are_refused_before_sending(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.sync()
        before = inproc_broker.core.counters["frames_in"]
        bad: list[dict[str, object]] = [
            {"priority": 10}, {"priority": -1}, {"priority": True}, {"priority": 1.5},
            {"delay": -0.1}, {"delay": float("nan")}, {"ttl": 0}, {"ttl": -1},
            {"time_limit": 0}, {"max_attempts": 0}, {"tenant": ""}, {"dedup_id": "x" * 256},
            {"eta": -5}, {"eta": "tomorrow"}, {"delay": 1e12},
        ]
        for kwargs in bad:
            with pytest.raises(zq.InvalidArgument):
                await c.publish("bad", b"x", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(zq.InvalidArgument):
            await c.publish_many("bad", [b"x"], priority=42)
        assert inproc_broker.core.counters["frames_in"] == before
        # Durations round up to whole milliseconds; zero delay is no option at all.
        assert await c.publish("bad", b"ok", delay=0, ttl=0.0001, time_limit=1e-9) > 0


async def test_max_length_rejects_with_queue_full(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.declare_queue("small", max_length=2)
        await c.publish_many("small", [b"1", b"2"])
        with pytest.raises(zq.QueueFull):
            await c.publish("small", b"3")
        assert zq.QueueFull.retriable


async def test_ttl_expires_to_the_dlq(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        # The DLQ is declared first: a broker whose once-a-second expiry sweep has to
        # create the DLQ changes its queue table while iterating it (a known bug).
        await c.declare_queue("short.dlq")
        mid = await c.publish("short", b"stale soon", ttl=0.1)

        async def dead() -> bool:
            return bool(await c.peek("short.dlq"))

        await until(dead)
        (m,) = await c.peek("short.dlq")
        assert m["id"] == mid
        assert m["headers"]["zq-reason"] == "expired"
        assert m["headers"]["zq-origin"] == "short"


# ------------------------------------------------------------------ queue operations


async def test_declare_info_list_pause_resume_purge_delete_peek(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        s = await c.declare_queue("jobs", max_length=100, ttl=60, retry="exponential",
                                  retry_delay=0.5, weights={"acme": 3})
        assert (s["max_length"], s["ttl"], s["retry"], s["weights"]) == (
            100, 60.0, "exponential", {"acme": 3})
        s = await c.declare_queue("jobs", max_attempts=3)  # others stay
        assert (s["max_length"], s["max_attempts"]) == (100, 3)
        info = await c.queue_info("jobs")
        assert info["queue"] == "jobs"
        assert info["dlq"] == "jobs.dlq"
        assert info["settings"]["max_attempts"] == 3
        assert info["stats"]["ready"] == 0

        await c.publish_many("jobs", [b"a", b"b", b"c"])
        assert "jobs" in await c.queues()
        assert (await c.queues())["jobs"]["ready"] == 3

        peeked = await c.peek("jobs", limit=2)
        assert [(m["body"], m["attempts"]) for m in peeked] == [(b"a", 0), (b"b", 0)]
        assert (await c.queue_info("jobs"))["stats"]["ready"] == 3  # peek leaves them

        await c.pause_queue("jobs")
        assert (await c.queue_info("jobs"))["stats"]["paused"] is True
        async with c.consume("jobs", prefetch=10) as consumer:
            await c.sync()  # the credit is in: a queue that delivered would have by now
            stats = (await c.queue_info("jobs"))["stats"]
            assert (stats["ready"], stats["in_flight"], consumer.received) == (3, 0, 0)
            await c.resume_queue("jobs")
            m = await consumer.get(timeout=5)
            assert m.body == b"a"
            await m.ack(wait=True)
        # Closing the consumer released what it had received but not handed out.
        await c.sync()
        assert await c.purge_queue("jobs") == 2
        assert (await c.queue_info("jobs"))["stats"]["ready"] == 0

        await c.publish("jobs", b"d")
        assert await c.delete_queue("jobs") == 1
        with pytest.raises(zq.UnknownQueue):
            await c.queue_info("jobs")
        assert "jobs" not in await c.queues()


async def test_queue_operation_errors(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        for op in (c.queue_info, c.pause_queue, c.resume_queue, c.purge_queue,
                   c.delete_queue, c.peek, c.redrive):
            with pytest.raises(zq.UnknownQueue):
                await op("nowhere")  # type: ignore[operator]
        with pytest.raises(zq.InvalidArgument):  # checked locally
            await c.declare_queue("q", max_length=-1)
        with pytest.raises(zq.InvalidArgument):
            await c.declare_queue("q", no_such_setting=1)
        with pytest.raises(zq.InvalidArgument):  # checked by the broker: no such policy
            await c.declare_queue("q", overflow="no-such-policy")
        with pytest.raises(zq.InvalidArgument):
            await c.peek("q", limit=0)
        with pytest.raises(zq.InvalidQueueName):
            await c.declare_queue("")
        await c.sync()  # the session goes on after refusals


# ------------------------------------------------------------------ dead letters


async def test_poison_message_dies_and_is_redriven(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="worker") as c:
        await c.declare_queue("poison", max_attempts=2)
        mid = await c.publish("poison", b"boom", headers={"k": "v"})
        async with c.consume("poison", prefetch=1) as consumer:
            for attempt in (1, 2):
                m = await consumer.get(timeout=5)
                assert (m.id, m.attempt, len(m.history)) == (mid, attempt, attempt - 1)
                await m.nack(reason=f"failure {attempt}", wait=True)
        (dead,) = await c.peek("poison.dlq")
        h = dead["headers"]
        assert dead["id"] == mid
        assert h["k"] == "v"
        assert h["zq-origin"] == "poison"
        assert "2 attempt(s) failed" in h["zq-reason"]
        assert [(e["attempt"], e["outcome"], e["reason"], e["consumer"])
                for e in h["zq-history"]] == [
            (1, "nacked", "failure 1", "worker"), (2, "nacked", "failure 2", "worker")]
        assert h["zq-dead-at"] <= time.time()

        async with c.consume("poison.dlq", prefetch=1) as dlq:
            m = await dlq.get(timeout=5)
            assert m.dead_reason is not None
            assert "failure 2" in m.dead_reason
            assert len(m.history) == 2
            await m.release()
        await c.sync()

        assert await c.redrive("poison.dlq", match="no such text") == 0
        assert await c.redrive("poison.dlq", until=datetime.now() - timedelta(hours=1)) == 0
        assert await c.redrive("poison.dlq", since=time.time() - 60) == 1
        assert await c.peek("poison.dlq") == []
        async with c.consume("poison", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            assert (m.id, m.attempt, m.body, m.dead_reason) == (mid, 1, b"boom", None)
            assert [e["outcome"] for e in m.history] == ["nacked", "nacked", "redriven"]
            await m.ack(wait=True)


async def test_redrive_to_another_queue_with_limit(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.publish_many("src", [b"1", b"2", b"3"])
        async with c.consume("src", prefetch=3) as consumer:
            for _ in range(3):
                m = await consumer.get(timeout=5)
                await m.nack(requeue=False, reason="bad input", wait=True)
        assert len(await c.peek("src.dlq")) == 3
        assert await c.redrive("src.dlq", to="elsewhere", limit=2) == 2
        assert [m["body"] for m in await c.peek("elsewhere")] == [b"1", b"2"]
        assert [m["body"] for m in await c.peek("src.dlq")] == [b"3"]


# ------------------------------------------------------------------ waited settlements


async def test_ack_wait_returns_once_taken(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.publish("w", b"x")
        async with c.consume("w", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            await m.ack(wait=True)
            with pytest.raises(zq.AlreadySettled):
                await m.ack(wait=True)
        assert (await c.queue_info("w"))["stats"]["acked"] == 1
        assert not c.conn.errors


async def test_ack_wait_raises_stale_after_the_time_limit(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="slow") as a, \
            zq.Client(inproc_broker.endpoint, name="fast") as b:
        await a.publish("tl", b"job", time_limit=0.2)
        async with a.consume("tl", prefetch=1) as slow:
            first = await slow.get(timeout=5)
            assert first.attempt == 1
            async with b.consume("tl", prefetch=1) as fast:
                second = await fast.get(timeout=5)  # redelivered once the limit ran out
                assert (second.id, second.attempt) == (first.id, 2)
                assert [e["outcome"] for e in second.history] == ["time limit"]
                assert second.history[0]["consumer"] == "slow"
                with pytest.raises(zq.StaleDelivery):
                    await first.ack(wait=True)
                await second.ack(wait=True)
        assert not a.conn.errors  # a refusal the caller got is not also logged as stray
        assert (await b.queue_info("tl"))["stats"]["acked"] == 1


async def test_extend_keeps_the_attempt_current(inproc_broker: Broker) -> None:
    core = inproc_broker.core
    async with zq.Client(inproc_broker.endpoint, name="extender") as c:
        await c.publish("ext", b"long job", time_limit=0.3)
        async with c.consume("ext", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            with pytest.raises(zq.InvalidArgument):
                await m.extend(0)
            await m.extend(30)
            await c.sync()
            held = peer_named(inproc_broker, "extender").held[m.id]
            assert held.deadline - held.start >= 29.9

            async def past_original_limit() -> bool:
                return core.now > held.start + 0.4  # the broker's clock went past it

            await until(past_original_limit)
            await m.ack(wait=True)
            with pytest.raises(zq.AlreadySettled):
                await m.extend(1)
        assert core.counters["time_limited"] == 0


async def test_nack_wait_after_the_session_was_dropped(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="dropped") as c:
        await c.publish("sd", b"x")
        async with c.consume("sd", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            await c.sync()  # its START is in: the broker knows the attempt was begun
            inproc_broker.core.drop_peer(peer_named(inproc_broker, "dropped"), "test")
            with pytest.raises(zq.StaleDelivery):
                await m.nack(wait=True)
            # The client has opened a new session; the message is delivered again there.
            again = await consumer.get(timeout=5)
            assert (again.id, again.attempt) == (m.id, 2)
            await again.ack(wait=True)
        await c.sync()


async def test_ack_wait_does_not_hang_when_the_broker_goes_silent(
        inproc_broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.publish_many("gone", [b"1", b"2"])
        async with c.consume("gone", prefetch=2) as consumer:
            m1 = await consumer.get(timeout=5)
            m2 = await consumer.get(timeout=5)
            monkeypatch.setattr(inproc_broker, "_pass", lambda loop, sock: None)
            try:
                async with asyncio.timeout(5):
                    with pytest.raises(zq.ConnectionLost):  # lost while waiting
                        await m1.ack(wait=True)
                    assert not c.connected
                    with pytest.raises(zq.ConnectionLost):  # lost before: a bounded wait
                        await m2.ack(wait=True)
                with pytest.raises(zq.ConnectionLost):
                    await c.queue_info("gone")
            finally:
                monkeypatch.undo()


async def test_ack_wait_while_thought_lost_goes_out_on_a_new_session(
        inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="stalled") as c:
        await c.publish("fence", b"x")
        async with c.consume("fence", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            await c.sync()  # its START is in: the broker knows the attempt was begun
            # As after a stall: the broker dropped the session, and the client has
            # stopped waiting for the broker, though it is still there.
            inproc_broker.core.drop_peer(peer_named(inproc_broker, "stalled"), "stalled")
            c.conn._lost(zq.ConnectionLost("silent for too long"))
            with pytest.raises(zq.StaleDelivery):
                await m.ack(wait=True)
        await c.wait_connected(timeout=5)
        await c.sync()
        async with c.consume("fence", prefetch=1) as consumer:
            again = await consumer.get(timeout=5)
            assert (again.id, again.attempt) == (m.id, 2)
            await again.ack(wait=True)


async def test_a_client_that_gave_up_a_live_broker_starts_a_new_session(
        inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="doubter") as c:
        await c.publish("doubt", b"x")
        async with c.consume("doubt", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            # The client decides the broker is gone (as after its own stall), but the
            # broker kept the session and goes on sending heartbeats.
            c.conn._lost(zq.ConnectionLost("silent for too long"))
            assert not c.connected
        await c.wait_connected(timeout=5)  # it said BYE to the old session and HELLO again
        async with c.consume("doubt", prefetch=1) as consumer:
            again = await consumer.get(timeout=5)
            assert (again.id, again.attempt) == (m.id, 2)
            assert [h["outcome"] for h in again.history] == ["consumer lost"]
            await again.ack(wait=True)


async def test_operations_refused_by_a_dropped_session(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, name="forgotten") as c:
        await c.publish_many("ds", [b"1", b"2"])
        inproc_broker.core.drop_peer(peer_named(inproc_broker, "forgotten"), "test")
        # A purge may or may not have happened: it is not sent again, it fails.
        with pytest.raises(zq.SessionUnknown):
            await c.purge_queue("ds")
        await c.wait_connected(timeout=5)
        inproc_broker.core.drop_peer(peer_named(inproc_broker, "forgotten"), "test")
        # Reading operations are sent again on the new session.
        info, stats = await asyncio.gather(c.queue_info("ds"), c.stats())
        assert info["stats"]["ready"] == 2
        assert stats["queues"]["ds"]["ready"] == 2


# ------------------------------------------------------------------ the command line


async def cli(endpoint: str, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ)
    env["ZQ_ENDPOINT"] = endpoint
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zq", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_queue_and_dlq_commands(inproc_broker: Broker) -> None:
    ep = inproc_broker.endpoint
    rc, out, err = await cli(ep, "queue", "declare", "jobs", "--max-attempts", "1",
                             "--weight", "acme=3", "--cap", "acme=2", "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert (s["max_attempts"], s["weights"], s["caps"]) == (1, {"acme": 3}, {"acme": 2})

    rc, out, err = await cli(ep, "publish", "jobs", "a", "b", "--priority", "7",
                             "--tenant", "acme", "--ttl", "60", "--time-limit", "5")
    assert (rc, out.split()) == (0, ["1", "2"]), err
    rc, out, err = await cli(ep, "publish", "jobs", "c", "--dedup-id", "k")
    rc2, out2, _ = await cli(ep, "publish", "jobs", "c again", "--dedup-id", "k")
    assert (rc, rc2, out, out2) == (0, 0, "3\n", "3\n"), err

    rc, out, err = await cli(ep, "queue", "ls")
    assert rc == 0, err
    assert any(line.split()[:2] == ["jobs", "3"] for line in out.splitlines()), out
    rc, out, err = await cli(ep, "queue", "info", "jobs")
    assert rc == 0, err
    assert "tenant acme" in out
    rc, out, err = await cli(ep, "queue", "peek", "jobs", "--json", "--limit", "2")
    assert rc == 0, err
    assert [m["body"] for m in json.loads(out)] == ["a", "b"]

    async with zq.Client(ep, name="worker") as c, c.consume("jobs", prefetch=1) as consumer:
        m = await consumer.get(timeout=5)
        await m.nack(reason="no such file", wait=True)
    rc, out, err = await cli(ep, "dlq", "ls", "jobs.dlq")
    assert rc == 0, err
    assert "from jobs" in out
    assert "attempt 1 nacked by worker" in out
    assert "no such file" in out
    rc, out, err = await cli(ep, "dlq", "redrive", "jobs.dlq", "--match", "no such")
    assert (rc, out.strip()) == (0, "moved 1 message(s) from jobs.dlq"), err

    for args in (["queue", "pause", "jobs"], ["queue", "resume", "jobs"]):
        rc, out, err = await cli(ep, *args)
        assert rc == 0, err
    rc, out, err = await cli(ep, "queue", "purge", "jobs")
    assert (rc, out.strip()) == (0, "purged 3 message(s) from jobs"), err
    rc, out, err = await cli(ep, "queue", "delete", "jobs")
    assert rc == 0, err

    rc, _, err = await cli(ep, "queue", "info", "jobs")
    assert rc == 1
    assert "UNKNOWN_QUEUE" in err
    assert "Traceback" not in err
    rc, _, err = await cli(ep, "queue", "declare", "jobs", "--overflow", "nope")
    assert rc == 1
    assert "INVALID_ARGUMENT" in err
    assert "Traceback" not in err


async def test_cli_bad_numbers_and_missing_dlqs_get_one_line_answers(
        inproc_broker: Broker) -> None:
    ep = inproc_broker.endpoint
    for args in (("queue", "declare", "x", "--max-length", "99999999999999999999999"),
                 ("dlq", "redrive", "x.dlq", "--limit", "99999999999999999999999"),
                 ("consume", "x", "--timeout", "nan"),
                 ("consume", "x", "--timeout", "-1"),
                 ("queue", "declare", "loop", "--dlq", "loop")):
        rc, out, err = await cli(ep, *args)
        assert rc != 0, (args, out)
        assert "Traceback" not in err, (args, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines[-1].startswith("Error:"), (args, err)
        assert len(lines) <= 3, (args, err)
    rc, out, err = await cli(ep, "dlq", "ls", "nothing-died-yet.dlq")
    assert (rc, out.strip()) == (0, "no dead letters in nothing-died-yet.dlq"), err
    assert not {"x", "loop"} & set(inproc_broker.core.queues)
