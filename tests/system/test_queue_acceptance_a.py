"""Queue features with real broker processes (sqlite storage): acceptance, part A.

1. priorities: a backlog is served highest priority first, FIFO within a level;
2. delays: no delayed message arrives early, few arrive late, and delays survive a
   SIGKILL of the broker;
3. a poison message is retried ``max_attempts`` times, dead-lettered with its
   history, and ``zq dlq redrive`` brings it back as a fresh message;
4. fencing: a consumer that stalls past its liveness loses its lease; its late ack
   is refused with STALE_DELIVERY and the new holder's ack counts, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import zq
from tests.procs import ROOT, Proc
from tests.system.durability_helpers import DurableBroker, wait_until

BrokerFactory = Callable[..., Awaitable[Proc]]
SCRIPTS = Path(__file__).resolve().parent / "scripts"


async def cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``zq ARGS`` as a user would; return (exit code, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("ZQ_ENDPOINT", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zq", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def queue_stats(c: zq.Client, queue: str) -> dict[str, Any]:
    info = await c.queue_info(queue)
    assert info["queue"] == queue
    return dict(info["stats"])


# ------------------------------------------------------------------ 1. priorities

N_PRIO = 200


@pytest.mark.parametrize("mode", ["one-by-one", "concurrent"])
async def test_backlog_is_served_highest_priority_first_fifo_within_a_level(
        broker_factory: BrokerFactory, mode: str) -> None:
    """200 messages with random priorities 0-9, published before any consumer; one
    consumer at prefetch 1 gets them by priority (higher first), then by id.
    ``concurrent`` publishes them all in one loop turn: the SDK must not let one
    message's priority leak onto others that travel with it."""
    broker = await broker_factory("--heartbeat", "0.5")
    rng = random.Random(20240601)
    prios = [rng.randrange(10) for _ in range(N_PRIO)]
    assert set(prios) == set(range(10))
    bodies = [f"p{p}-{i:03d}".encode() for i, p in enumerate(prios)]
    async with zq.Client(broker.endpoint, name="qa-prio") as c:
        if mode == "one-by-one":
            ids = [await c.publish("prio", b, priority=p) for b, p in zip(bodies, prios,
                                                                           strict=True)]
            assert ids == sorted(ids)  # publish order is id order
        else:
            ids = list(await asyncio.gather(*(c.publish("prio", b, priority=p)
                                              for b, p in zip(bodies, prios, strict=True))))
        assert len(set(ids)) == N_PRIO
        prio_of = dict(zip(ids, prios, strict=True))
        body_of = dict(zip(ids, bodies, strict=True))
        expected = sorted(ids, key=lambda i: (-prio_of[i], i))
        assert expected != sorted(ids)  # the order to check is not the publish order
        assert (await queue_stats(c, "prio"))["ready"] == N_PRIO

        got: list[tuple[int, int]] = []  # (id, attempt)
        async with c.consume("prio", prefetch=1) as consumer:
            while len(got) < N_PRIO:
                m = await consumer.get(timeout=5)
                assert m.body == body_of[m.id]
                got.append((m.id, m.attempt))
                await m.ack()
        served = [mid for mid, _ in got]
        first_bad = next((k for k, (a, b) in enumerate(zip(served, expected, strict=True))
                          if a != b), None)
        assert served == expected, (
            f"first difference at position {first_bad}: got id {served[first_bad]} "
            f"(priority {prio_of[served[first_bad]]}), expected id {expected[first_bad]} "
            f"(priority {prio_of[expected[first_bad]]}); priorities as served: "
            f"{[prio_of[i] for i in served[:40]]}...")
        assert {a for _, a in got} == {1}
        await wait_until(lambda: _settled(c, "prio"), what="prio to be empty")


async def no_delivery(consumer: zq.Consumer, within: float) -> None:
    """Fail if ``consumer`` receives a message within ``within`` seconds."""
    try:
        extra = await consumer.get(timeout=within)
    except TimeoutError:
        return
    pytest.fail(f"unexpected delivery: {extra!r}, attempt {extra.attempt}")


async def _settled(c: zq.Client, queue: str) -> bool:
    s = await queue_stats(c, queue)
    return s["ready"] == 0 and s["in_flight"] == 0 and s["delayed"] == 0


# ------------------------------------------------------------------ 2. delays

N_DELAY = 1000
MAX_DELAY_MS = 2000
P99_LATE_S = 0.050


