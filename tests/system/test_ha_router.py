"""Issue 15: routers learn a replicated broker's new primary from etcd (a watch), and
producers publishing through a router lose nothing and store nothing twice when the
primary is killed; a consumer that located the queue through the router follows it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import zq
from tests.etcd import Etcd
from tests.helpers import eventually
from tests.procs import Proc, zq_argv
from tests.system.ha_helpers import HaPair, Producers, check_stored, same_rows

pytestmark = pytest.mark.timeout(180)



async def test_a_router_links_to_the_new_primary_and_publishes_lose_nothing(
        tmp_path: Path, etcd: Etcd) -> None:
    cluster = tmp_path / "cluster.toml"
    pair = HaPair(tmp_path, etcd, "--cluster", str(cluster))
    cluster.write_text(f'cluster_id = "c"\nversion = 1\n[[brokers]]\nid = "B1"\n'
                       f'endpoint = "{pair.endpoints[0]}"\n', encoding="utf-8")
    router = await Proc.start(zq_argv("--log-level", "info", "router", "--bind",
                                      "tcp://127.0.0.1:*", "--cluster", str(cluster),
                                      "--ha", pair.etcd_url, "--heartbeat", "0.2"),
                              tmp_path / "router.log")
    producers: Producers | None = None
    try:
        r_ep = await router.ready_line()
        await pair.start_both()
        producers = Producers([r_ep], n=2)
        producers.start()
        await eventually(lambda: producers.count > 200, "publishing through the router", 20)
        pair.kill(0)
        killed = time.monotonic()
        assert await pair.reap(0) == -signal.SIGKILL
        await pair.wait_leader("n1")
        count = producers.count
        await eventually(lambda: producers.count > count + 200,
                         "confirms through the router from the new primary", 30)
        assert "B1 at " + pair.endpoints[1] in router.stderr()
        gap = producers.largest_gap(killed - 1.0, time.monotonic())
        assert gap <= 8.0, f"no confirm through the router for {gap:.1f}s"
        await producers.stop()
        async with zq.Client(r_ep, connect_timeout=10) as c:  # located through the router
            assert (await c.locate("q"))["endpoint"] == pair.endpoints[1]
        await pair.start(0)
        await pair.wait_sync("n0")
        status = await Proc.start(zq_argv("cluster", "status", "--cluster", str(cluster),
                                          "--ha", pair.etcd_url), tmp_path / "status.log")
        assert await status.wait(20) == 0, status.stderr()
        out = (await status.proc.stdout.read()).decode()  # type: ignore[union-attr]
        term = await pair.term()
        assert f"broker B1           {pair.endpoints[1]}" in out, out
        assert f"ha: primary n1 term {term}, standby n0 in sync, mode sync, lag 0" in out, out
        check_stored(pair, producers.confirmed, 1)
        await same_rows(pair)
    finally:
        if producers is not None and not producers._stop.is_set():
            await producers.stop()
        await pair.stop()
        await router.terminate_and_expect_exit(0)
