"""Graceful shutdown and the ready line, with real broker processes.

README: once bound the broker prints one line to stdout, ``ZQ READY <endpoint>``, and
logs go to stderr. On SIGTERM it stops taking new work, finishes the frames it has
received, says BYE to every client, and exits 0.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from pathlib import Path

import zq
from tests.procs import Proc
from tests.system.rawpeer import Raw
from zq.protocol import frames as f

ENDPOINT = re.compile(r"tcp://127\.0\.0\.1:(\d+)")


async def test_sigterm_during_traffic_exits_0_and_clients_end_cleanly(broker: Proc) -> None:
    confirmed: list[int] = []
    acked: list[int] = []
    flowing = asyncio.Event()

    async with zq.Client(broker.endpoint, name="producer") as producer, \
            zq.Client(broker.endpoint, name="consumer") as consumer_client:

        async def produce() -> zq.ZqError:
            k = 0
            while True:
                try:
                    ids = await producer.publish_many(
                        "load", [f"m-{k + i}".encode() for i in range(500)])
                except zq.ZqError as exc:
                    return exc
                confirmed.extend(ids)
                k += 500

        async def consume() -> zq.ZqError:
            try:
                async with consumer_client.consume("load", prefetch=200) as consumer:
                    async for msg in consumer:
                        await msg.ack()
                        acked.append(msg.id)
                        if len(acked) >= 2000:
                            flowing.set()
            except zq.ZqError as exc:
                return exc
            raise AssertionError("the consumer stopped without an error")

        loop = asyncio.get_running_loop()
        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            produced = tg.create_task(produce())
            consumed = tg.create_task(consume())
            await flowing.wait()
            t0 = loop.time()
            broker.signal(signal.SIGTERM)
            rc = await broker.wait(5.0)
            stopped_in = loop.time() - t0

    assert rc == 0, f"exit code {rc}; stderr:\n{broker.stderr()}"
    assert stopped_in < 5.0
    # the producer saw confirms, then a clean error; the consumer was told the broker went
    assert isinstance(produced.result(), zq.ShuttingDown | zq.ConnectionLost), produced.result()
    assert isinstance(consumed.result(), zq.ConnectionLost), consumed.result()
    assert confirmed
    assert len(set(confirmed)) == len(confirmed)
    assert len(set(acked)) == len(acked)


async def test_ready_line_is_the_only_stdout_line(
        broker: Proc, raw: Callable[[str], Raw]) -> None:
    # the fixture read the first line, "ZQ READY <endpoint>", with the real port
    m = ENDPOINT.fullmatch(broker.endpoint)
    assert m is not None, broker.endpoint
    assert int(m.group(1)) > 0
    # some traffic, including an error and a dropped session, so the broker has things to log
    async with zq.Client(broker.endpoint) as c:
        await c.publish_many("q", [b"a", b"b"])
        async with c.consume("q", prefetch=2) as consumer:
            for _ in range(2):
                await (await consumer.get(timeout=5)).ack()
        r = raw(broker.endpoint)
        await r.hello()
        await r.send([b"garbage"])
        assert (await r.error()).name == "MALFORMED_FRAME"
        await c.stats()
    await broker.terminate_and_expect_exit(0)
    assert broker.proc.stdout is not None
    rest = await asyncio.wait_for(broker.proc.stdout.read(), 5)
    assert rest == b"", f"stdout after the ready line: {rest[:500]!r}"
    assert "dropped" in broker.stderr()  # the logs went to stderr


async def test_connected_clients_hear_bye_on_sigterm(
        broker: Proc, raw: Callable[[str], Raw]) -> None:
    peers = [raw(broker.endpoint) for _ in range(3)]
    for r in peers:
        await r.hello()
    broker.signal(signal.SIGTERM)
    for r in peers:
        frame = await r.recv()
        assert isinstance(frame, f.Bye), frame
        assert frame.reason
    assert await broker.wait(5.0) == 0


async def test_scripts_run_prints_ready_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    proc = await Proc.start(["bash", "scripts/run", "--bind", "tcp://127.0.0.1:*",
                             "--data", str(tmp_path / "d")], log=tmp_path / "run.log")
    try:
        line = await proc.readline(timeout=30)
        m = re.fullmatch(r"ZQ READY (tcp://127\.0\.0\.1:(\d+))", line)
        assert m is not None, f"{line!r}; stderr:\n{proc.stderr()}"
        assert int(m.group(2)) > 0
        async with zq.Client(m.group(1)) as c:  # a real broker answers there
            assert await c.publish("q", b"hello") == 1
        await proc.terminate_and_expect_exit(0, within=5.0)
        assert proc.proc.stdout is not None
        assert await asyncio.wait_for(proc.proc.stdout.read(), 5) == b""
    finally:
        await proc.kill()