async def test_delayed_messages_never_arrive_early_and_p99_lateness_is_small(
        broker_factory: BrokerFactory) -> None:
    """1,000 messages with random delays of 0-2 s. Due time = the clock read right
    before ``publish`` + the delay; arrival = when ``consumer.get`` hands it over.
    Both use ``time.monotonic()`` (the clock the broker's delays run on, immune to
    wall-clock steps). Delays are whole milliseconds, so no rounding on the wire
    can make a message legitimately early.

    An early arrival fails at once. The p99 bound is a timing on a shared machine:
    a message cannot be delivered before its publish is stored, so a disk busy with
    other work (fresh-clone CI had one such run in three) can stall the fsyncs of
    the shortest delays. The measurement then runs once more, on a new queue, and
    must meet the bound there; ``perf delays`` in the perf suite tracks the target.
    """
    await asyncio.to_thread(os.sync)  # start on a quiet disk
    broker = await broker_factory("--heartbeat", "0.5")
    first = await _measure_delays(broker.endpoint, "delayed")
    if first[0] <= P99_LATE_S:
        return
    print(f"\nfirst run over the bound ({first[1]}); measuring again")
    await asyncio.to_thread(os.sync)
    p99, report = await _measure_delays(broker.endpoint, "delayed-again")
    assert p99 <= P99_LATE_S, f"twice over the bound: {first[1]}; then {report}"


async def _measure_delays(endpoint: str, queue: str) -> tuple[float, str]:
    """Publish and consume the 1,000 delayed messages; (p99 lateness, a report).
    Fails at once on an early arrival."""
    rng = random.Random(4242)
    delays = [rng.randint(0, MAX_DELAY_MS) / 1000 for _ in range(N_DELAY)]
    due: dict[int, float] = {}
    delay_of: dict[int, float] = {}
    arrived: dict[int, float] = {}

    async with zq.Client(endpoint, name="qa-delay") as c:

        async def consume(consumer: zq.Consumer) -> None:
            while len(arrived) < N_DELAY:
                m = await consumer.get()
                arrived[m.id] = time.monotonic()
                assert m.attempt == 1
                await m.ack()

        async def publish(i: int) -> None:
            t = time.monotonic()
            mid = await c.publish(queue, f"d{i}".encode(), delay=delays[i])
            due[mid] = t + delays[i]
            delay_of[mid] = delays[i]

        async with c.consume(queue, prefetch=N_DELAY) as consumer:
            task = asyncio.create_task(consume(consumer))
            try:
                async with asyncio.timeout(MAX_DELAY_MS / 1000 + 10):
                    # Ten publishes per loop turn, each turn its own frame: a due time
                    # read before a publish is then not far ahead of the frame leaving
                    # (1,000 publishes in one turn put the last ones' frame ~10 ms
                    # after their clock reads, which would count as lateness).
                    sent = []
                    for k in range(0, N_DELAY, 10):
                        sent += [asyncio.ensure_future(publish(i))
                                 for i in range(k, min(k + 10, N_DELAY))]
                        await asyncio.sleep(0)  # end the turn: the SDK sends the frame
                    await asyncio.gather(*sent)
                    await task
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await wait_until(lambda: _settled(c, queue), what=f"{queue} to be empty")

    assert set(arrived) == set(due)
    late = {mid: arrived[mid] - due[mid] for mid in due}
    early = sorted((v, mid) for mid, v in late.items() if v < 0)
    lateness = sorted(late.values())
    p50, p99 = statistics.quantiles(lateness, n=100)[49], statistics.quantiles(lateness, n=100)[98]
    worst = sorted(late, key=late.__getitem__)[-10:]
    report = (f"delays: {N_DELAY} messages, lateness p50 {p50 * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms, max {lateness[-1] * 1000:.1f} ms, "
              f"min {lateness[0] * 1000:.2f} ms; the latest (delay ms, late ms): "
              f"{[(round(delay_of[m] * 1000), round(late[m] * 1000, 1)) for m in worst]}")
    print(f"\n{report}")
    assert not early, (f"{len(early)} message(s) arrived early, the worst by "
                       f"{-early[0][0] * 1000:.2f} ms (id {early[0][1]})")
    return p99, report


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[DurableBroker]:
    b = DurableBroker(tmp_path)
    try:
        yield b
    finally:
        await b.cleanup()


N_KILL = 200


