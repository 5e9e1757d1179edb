"""Issue 14: what an edge broker's uplink does, with real processes on loopback.

* options travel: priority, tenant, delay (as a due time), TTL (what is left of it),
  dedup ids and headers arrive at the centre with the message;
* a forwarded queue is not consumed at the edge (CREDIT refused with a clear error);
  another queue is, as always;
* while the centre is away, messages wait on the edge's disk, the edge's storage limit
  refuses publishes with STORAGE_FULL, ``zq stats`` and ``/metrics`` show the uplink
  down with its backlog and oldest age; when the centre comes, all of it goes, once;
* a message the centre refuses for good (too large for its ``max_frame``) is
  dead-lettered at the edge with the reason, and the rest goes on;
* bad uplink settings stop ``zq broker`` with exit code 2 and a message.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import zq
from tests.admin_helpers import scrape, value
from tests.cluster_helpers import zq_cli
from tests.helpers import eventually, free_port
from tests.procs import Proc, start_broker, zq_argv
from tests.security_helpers import Keyring, curve_client, start_curve_broker, write_permissions


async def stats(endpoint: str) -> dict[str, Any]:
    async with zq.Client(endpoint, connect_timeout=5.0) as c:
        return await c.stats()


async def drained(edge: str) -> bool:
    return bool((await stats(edge))["uplink"]["backlog"] == 0)


async def take(endpoint: str, queue: str, n: int, timeout: float = 20.0) -> list[Any]:
    out: list[Any] = []
    async with zq.Client(endpoint) as c, c.consume(queue, prefetch=100) as consumer:
        async with asyncio.timeout(timeout):
            async for m in consumer:
                out.append(m)
                await m.ack()
                if len(out) == n:
                    break
    return out


async def first_message(c: zq.Client, queue: str) -> Any:
    async with c.consume(queue, prefetch=1) as consumer:
        async with asyncio.timeout(5):
            return await consumer.__anext__()


async def fill(c: zq.Client, body: bytes, sent: list[bytes]) -> None:
    """Publish frames of ten until the edge refuses one; ``sent``: those confirmed."""
    for i in range(5000):
        bodies = [body + b"%05d" % (i * 10 + k) for k in range(10)]
        await c.publish_many("up.q", bodies)
        sent += bodies


async def test_options_travel_and_forwarded_queues_are_not_consumed_here(
        tmp_path: Path) -> None:
    centre = await start_broker(tmp_path, "--data", str(tmp_path / "centre"))
    edge = await start_broker(tmp_path, "--data", str(tmp_path / "edge"), "--uplink",
                              centre.endpoint, "--uplink-queues", "jobs.#,metrics.*",
                              "--id", "shop-7")
    try:
        async with zq.Client(edge.endpoint) as c:
            due = time.time() + 3.0
            await c.publish_many("jobs.low", [b"l1", b"l2"], priority=1)
            await c.publish("jobs.low", b"h1", priority=9, headers={"who": "edge"})
            await c.publish("jobs.t", b"t1", tenant="shop-7", ttl=300.0)
            await c.publish("jobs.later", b"d1", eta=due)
            await c.publish("jobs.dd", b"k1", dedup_id="order-17")
            await c.publish("local.q", b"here")
            with pytest.raises(zq.ZqError, match="forwarded to the centre"):
                await first_message(c, "jobs.low")
            got = await take(edge.endpoint, "local.q", 1)
            assert [m.body for m in got] == [b"here"]
        await eventually(lambda: drained(edge.endpoint), "the edge to forward all", 20, 0.05)
        st = await stats(centre.endpoint)
        names = [p["name"] for p in st["peers"].values()]
        nonce = (tmp_path / "edge" / "uplink-id").read_text().split()[0]
        assert f"uplink shop-7/{nonce}" in names, names  # its producer id: --id and nonce
        assert (tmp_path / "edge" / "broker-id").read_text().strip() == "shop-7"
        assert st["queues"]["jobs.later"]["delayed"] == 1
        assert st["queues"]["jobs.t"]["tenants"]["shop-7"]["weight"] == 1
        low = await take(centre.endpoint, "jobs.low", 3)
        assert [m.body for m in low] == [b"h1", b"l1", b"l2"]  # priority 9 first
        assert low[0].headers == {"who": "edge"}
        async with zq.Client(centre.endpoint) as c:  # the dedup id came along
            first = await c.publish("jobs.dd", b"k1-again", dedup_id="order-17")
        later = await take(centre.endpoint, "jobs.later", 1)
        assert time.time() >= due - 0.01, "the delayed message came before its due time"
        assert [m.body for m in later] == [b"d1"]
        dd = await take(centre.endpoint, "jobs.dd", 1)
        assert [m.body for m in dd] == [b"k1"]
        assert dd[0].id == first
        est = await stats(edge.endpoint)
        assert est["uplink"]["confirmed"] == 6
        assert est["uplink"]["state"] == "up"
        assert est["queues"]["local.q"]["acked"] == 1
    finally:
        await edge.terminate_and_expect_exit(0)
        await centre.terminate_and_expect_exit(0)


async def test_centre_away_storage_full_then_everything_goes_once(tmp_path: Path) -> None:
    port = free_port()
    centre_ep = f"tcp://127.0.0.1:{port}"
    admin = free_port()
    edge = await start_broker(tmp_path, "--data", str(tmp_path / "edge"), "--uplink",
                              centre_ep, "--uplink-queues", "up.#", "--max-db-bytes",
                              str(3 * 1024 * 1024), "--reserve-bytes", "0",
                              "--admin-bind", str(admin))
    centre: Proc | None = None
    sent: list[bytes] = []
    try:
        body = b"x" * 2000
        async with zq.Client(edge.endpoint) as c:
            with pytest.raises(zq.ZqError) as full:
                await fill(c, body, sent)
            assert isinstance(full.value, zq.errors.StorageFull), full.value
        up = (await stats(edge.endpoint))["uplink"]
        assert up["state"] != "up"
        assert up["backlog"] == len(sent)
        assert up["oldest_age"] > 0
        code, text = await zq_cli("stats", "--endpoint", edge.endpoint)
        assert code == 0, text
        assert "uplink down" in text or "uplink connecting" in text, text
        assert f"backlog {len(sent)}" in text, text
        samples = await scrape(f"http://127.0.0.1:{admin}")
        assert value(samples, "zq_uplink_up") == 0
        assert value(samples, "zq_uplink_backlog_messages") == len(sent)
        assert value(samples, "zq_uplink_oldest_unforwarded_age_seconds") > 0
        centre = await start_broker(tmp_path, "--bind", centre_ep, "--data",
                                    str(tmp_path / "centre"))
        await eventually(lambda: drained(edge.endpoint), "the backlog to go", 60, 0.1)

        async def metrics_say_done() -> bool:  # /metrics is cached for a second
            samples = await scrape(f"http://127.0.0.1:{admin}")
            return (value(samples, "zq_uplink_up") == 1 and value(
                samples, "zq_uplink_forwarded_messages_total") == len(sent))

        await eventually(metrics_say_done, "the metrics to say so", 10, 0.2)
        st = await stats(centre.endpoint)
        assert st["queues"]["up.q"]["published"] == len(sent)
        got = await take(centre.endpoint, "up.q", len(sent), 60)
        assert sorted(m.body for m in got) == sorted(sent)
        async with zq.Client(edge.endpoint) as c:  # room again at the edge
            await c.publish("up.q", b"after")
    finally:
        await edge.terminate_and_expect_exit(0)
        if centre is not None:
            await centre.terminate_and_expect_exit(0)


async def test_refused_for_good_is_dead_lettered_at_the_edge(tmp_path: Path) -> None:
    """The centre's max_frame is smaller than the edge's: a frame of many messages is
    sent in halves until each fits; one message larger than it is dead here."""
    centre = await start_broker(tmp_path, "--data", str(tmp_path / "centre"),
                                "--max-frame", "4096")
    edge = await start_broker(tmp_path, "--data", str(tmp_path / "edge"), "--uplink",
                              centre.endpoint, "--uplink-queues", "big.*")
    try:
        async with zq.Client(edge.endpoint) as c:
            await c.publish("big.q", b"small-1")
            await c.publish("big.q", b"B" * 20_000)
            await c.publish("big.q", b"small-2")
            parts = [b"%02d" % i + b"." * 1000 for i in range(10)]
            await c.publish_many("big.q", parts)  # too large as one frame, not each
        await eventually(lambda: drained(edge.endpoint), "the edge to be done", 20, 0.05)
        dead = await take(edge.endpoint, "big.q.dlq", 1)
        assert dead[0].body == b"B" * 20_000
        assert "FRAME_TOO_LARGE" in (dead[0].dead_reason or "")
        assert dead[0].history[-1]["outcome"] == "refused"
        got = await take(centre.endpoint, "big.q", 12)
        assert sorted(m.body for m in got) == sorted([b"small-1", b"small-2", *parts])
        up = (await stats(edge.endpoint))["uplink"]
        assert up["refused"] == 1
        assert up["confirmed"] == 12
        assert up["split"] >= 1
    finally:
        await edge.terminate_and_expect_exit(0)
        await centre.terminate_and_expect_exit(0)


@pytest.mark.parametrize(("args", "says"), [
    (["--uplink", "tcp://127.0.0.1:1"], "--uplink needs --uplink-queues"),
    (["--uplink-queues", "a.#"], "needs --uplink ENDPOINT"),
    (["--uplink", "tcp://127.0.0.1", "--uplink-queues", "a"], "needs a host and a port"),
    (["--uplink", "tcp://127.0.0.1:1", "--uplink-queues", "a..b"], "--uplink-queues"),
    (["--uplink", "tcp://127.0.0.1:1", "--uplink-queues", "a", "--storage", "memory"],
     "--storage sqlite"),
    (["--id", "e1"], "--id alone names an edge broker with --uplink"),
])
async def test_bad_uplink_settings_stop_the_broker_with_a_message(
        tmp_path: Path, args: list[str], says: str) -> None:
    proc = await Proc.start(zq_argv("broker", "--bind", "tcp://127.0.0.1:*", "--data",
                                    str(tmp_path / "d"), *args), tmp_path / "bad.log")
    assert await proc.wait(30) == 2
    assert says in proc.stderr()


async def test_uplink_over_curve_within_the_edge_keys_rights(tmp_path: Path) -> None:
    """The centre asks for CURVE: the edge proves its own key, and the centre's
    permissions bound what it may forward. A queue it may not publish to waits at the
    edge (FORBIDDEN is retried: an operator may grant the right), the others go."""
    ring = Keyring(tmp_path)
    server, edge_key, reader = ring.make("centre"), ring.make("edge-7"), ring.make("reader")
    perms = write_permissions(tmp_path / "perms.toml", {
        "edge-7": {"publish": ["sensors.#"]},
        "reader": {"consume": ["#"], "admin": True}})
    centre = await start_curve_broker(tmp_path, server, ring.authorized, perms, "--data",
                                      str(tmp_path / "centre"))
    edge = await start_broker(tmp_path, "--data", str(tmp_path / "edge"), "--uplink",
                              centre.endpoint, "--uplink-queues", "sensors.#,secret.*",
                              "--uplink-curve-secret", str(edge_key.secret),
                              "--uplink-server-key", str(server.public))
    try:
        async with zq.Client(edge.endpoint) as c:
            await c.publish_many("sensors.t1", [b"21.5", b"21.7"])
            await c.publish("secret.x", b"nope")

        async def sensors_gone() -> bool:
            up = (await stats(edge.endpoint))["uplink"]
            return bool(up["confirmed"] == 2 and up["retried"] >= 1)

        await eventually(sensors_gone, "the permitted queue forwarded", 20, 0.05)
        up = (await stats(edge.endpoint))["uplink"]
        assert up["backlog"] == 1, up
        assert "FORBIDDEN" in up["last_error"], up
        async with curve_client(centre.endpoint, reader, server) as c, \
                c.consume("sensors.t1", prefetch=10) as consumer:
            got = []
            async with asyncio.timeout(10):
                async for m in consumer:
                    got.append(m.body)
                    await m.ack()
                    if len(got) == 2:
                        break
            assert got == [b"21.5", b"21.7"]
            st = await c.stats()
            assert "secret.x" not in st["queues"] or st["queues"]["secret.x"]["published"] == 0
    finally:
        await edge.terminate_and_expect_exit(0)
        await centre.terminate_and_expect_exit(0)


async def test_a_database_restored_by_hand_loses_nothing_new(tmp_path: Path) -> None:
    """An edge's zq.db put back from a backup into its folder (which keeps uplink-id):
    the ids of the old database are given again to new messages. The edge sees that its
    database is older than what it sent, takes a new producer id, and the centre stores
    the new messages (it would otherwise take them for old frames, confirm and drop
    them). What was forwarded after the backup goes again: at least once."""
    centre = await start_broker(tmp_path, "--data", str(tmp_path / "centre"))
    data = tmp_path / "edge"
    args = ("--data", str(data), "--uplink", centre.endpoint, "--uplink-queues", "up.#")
    edge = await start_broker(tmp_path, *args)
    try:
        code, text = await zq_cli("backup", "--data", str(data), str(tmp_path / "bk"))
        assert code == 0, text
        async with zq.Client(edge.endpoint) as c:
            await c.publish_many("up.q", [b"old-%d" % i for i in range(20)])
        await eventually(lambda: drained(edge.endpoint), "the first ones to go", 20, 0.05)
        await edge.terminate_and_expect_exit(0)
        for name in ("zq.db-wal", "zq.db-shm"):
            (data / name).unlink(missing_ok=True)
        (data / "zq.db").write_bytes((tmp_path / "bk" / "zq.db").read_bytes())
        edge = await start_broker(tmp_path, *args)
        async with zq.Client(edge.endpoint) as c:
            await c.publish_many("up.q", [b"new-%d" % i for i in range(20)])
        await eventually(lambda: drained(edge.endpoint), "the new ones to go", 20, 0.05)
        got = await take(centre.endpoint, "up.q", 40)
        assert sorted(m.body for m in got) == sorted(
            [b"old-%d" % i for i in range(20)] + [b"new-%d" % i for i in range(20)])
        assert "older than what was forwarded" in edge.stderr()
    finally:
        await edge.terminate_and_expect_exit(0)
        await centre.terminate_and_expect_exit(0)

