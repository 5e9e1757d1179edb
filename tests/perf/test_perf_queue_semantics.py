"""perf's queue-semantics scenarios without processes: how `lanes` tags batches and
reports ratios, how `delays` draws delays and judges lateness, and their suite steps."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from perf import delays, lanes, suite
from perf.common import WorkerSpec
from perf.config import TENANT_WEIGHTS, LoadConfig
from perf.harness import Result
from perf.hist import HEAD
from perf.zqload import lane_options


def _spec(lanes_mode: str, index: int = 0, seed: int = 1, batch: int = 100) -> WorkerSpec:
    return WorkerSpec("producer", index, "tcp://x", 10_000, batch=batch, lanes=lanes_mode,
                      seed=seed)


def test_plain_batches_carry_no_options() -> None:
    opts = lane_options(_spec("plain"))
    assert [opts(lo) for lo in range(0, 500, 100)] == [{}] * 5


def test_priorities_are_random_0_to_9_and_fixed_by_the_seed() -> None:
    def draw(seed: int, index: int = 0) -> list[int]:
        opts = lane_options(_spec("priority", index, seed))
        return [opts(lo)["priority"] for lo in range(0, 100_000, 100)]

    got = draw(1)
    assert set(got) == set(range(10))  # 1,000 batches: every lane gets some
    assert max(Counter(got).values()) < 200  # and none gets most
    assert draw(1) == got
    assert draw(2) != got
    assert draw(1, index=1) != got  # each producer its own sequence


def test_tenants_go_round_robin_by_batch() -> None:
    opts = lane_options(_spec("tenant", batch=50))
    names = list(TENANT_WEIGHTS)
    assert [opts(lo)["tenant"] for lo in range(0, 400, 50)] == names + names
    assert TENANT_WEIGHTS == {"t1": 1, "t2": 2, "t3": 3, "t4": 4}


def test_load_config_checks_and_describes_lanes() -> None:
    with pytest.raises(ValueError, match="lanes"):
        LoadConfig(lanes="fast")
    assert "random priority 0-9" in LoadConfig(lanes="priority").describe()
    assert "round robin over 4 tenants" in LoadConfig(lanes="tenant").describe()
    assert "priority" not in LoadConfig().describe()


def _result(rate: float, ok: bool = True) -> Result:
    return Result(system="zq", messages=1000, producers=1, consumers=1, batch=100,
                  prefetch=1000, size=100, elapsed_s=1000 / rate, msg_per_s=rate,
                  received=1000, duplicates=0, missing=0, confirmed=1000, server_cpu_s=0.5,
                  producer_cpu_s=0.1, consumer_cpu_s=0.1, server_exit=0,
                  problems=[] if ok else ["1 message(s) never received"])


def _round(plain: float, priority: float, tenant: float, base: float) -> dict[str, Result]:
    return {"plain": _result(plain), "priority": _result(priority),
            "tenant": _result(tenant), "baseline": _result(base)}


def test_lanes_ratios_to_plain_and_to_baseline() -> None:
    rat = lanes.ratios(_round(200.0, 180.0, 150.0, 250.0))
    assert rat["plain"] == {"to_plain": 1.0, "to_baseline": 0.8}
    assert rat["priority"]["to_plain"] == pytest.approx(0.9)
    assert rat["tenant"]["to_baseline"] == pytest.approx(0.6)
    assert rat["baseline"] == {"to_plain": None, "to_baseline": None}
    only = lanes.ratios({"tenant": _result(100.0)})  # --system tenant: nothing to compare
    assert only["tenant"] == {"to_plain": None, "to_baseline": None}


def test_lanes_table_medians_and_json() -> None:
    rounds = [_round(200.0, 180.0, 150.0, 250.0), _round(220.0, 200.0, 160.0, 240.0),
              _round(210.0, 190.0, 140.0, 260.0)]
    text = lanes.table(rounds)
    assert "zq priority" in text
    assert "90.0%" in text
    assert "zq plain: median 210 msg/s (min 200, max 220)" in text
    assert "zq tenant: median 150 msg/s" in text
    assert "baseline: median 250 msg/s" in text
    lines = [json.loads(x) for x in lanes.json_lines(LoadConfig(), rounds)]
    assert len(lines) == 12
    assert {x["scenario"] for x in lines} == {"lanes"}
    assert [x["lanes"] for x in lines[:4]] == list(lanes.SYSTEMS)
    assert lines[1]["ratio_to_plain"] == pytest.approx(0.9)
    assert lines[2]["tenant_weights"] == TENANT_WEIGHTS
    assert lines[3]["storage"] == "none"
    bad = {"plain": _result(100.0, ok=False)}
    assert "FAILED: 1 message(s) never received" in lanes.table([bad])


def test_delays_config_and_delays() -> None:
    with pytest.raises(ValueError, match="max_delay"):
        delays.DelaysConfig(max_delay=0)
    with pytest.raises(ValueError, match="16"):
        delays.DelaysConfig(size=12)
    with pytest.raises(ValueError, match="storage"):
        delays.DelaysConfig(storage="disk")
    cfg = delays.DelaysConfig()
    assert (cfg.messages, cfg.max_delay, cfg.publish_s) == (20_000, 2.0, 4.0)
    d = delays.delays_of(1, 20_000, 2.0)
    assert d == delays.delays_of(1, 20_000, 2.0)
    assert all(0 <= x < 2.0 for x in d)
    assert 0.95 < sum(d) / len(d) < 1.05  # uniform: mean D / 2
    assert max(d) > 1.99
    assert min(d) < 0.01


def test_lateness_log_counts_early_arrivals_and_duplicates() -> None:
    log = delays.LatenessLog(4)
    pad = b"x" * 84
    log.received(HEAD.pack(0, 10.0) + pad, 10.002)  # 2 ms late
    log.received(HEAD.pack(1, 10.0) + pad, 9.9995)  # 0.5 ms early
    log.received(HEAD.pack(1, 10.0) + pad, 10.010)  # a duplicate
    assert (log.count, log.duplicates, log.early) == (3, 1, 1)
    assert log.min_lateness == pytest.approx(-0.0005)
    assert log.lateness.count == 3
    assert log.lateness.max() == pytest.approx(10_000, rel=1e-3)
    assert bytes(log.seen) == b"\x01\x01\x00\x00"


def _delays_result(p99_us: int, early: int = 0) -> delays.DelaysResult:
    summary: dict[str, Any] = {"count": 10, "p50": 1000, "p90": 2000, "p99": p99_us,
                               "p99.9": p99_us, "max": p99_us, "mean": 1200.0}
    return delays.DelaysResult(
        system="zq", storage="memory", messages=10, rate=100.0, max_delay=1.0,
        lateness=summary, early=early, min_lateness_us=-300.0 if early else 200.0,
        confirm=summary, lag=summary, sent_per_s=100.0, received=10, duplicates=0,
        missing=0, confirmed=10, server_cpu_s=0.1, server_rss_peak_mib=30.0, server_exit=0,
        problems=[f"{early} message(s) arrived before their due time"] if early else [])


def test_delays_target_table_and_json() -> None:
    good, slow, early = (_delays_result(3000), _delays_result(60_000),
                         _delays_result(3000, early=2))
    assert (good.met, good.ok, good.p99_ms) == (True, True, 3.0)
    assert (slow.met, slow.ok) == (False, True)
    assert (early.met, early.ok) == (False, False)
    text = delays.table({"zq": early})
    assert "arrived before their due time" in text
    assert "NOT MET" in text
    assert "-0.300" in text  # the earliest arrival, in ms
    [line] = delays.json_lines(delays.DelaysConfig(), {"zq": good})
    d = json.loads(line)
    assert (d["scenario"], d["met"], d["target_p99_ms"]) == ("delays", True, 50.0)
    assert d["lateness"]["p99"] == 3000


def test_suite_has_the_new_steps_at_every_size() -> None:
    assert {"lanes", "delays-memory", "delays-durable"} <= set(suite.STEPS)
    assert suite.SIZES["full"].delays == delays.DEFAULT_MESSAGES
    assert suite.SIZES["quick"].delays == delays.QUICK_MESSAGES
    tiny = suite.SIZES["tiny"]
    assert (tiny.delays, tiny.max_delay) == (delays.TINY_MESSAGES, delays.TINY_MAX_DELAY)