async def test_delays_survive_a_sigkill_of_the_broker(node: DurableBroker) -> None:
    """200 messages delayed 1.5-3 s; SIGKILL right after their confirms; restart on the
    same data folder: all of them arrive, none before its due time (wall clock,
    since a due time on disk is wall-clock)."""
    await node.start()
    rng = random.Random(99)
    delays = [rng.randint(1500, 3000) / 1000 for _ in range(N_KILL)]
    due: dict[int, float] = {}
    body_of: dict[int, bytes] = {}
    async with zq.Client(node.endpoint, name="qa-delay-producer") as c:

        async def publish(i: int) -> None:
            body = f"later-{i}".encode()
            t = time.time()
            mid = await c.publish("later", body, delay=delays[i])
            due[mid] = t + delays[i]
            body_of[mid] = body

        await asyncio.gather(*(publish(i) for i in range(N_KILL)))
        node.sigkill()
    await node.crash()
    assert len(due) == N_KILL

    await node.start()
    restarted = time.time()
    still_delayed = sum(d > restarted for d in due.values())
    # Meaningful only if the restart came before (most of) the due times.
    assert still_delayed >= N_KILL // 2, (
        f"the restart took too long: only {still_delayed} message(s) still delayed")

    arrived: dict[int, float] = {}
    async with zq.Client(node.endpoint, name="qa-delay-consumer") as c:
        s = await queue_stats(c, "later")
        assert s["ready"] + s["delayed"] == N_KILL, s  # nothing lost in recovery
        async with c.consume("later", prefetch=N_KILL) as consumer:
            while len(arrived) < N_KILL:
                try:
                    m = await consumer.get(timeout=6)
                except TimeoutError:
                    raise AssertionError(
                        f"got {len(arrived)} of {N_KILL}, then nothing for 6 s; "
                        f"stats {await queue_stats(c, 'later')}") from None
                now = time.time()
                assert m.id in due, f"a message that was never published: {m!r}"
                assert m.id not in arrived, f"delivered twice: {m!r}"
                assert m.body == body_of[m.id]
                arrived[m.id] = now
                await m.ack()
            await wait_until(lambda: _settled(c, "later"), what="later to be empty")
    assert set(arrived) == set(due)  # none lost
    early = sorted((arrived[mid] - due[mid], mid) for mid in due if arrived[mid] < due[mid])
    late = sorted(arrived[mid] - due[mid] for mid in due)
    print(f"\nafter SIGKILL: {still_delayed} of {N_KILL} still delayed at restart; "
          f"lateness max {late[-1] * 1000:.1f} ms")
    assert not early, (f"{len(early)} message(s) arrived early after the restart, the "
                       f"worst by {-early[0][0] * 1000:.1f} ms")


# ------------------------------------------------------------------ 3. poison message


async def test_poison_message_is_dead_lettered_after_max_attempts_and_redriven(
        broker_factory: BrokerFactory) -> None:
    broker = await broker_factory("--heartbeat", "0.5")
    ep = broker.endpoint
    rc, out, err = await cli("queue", "declare", "poison", "--max-attempts", "3",
                             "--endpoint", ep)
    assert rc == 0, f"zq queue declare: exit {rc}\n{out}\n{err}"

    async with zq.Client(ep, name="qa-poison") as c:
        info = await c.queue_info("poison")
        assert info["settings"]["max_attempts"] == 3, info
        assert info["dlq"] == "poison.dlq", info
        mid = await c.publish("poison", b"bad pill")
        published_at = time.time()

        attempts: list[int] = []
        async with c.consume("poison", prefetch=1) as consumer:
            for _ in range(3):
                m = await consumer.get(timeout=5)
                assert (m.id, m.body) == (mid, b"bad pill")
                attempts.append(m.attempt)
                assert [e["attempt"] for e in m.history] == list(range(1, m.attempt))
                await m.nack(reason=f"boom {m.attempt}", wait=True)
            assert attempts == [1, 2, 3]

            async def in_dlq() -> bool:
                try:
                    return int((await queue_stats(c, "poison.dlq"))["ready"]) == 1
                except zq.ZqError:
                    return False  # UNKNOWN_QUEUE until the first dead letter

            await wait_until(in_dlq, timeout=5, what="the message in poison.dlq")
            await no_delivery(consumer, within=0.3)  # no 4th attempt
        s = await queue_stats(c, "poison")
        assert (s["ready"], s["in_flight"], s["delayed"]) == (0, 0, 0), s
        assert (s["nacked"], s["dead"], s["delivered"]) == (3, 1, 3), s

        peeked = await c.peek("poison.dlq")
        assert [p["id"] for p in peeked] == [mid], peeked
        dead = peeked[0]
        assert dead["body"] == b"bad pill"
        h = dead["headers"]
        assert h["zq-origin"] == "poison", h
        assert "boom 3" in h["zq-reason"], h
        assert published_at - 1 <= float(h["zq-dead-at"]) <= time.time() + 1, h
        hist = h["zq-history"]
        assert [e["attempt"] for e in hist] == [1, 2, 3], hist
        assert [e["outcome"] for e in hist] == ["nacked"] * 3, hist
        assert [e["reason"] for e in hist] == ["boom 1", "boom 2", "boom 3"], hist
        assert all(e.get("consumer") == "qa-poison" for e in hist), hist

    rc, out, err = await cli("dlq", "ls", "poison.dlq", "--endpoint", ep)
    assert rc == 0, f"zq dlq ls: exit {rc}\n{out}\n{err}"
    entries = [line for line in out.splitlines() if "nacked" in line and "boom" in line]
    assert len(entries) == 3, out  # one line per attempt of the history
    for k in (1, 2, 3):
        assert f"boom {k}" in entries[k - 1], out
    assert str(mid) in out, out
    print(f"\nzq dlq ls printed:\n{out}")

    rc, out, err = await cli("dlq", "redrive", "poison.dlq", "--endpoint", ep)
    assert rc == 0, f"zq dlq redrive: exit {rc}\n{out}\n{err}"
    print(f"\nzq dlq redrive printed: {out.strip()!r} {err.strip()!r}")

    async with zq.Client(ep, name="qa-poison-2") as c:
        async with c.consume("poison", prefetch=1) as consumer:
            m = await consumer.get(timeout=5)
            assert (m.id, m.body, m.attempt) == (mid, b"bad pill", 1)
            # A fresh start that keeps its past: the history, not the dead-letter headers.
            assert [(e["outcome"], e["reason"]) for e in m.history] == [
                ("nacked", "boom 1"), ("nacked", "boom 2"), ("nacked", "boom 3"),
                ("redriven", "from poison.dlq")]
            assert not {"zq-origin", "zq-reason", "zq-dead-at"} & set(m.headers), m.headers
            await m.ack(wait=True)
        await wait_until(lambda: _settled(c, "poison"), what="poison to be empty")
        dlq = await queue_stats(c, "poison.dlq")
        assert (dlq["ready"], dlq["in_flight"]) == (0, 0), dlq
        s = await queue_stats(c, "poison")
        assert s["acked"] == 1, s


