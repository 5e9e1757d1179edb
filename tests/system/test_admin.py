"""The admin listener on real processes (issue 16, acceptance 1): ``/metrics`` scraped
during traffic has each named series with the values the traffic made (counts exact,
rates plausible), on a broker and on a router; the JSON API agrees; a token guards it
when one is set; hostile HTTP gets an error and the listener serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import zq
from tests.admin_helpers import get, get_json, scrape, value
from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
from tests.helpers import eventually, free_port
from tests.procs import Proc, start_broker, zq_argv


async def _broker(tmp: Path, *args: str) -> tuple[Proc, str]:
    port = free_port()
    proc = await start_broker(tmp, "--admin-bind", f"127.0.0.1:{port}", *args)
    return proc, f"http://127.0.0.1:{port}"


async def test_broker_metrics_match_the_traffic(tmp_path: Path) -> None:
    proc, base = await _broker(tmp_path)
    try:
        async with zq.Client(proc.endpoint, name="admin-test") as c:
            await c.declare_queue("work", max_attempts=1)
            for i in range(10):  # 10 frames of 50
                await c.publish_many("work", [b"w%d" % (i * 50 + k) for k in range(50)])
            for i in range(7):
                await c.publish("idle", b"i%d" % i)
            acked = nacked = 0
            async with c.consume("work", prefetch=20) as consumer:
                async for m in consumer:
                    if nacked < 10:
                        await m.nack(requeue=False, reason=f"bad input {nacked}")
                        nacked += 1
                    else:
                        await m.ack()
                        acked += 1
                    if acked + nacked == 300:
                        break
                await c.sync()
                s = await scrape(base)
                assert value(s, "zq_queue_consumers", queue="work") == 1
                api = await get_json(base + "/api/consumers")
                mine = [x for x in api["consumers"] if x["queue"] == "work"]
                assert [x["name"] for x in mine] == ["admin-test"]
                assert 0 <= mine[0]["in_flight"] <= 20
                assert mine[0]["credit"] >= 0
            await c.sync()

            async def settled() -> bool:
                s = await scrape(base)
                return (value(s, "zq_queue_ready_messages", queue="work") == 200
                        and value(s, "zq_queue_in_flight_messages", queue="work") == 0)

            await eventually(settled, "the consumer's unacked messages back to ready")
            s = await scrape(base)
        assert value(s, "zq_queue_published_total", queue="work") == 500
        assert value(s, "zq_queue_published_total", queue="idle") == 7
        assert value(s, "zq_queue_ready_messages", queue="idle") == 7
        assert value(s, "zq_queue_acked_total", queue="work") == 290
        assert value(s, "zq_queue_nacked_total", queue="work") == 10
        assert value(s, "zq_queue_dead_letters_total", queue="work") == 10
        assert value(s, "zq_queue_ready_messages", queue="work.dlq") == 10
        assert value(s, "zq_queue_consumers", queue="work") == 0
        assert value(s, "zq_queue_paused", queue="work") == 0
        assert value(s, "zq_queue_oldest_ready_age_seconds", queue="idle") > 0
        delivered = value(s, "zq_queue_delivered_total", queue="work")
        redelivered = value(s, "zq_queue_redelivered_total", queue="work")
        assert delivered >= 300
        # Every publish was confirmed once and every first delivery observed once.
        assert value(s, "zq_publish_confirm_latency_seconds_count") == 507
        assert value(s, "zq_publish_deliver_latency_seconds_count") == delivered - redelivered
        assert value(s, "zq_publish_confirm_latency_seconds_bucket", le="+Inf") == 507
        assert value(s, "zq_store_commit_duration_seconds_count") >= 1
        assert value(s, "zq_store_commit_batch_messages_sum") == 507
        assert value(s, "zq_store_database_bytes") > 0
        assert value(s, "zq_store_full") == 0
        assert value(s, "zq_sessions") == 1
        assert value(s, "zq_peers_dropped_total") == 0
        assert value(s, "zq_unroutable_sends_total") == 0
        dead = (await get_json(base + "/api/dead"))["dead"]
        assert sorted(d["reason"] for d in dead) == sorted(f"bad input {i}" for i in range(10))
        assert {d["origin"] for d in dead} == {"work"}
        why = await get_json(base + f"/api/messages/{dead[0]['id']}/explain")
        assert (why["state"], why["id"]) == ("dead", dead[0]["id"])
        assert "bad input" in why["reason"]
        gone = await get_json(base + "/api/messages/999999/explain")
        assert gone["state"] == "not_found"
        one = await get_json(base + "/api/queues/work")
        assert (one["published"], one["acked"], one["dead"]) == (500, 290, 10)
        assert len(one["dead_letters"]) == 10
        status, _, _ = await get(base + "/api/queues/nothing-here")
        assert status == 404
    finally:
        await proc.terminate_and_expect_exit(0)


async def test_rates_follow_paced_traffic(tmp_path: Path) -> None:
    """About 1,000 msg/s for a few seconds: the per-second rates the API and the
    dashboard show follow what the test really sent (within a factor of 2.5 of its own
    rate over the last 5 s: the broker's is a moving average), and settle to 0 once it
    stops."""
    proc, base = await _broker(tmp_path, "--storage", "memory")
    try:
        async with zq.Client(proc.endpoint) as c:
            stop = asyncio.Event()
            sent: list[tuple[float, int]] = []  # (when, published so far)
            loop = asyncio.get_running_loop()

            async def paced() -> None:
                n = 0
                while not stop.is_set():  # pacing the traffic, not waiting for an event
                    await c.publish_many("paced", [b"x"] * 100)
                    n += 100
                    sent.append((loop.time(), n))
                    await asyncio.sleep(0.1)

            def ours() -> float:
                """What the test sent per second over its last 5 s."""
                recent = [(t, n) for t, n in sent if t >= sent[-1][0] - 5.0]
                (t0, n0), (t1, n1) = recent[0], recent[-1]
                return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

            task = asyncio.create_task(paced())
            try:
                async def rate() -> bool:
                    if not sent or loop.time() - sent[0][0] <= 5.0:
                        return False  # (the queue exists once the first batch is in)
                    q = await get_json(base + "/api/queues/paced")
                    have = ours()
                    return have > 0 and have / 2.5 <= q["rates"]["publish"] <= have * 2.5

                await eventually(rate, "the publish rate near the test's own", timeout=30.0)
                overview = await get_json(base + "/api/overview")
                assert ours() / 3 <= overview["rates"]["publish"] <= ours() * 3
                assert overview["latency_s"]["publish_confirm"]["count"] > 0
            finally:
                stop.set()
                await task

            async def quiet() -> bool:
                q = await get_json(base + "/api/queues/paced")
                return q["rates"]["publish"] < 50

            await eventually(quiet, "the rate back near 0", timeout=30.0)
    finally:
        await proc.terminate_and_expect_exit(0)


async def test_router_metrics_and_cluster_view(tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    write_cluster(file, ["b1", "b2"])
    brokers = [await start_cluster_broker(tmp_path, file, b) for b in ("b1", "b2")]
    port = free_port()
    router = await start_router(tmp_path, file, "--admin-bind", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        names = [f"q{i}" for i in range(6)]
        async with zq.Client(router.endpoint) as c:
            for name in names:
                for k in range(20):
                    await c.publish(name, b"%d" % k)
        s = await scrape(base)
        assert value(s, "zq_router_link_up", broker="b1") == 1
        assert value(s, "zq_router_link_up", broker="b2") == 1
        assert value(s, "zq_router_link_state", broker="b1", state="up") == 1
        assert value(s, "zq_router_forwarded_publishes_total") == 120
        assert value(s, "zq_router_link_in_flight_publishes", broker="b1") == 0
        assert value(s, "zq_router_link_in_flight_publishes", broker="b2") == 0
        out = sum(value(s, "zq_router_link_forwarded_out_total", broker=b) for b in ("b1", "b2"))
        assert out >= 120
        assert value(s, "zq_router_link_errors_total", broker="b1") == 0

        async def catalogued() -> bool:
            s = await scrape(base)
            return sum(value(s, "zq_router_link_queues", broker=b) for b in ("b1", "b2")) == 6

        await eventually(catalogued, "both brokers' catalogs at the router")
        cluster = await get_json(base + "/api/cluster")
        assert {b: v["state"] for b, v in cluster["brokers"].items()} == {"b1": "up",
                                                                          "b2": "up"}
        placed = sorted(n for v in cluster["brokers"].values() for n in v["queue_names"])
        assert placed == names
        queues = await get_json(base + "/api/queues")
        assert sorted(q["name"] for q in queues["queues"]) == names
        overview = await get_json(base + "/api/overview")
        assert (overview["kind"], overview["links_up"]) == ("router", 2)
        health = await get_json(base + "/health")
        assert health == {"status": "ok", "kind": "router", "id": "r1", "links_up": 2,
                          "links_total": 2}
    finally:
        await router.terminate_and_expect_exit(0)
        for b in brokers:
            await b.terminate_and_expect_exit(0)


async def test_token_guards_everything_but_health_and_the_page(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("s3cret-admin-token-0123456789\n")
    token.chmod(0o600)
    proc, base = await _broker(tmp_path, "--admin-token", str(token))
    try:
        for path in ("/metrics", "/api/overview", "/api/queues", "/api/messages/1/explain"):
            status, headers, body = await get(base + path)
            assert status == 401, path
            assert json.loads(body)["error"]["code"] == "UNAUTHORIZED"
            assert headers["WWW-Authenticate"].startswith("Bearer")
            status, _, _ = await get(base + path, {"Authorization": "Bearer wrong-token-wrong"})
            assert status == 401
        good = {"Authorization": "Bearer s3cret-admin-token-0123456789"}
        assert (await get_json(base + "/api/overview", good))["kind"] == "broker"
        assert (await scrape(base, good))
        assert (await get_json(base + "/health"))["status"] == "ok"
        status, headers, _ = await get(base + "/")
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    finally:
        await proc.terminate_and_expect_exit(0)


async def _refused(tmp: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *zq_argv("broker", "--bind", "tcp://127.0.0.1:*", "--data", str(tmp / "d"), *args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, out
    return out.decode()


async def test_unsafe_admin_settings_are_refused(tmp_path: Path) -> None:
    out = await _refused(tmp_path, "--admin-bind", f"0.0.0.0:{free_port()}")
    assert "not a loopback address" in out
    out = await _refused(tmp_path, "--admin-token", str(tmp_path / "t"))
    assert "--admin-token needs --admin-bind" in out
    out = await _refused(tmp_path, "--admin-bind", "nowhere:x")
    assert "must look like" in out
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    short.chmod(0o600)
    out = await _refused(tmp_path, "--admin-bind", str(free_port()), "--admin-token", str(short))
    assert "at least 16" in out
    (tmp_path / "one").mkdir()
    proc, base = await _broker(tmp_path / "one")
    try:
        out = await _refused(tmp_path, "--admin-bind", base.rsplit(":", 1)[1])
        assert "cannot start broker" in out
    finally:
        await proc.terminate_and_expect_exit(0)


async def _raw(port: int, data: bytes, eof: bool = False) -> bytes:
    """Send ``data`` (then close our side, with ``eof``) and read what comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if eof:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_hostile_http_gets_errors_and_the_listener_serves_on(tmp_path: Path) -> None:
    proc, base = await _broker(tmp_path)
    port = int(base.rsplit(":", 1)[1])
    try:
        assert (await _raw(port, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")
        huge = b"GET / HTTP/1.1\r\nHost: [::1]\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
        assert (await _raw(port, huge)).startswith(b"HTTP/1.1 431")
        post = b"POST /metrics HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 3\r\n\r\nabc"
        assert (await _raw(port, post)).startswith(b"HTTP/1.1 405")
        assert (await _raw(port, b"GET /api/messages/xyz/explain HTTP/1.1\r\nHost: [::1]\r\n\r\n"
                           )).startswith(b"HTTP/1.1 400")
        assert (await _raw(port, b"GET /api/messages/99999999999999999999999/explain HTTP/1.1"
                           b"\r\nHost: [::1]\r\n\r\n")).startswith(b"HTTP/1.1 400")
        # Many idle connections: past the cap they are closed at once; the rest wait.
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(80)]
        try:
            closed = 0
            for reader, _ in held:
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                        closed += 1
            assert closed >= 80 - 64
        finally:
            for _, writer in held:
                writer.close()
        async with zq.Client(proc.endpoint) as c:  # the broker never noticed
            await c.publish("still", b"fine")
        assert (await get_json(base + "/api/queues/still"))["ready"] == 1
        head = await _raw(port, b"HEAD /health HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert head.endswith(b"\r\n\r\n")
    finally:
        await proc.terminate_and_expect_exit(0)


async def test_slow_and_broken_clients_do_not_lock_the_listener_out(tmp_path: Path) -> None:
    """Found by a hostile review: 64 connections trickling request heads kept /health
    out; a body cut short logged a traceback per connection; a clean shutdown logged
    one per open keep-alive connection; a page of another site could read the API by
    DNS rebinding."""
    proc, base = await _broker(tmp_path)
    port = int(base.rsplit(":", 1)[1])
    try:
        slow = []
        for _ in range(70):  # each sends half a request head, then nothing
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHo")
            await writer.drain()
            slow.append((reader, writer))
        for _ in range(5):  # each new one evicts the slowest: health answers at once
            status, _, body = await asyncio.wait_for(get(base + "/health"), 5)
            assert status == 200, body
        for _, writer in slow:
            writer.close()
        for _ in range(20):  # bodies cut short, chunked garbage
            await _raw(port, b"GET /health HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 10\r\n\r\n",
                       eof=True)
            assert (await _raw(port, b"GET /health HTTP/1.1\r\nHost: [::1]\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
                    ).startswith(b"HTTP/1.1 400")
        rebound = await _raw(port, b"GET /api/overview HTTP/1.1\r\nHost: evil.example:80\r\n\r\n")
        assert rebound.startswith(b"HTTP/1.1 421")
        assert (await _raw(port, b"GET /api/messages/%C2%B2/explain HTTP/1.1\r\nHost: [::1]\r\n\r\n"
                           )).startswith(b"HTTP/1.1 400")
        kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for reader, writer in kept:  # keep-alive connections open at shutdown
            writer.write(b"GET /health HTTP/1.1\r\nHost: [::1]\r\n\r\n")
            await writer.drain()
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await proc.terminate_and_expect_exit(0)
        for _, writer in kept:
            writer.close()
        log = proc.stderr()
        assert "Traceback" not in log, log
        assert "ERROR" not in log, log
    finally:
        await proc.kill()
