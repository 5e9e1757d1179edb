"""Issue 17, acceptance 1: fan-out through a topic, real processes.

Five queues bound to topic ``orders`` (three exact keys, two patterns, bound with the
real ``zq topic bind``); a producer publishes 10,000 messages with keys that match one,
several or none of the bindings, while the broker is SIGKILLed once mid-run and started
again on its data folder. Then every queue is consumed. It proves:

* each queue holds exactly the messages its binding matches, once each: for every
  confirmed publish, every matching queue has its copy (lost = 0) and no other queue
  has one;
* no half fan-out: a publish that was not confirmed (cut by the kill) is in all of its
  matching queues or in none;
* a key that matches nothing is refused with UNROUTABLE and stored nowhere.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path

import zq
from tests.admin_helpers import scrape, value
from tests.cluster_helpers import zq_cli
from tests.helpers import free_port
from tests.procs import Proc, zq_argv

BINDINGS = {  # queue -> pattern
    "eu-paid": "orders.eu.paid", "us-paid": "orders.us.paid", "eu-new": "orders.eu.new",
    "eu-all": "orders.eu.#", "any-paid": "orders.*.paid"}
KEYS = ("orders.eu.paid", "orders.us.paid", "orders.eu.new", "orders.eu.gift.wrap",
        "orders.jp.paid", "orders.eu", "orders.us.new", "invoices.eu.paid")
EXPECTED = {  # key -> the queues its publishes go to
    "orders.eu.paid": {"eu-paid", "eu-all", "any-paid"},
    "orders.us.paid": {"us-paid", "any-paid"},
    "orders.eu.new": {"eu-new", "eu-all"},
    "orders.eu.gift.wrap": {"eu-all"},
    "orders.jp.paid": {"any-paid"},
    "orders.eu": {"eu-all"},
    "orders.us.new": set(),
    "invoices.eu.paid": set(),
}
TOTAL = 10_000
FRAME = 10


async def start(tmp: Path, endpoint: str, n: int, *args: str) -> Proc:
    proc = await Proc.start(zq_argv("--log-level", "info", "broker", "--bind", endpoint,
                                    "--data", str(tmp / "data"), *args),
                            tmp / f"broker-{n}.log")
    await proc.ready_line(30)
    return proc


async def test_fan_out_through_a_kill_loses_no_copy_and_makes_no_half_fan_out(
        tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    broker = await start(tmp_path, endpoint, 0)
    try:
        for queue, pattern in BINDINGS.items():
            code, text = await zq_cli("topic", "bind", "orders", queue, "--pattern", pattern,
                                      "--endpoint", endpoint)
            assert code == 0, text
        confirmed: dict[bytes, str] = {}
        failed: dict[bytes, str] = {}
        errors: Counter[str] = Counter()
        frames = iter(range(0, TOTAL, FRAME))
        async with zq.Client(endpoint, connect_timeout=15.0) as c:

            async def producer() -> None:  # eight of them: frames in flight at the kill
                for i in frames:
                    key = KEYS[(i // FRAME) % len(KEYS)]
                    bodies = [b"%s|%05d" % (key.encode(), j) for j in range(i, i + FRAME)]
                    try:
                        await c.publish_many(None, bodies, topic="orders", key=key)
                        confirmed.update(dict.fromkeys(bodies, key))
                        if len(confirmed) >= TOTAL // 3:
                            third.set()
                    except zq.ZqError as exc:
                        errors[type(exc).__name__] += 1
                        failed.update(dict.fromkeys(bodies, key))

            third = asyncio.Event()
            producers = [asyncio.create_task(producer()) for _ in range(8)]
            await asyncio.wait_for(third.wait(), 60)
            await broker.kill()  # mid-run; the client reconnects to the new one
            broker = await start(tmp_path, endpoint, 1)
            await asyncio.gather(*producers)
            unroutable = {k for k, qs in EXPECTED.items() if not qs}
            assert errors["Unroutable"] == sum(1 for i in range(0, TOTAL, FRAME)
                                              if KEYS[(i // FRAME) % len(KEYS)] in unroutable)
            assert not set(confirmed.values()) & unroutable
            got: dict[str, list[bytes]] = defaultdict(list)

            async def drain(queue: str, n: int) -> None:
                async with c.consume(queue, prefetch=500) as consumer:
                    async with asyncio.timeout(60):
                        async for m in consumer:
                            got[queue].append(m.body)
                            await m.ack()
                            if len(got[queue]) >= n:
                                return

            st = await c.stats()
            await asyncio.gather(*(drain(q, st["queues"][q]["ready"]) for q in BINDINGS))
        held: dict[bytes, set[str]] = defaultdict(set)
        for queue, bodies in got.items():
            assert len(bodies) == len(set(bodies)), f"{queue} holds a message twice"
            for b in bodies:
                held[b].add(queue)
        for b, key in confirmed.items():
            assert held.get(b, set()) == EXPECTED[key], (b, key, held.get(b))
        for b, key in failed.items():
            assert held.get(b, set()) in (set(), EXPECTED[key]), ("half fan-out", b, key)
        assert set(held) <= set(confirmed) | set(failed)
        print(f"topics: confirmed {len(confirmed)}, failed {len(failed)} {dict(errors)}, "
              f"copies {sum(map(len, got.values()))}")
        assert len(confirmed) >= TOTAL * 0.6
    finally:
        await broker.terminate_and_expect_exit(0, within=15)


async def test_the_topic_commands_and_metrics(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    admin = free_port()
    broker = await start(tmp_path, endpoint, 0, "--admin-bind", str(admin))
    ep = ("--endpoint", endpoint)
    try:
        code, text = await zq_cli("topic", "bind", "news", "all", *ep)
        assert (code, text.strip()) == (0, "bound: all <- news (every key)")
        code, text = await zq_cli("topic", "bind", "news", "sport", "-p", "news.sport.*", *ep)
        assert code == 0, text
        code, text = await zq_cli("topic", "publish", "news", "goal", "--key",
                                  "news.sport.football", *ep)
        assert code == 0, text
        first = int(text.split()[0])
        code, text = await zq_cli("topic", "ls", *ep)
        assert "news: published 1, copies 2" in text, text
        code, stats = await zq_cli("stats", *ep)
        assert "topics 1 (2 bindings): published 1, copies 2" in stats, stats
        samples = await scrape(f"http://127.0.0.1:{admin}")
        assert value(samples, "zq_topic_published_total", topic="news") == 1
        assert value(samples, "zq_topic_copies_total", topic="news") == 2
        assert value(samples, "zq_topic_bindings", topic="news") == 2
        assert "sport" in text
        assert "news.sport.*" in text
        code, text = await zq_cli("topic", "unbind", "news", "all", *ep)
        assert (code, text.strip()) == (0, "unbound")
        code, text = await zq_cli("topic", "publish", "news", "x", "--key", "weather", *ep)
        assert code != 0, text
        assert "UNROUTABLE" in text, text
        code, text = await zq_cli("topic", "set", "news", "--unroutable", "drop", *ep)
        assert code == 0, text
        code, text = await zq_cli("topic", "publish", "news", "x", "--key", "weather", *ep)
        assert (code, text.strip()) == (0, "0"), text
        code, text = await zq_cli("topic", "bind", "news", "bad", "-p", "a..b", *ep)
        assert code != 0, text
        assert "pattern" in text, text
        async with zq.Client(endpoint) as c, c.consume("sport", prefetch=1) as consumer:
            m = await asyncio.wait_for(consumer.__anext__(), 10)
            assert (m.body, m.id) == (b"goal", first + 1)  # "all" came first by name
            await m.ack()
    finally:
        await broker.terminate_and_expect_exit(0)