# ------------------------------------------------------------------ 4. fencing

HEARTBEAT = 0.2  # liveness stays at its default, 3 heartbeats


async def start_script(name: str, *args: str, log: Path) -> Proc:
    """Run a helper script of tests/system/scripts with a pipe to its stdin."""
    env = dict(os.environ)
    env.pop("ZQ_ENDPOINT", None)
    env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, str(SCRIPTS / name), *args]
    with open(log, "ab") as fh:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=fh,
            env=env, cwd=str(ROOT))
    return Proc(proc, log, argv)


def tell(p: Proc, line: str) -> None:
    assert p.proc.stdin is not None
    p.proc.stdin.write(line.encode() + b"\n")


async def no_line(p: Proc, prefix: str, within: float) -> None:
    """Fail if ``p`` prints a line starting with ``prefix`` within ``within`` seconds."""
    with contextlib.suppress(TimeoutError):
        line = await p.wait_for_line(prefix, timeout=within)
        pytest.fail(f"unexpected line from {p.argv[1]}: {line!r}")


async def test_stalled_consumer_is_fenced_off_and_its_late_ack_is_stale(
        broker_factory: BrokerFactory, tmp_path: Path) -> None:
    broker = await broker_factory("--heartbeat", str(HEARTBEAT))
    ep = broker.endpoint
    a = await start_script("qa_consumer.py", ep, "fence", log=tmp_path / "consumer-a.log")
    stopped = False
    try:
        async with zq.Client(ep, name="qa-consumer-b") as c:
            mid = await c.publish("fence", b"only once")
            assert (await a.wait_for_line("GOT ")).split() == ["GOT", str(mid), "1"]

            # B subscribes only now, so the message can reach it only through A's loss.
            async with c.consume("fence", prefetch=1) as b:
                a.signal(signal.SIGSTOP)
                stopped = True
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                m = await b.get(timeout=10)
                took = loop.time() - t0
                assert (m.id, m.body, m.attempt) == (mid, b"only once", 2)
                assert took >= HEARTBEAT * 1.5, f"A lost its lease after only {took:.3f}s"
                assert [e["outcome"] for e in m.history] == ["consumer lost"], m.history

                a.signal(signal.SIGCONT)
                stopped = False
                tell(a, "ack")
                line = await a.wait_for_line("ACK ", timeout=10)
                assert line == "ACK STALE_DELIVERY", f"{line!r}; A's stderr:\n{a.stderr()}"

                await m.ack(wait=True)  # B holds the current attempt: accepted
                await c.sync()
                s = await queue_stats(c, "fence")
                assert s["acked"] == 1, s
                assert (s["ready"], s["in_flight"], s["delayed"]) == (0, 0, 0), s
                assert s["delivered"] == 2, s

                # No third delivery, to B or to A (which consumes again after its ack).
                await no_delivery(b, within=0.5)
                await no_line(a, "GOT ", within=0.3)
                await c.sync()
                s = await queue_stats(c, "fence")
                assert (s["delivered"], s["acked"], s["ready"], s["in_flight"]) == \
                    (2, 1, 0, 0), s
                counters = (await c.stats())["counters"]
                assert counters["acked"] == 1, counters
                assert counters["redelivered"] == 1, counters
    finally:
        if stopped:
            a.signal(signal.SIGCONT)
        await a.kill()
