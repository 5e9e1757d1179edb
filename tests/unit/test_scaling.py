"""Scaling policies without I/O (zq.policies.scaling): the default ``backlog`` (its
arithmetic, the service time by Little's law, its bounds and its reason), ``fixed``,
and both found by name, with a plugin, through ``zq.policies.load``."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zq import policies
from zq.policies.scaling import (
    SCALING_POLICIES,
    Backlog,
    Decision,
    Fixed,
    NodeFigures,
    QueueFigures,
    ScalingPolicy,
    service_time,
)

PLUGIN_SRC = Path(__file__).resolve().parent.parent / "system" / "plugin_scaling" / \
    "zq_test_scaling"


def node(workers: int = 1, lo: int = 1, hi: int = 10, concurrency: int = 10) -> NodeFigures:
    return NodeFigures(workers, lo, hi, concurrency)


# ------------------------------------------------------------------ service time


def test_service_time_by_littles_law() -> None:
    # 20 tasks held, acked at 50 a second: each stays 0.4 s.
    assert service_time([QueueFigures("q", in_flight=20, ack_rate=50.0)], 0.1) == 0.4
    # Over several queues: their sums (30 held, 60 acks a second).
    qs = [QueueFigures("a", in_flight=10, ack_rate=20.0),
          QueueFigures("b", in_flight=20, ack_rate=40.0)]
    assert service_time(qs, 0.1) == 0.5


@pytest.mark.parametrize(("in_flight", "ack_rate"), [(0, 0.0), (0, 30.0), (12, 0.0)])
def test_service_time_falls_back_until_acks_are_seen(in_flight: int, ack_rate: float) -> None:
    assert service_time([QueueFigures("q", in_flight=in_flight, ack_rate=ack_rate)],
                        0.25) == 0.25
    assert service_time([], 0.25) == 0.25


# ------------------------------------------------------------------ backlog


def test_backlog_is_the_default_and_a_scaling_policy() -> None:
    assert list(SCALING_POLICIES) == ["backlog", "fixed"]
    b: ScalingPolicy = Backlog()
    assert (b.kind, b.name) == ("scaling", "backlog")
    assert (Backlog().target, Backlog().fallback_service) == (10.0, 0.1)


def test_backlog_arithmetic_and_reason() -> None:
    # The example: 2,970 ready at 100 ms each within 10 s needs 29.7 task slots,
    # 10 more are busy: 39.7 slots, at 10 a worker: 4 workers.
    q = QueueFigures("work", ready=2970, in_flight=10, ack_rate=100.0)
    d = Backlog().decide([q], node(concurrency=10))
    assert d == Decision(4, "backlog 2,970, in flight 10, service 100 ms, target 10 s "
                            "-> 4 worker(s)")


def test_backlog_rounds_task_slots_up_to_whole_workers() -> None:
    b = Backlog()
    # 300 ready at the fallback 100 ms within 10 s: exactly 3 slots.
    assert b.decide([QueueFigures("q", ready=300)], node(concurrency=1)).workers == 3
    assert b.decide([QueueFigures("q", ready=301)], node(concurrency=1)).workers == 4
    assert b.decide([QueueFigures("q", ready=300)], node(concurrency=3)).workers == 1
    assert b.decide([QueueFigures("q", ready=1)], node(lo=0, concurrency=8)).workers == 1
    # Only tasks in flight: one slot each (7 at 4 a worker: 2 workers).
    q = QueueFigures("q", in_flight=7, ack_rate=70.0)
    assert b.decide([q], node(concurrency=4)).workers == 2


def test_backlog_sums_the_nodes_queues() -> None:
    qs = [QueueFigures("a", ready=500, in_flight=5, ack_rate=25.0),
          QueueFigures("b", ready=700, in_flight=15, ack_rate=75.0),
          QueueFigures("c", delayed=10_000)]  # delayed tasks are not due: no workers
    # backlog 1,200 at 20 / 100 = 0.2 s within 10 s: 24 slots, plus 20 in flight: 44.
    d = Backlog().decide(qs, node(hi=100, concurrency=4))
    assert d == Decision(11, "backlog 1,200, in flight 20, service 200 ms, target 10 s "
                             "-> 11 worker(s)")


def test_backlog_uses_the_measured_service_time() -> None:
    b = Backlog()
    slow = QueueFigures("q", ready=1000, in_flight=10, ack_rate=5.0)  # 2 s a task
    d = b.decide([slow], node(hi=1000, concurrency=10))
    assert d.workers == 21  # 1,000 x 2 / 10 = 200 slots + 10 = 210
    assert "service 2,000 ms" in d.reason
    # The same backlog before any ack: the fallback, 100 ms.
    fresh = QueueFigures("q", ready=1000, in_flight=10)
    d = b.decide([fresh], node(hi=1000, concurrency=10))
    assert d.workers == 2  # 10 + 10 slots
    assert "service 100 ms" in d.reason


def test_backlog_target_and_fallback_are_settings() -> None:
    b = Backlog(target=2.0, fallback_service=0.5)
    d = b.decide([QueueFigures("q", ready=40)], node(hi=100, concurrency=2))
    assert d == Decision(5, "backlog 40, in flight 0, service 500 ms, target 2 s "
                            "-> 5 worker(s)")


def test_backlog_stays_within_min_and_max() -> None:
    b = Backlog()
    flood = [QueueFigures("q", ready=1_000_000)]
    d = b.decide(flood, node(lo=1, hi=6, concurrency=4))
    assert d.workers == 6
    assert d.reason.endswith("-> 6 worker(s)")
    idle = [QueueFigures("q")]
    assert b.decide(idle, node(lo=2, hi=6)) == Decision(
        2, "backlog 0, in flight 0, service 100 ms, target 10 s -> 2 worker(s)")
    assert b.decide(idle, node(lo=0, hi=6)).workers == 0
    assert b.decide([], node(lo=0, hi=6)).workers == 0


def test_backlog_with_a_concurrency_of_zero_counts_one_task_per_worker() -> None:
    d = Backlog().decide([QueueFigures("q", ready=500)], node(hi=100, concurrency=0))
    assert d.workers == 5


# ------------------------------------------------------------------ fixed


def test_fixed_is_always_min() -> None:
    f: ScalingPolicy = Fixed()
    assert (f.kind, f.name) == ("scaling", "fixed")
    flood = [QueueFigures("q", ready=1_000_000, in_flight=100, ack_rate=1.0)]
    assert f.decide(flood, node(workers=1, lo=3, hi=10)) == Decision(3, "fixed at 3 worker(s)")
    assert f.decide([], node(workers=7, lo=0, hi=10)) == Decision(0, "fixed at 0 worker(s)")


# ------------------------------------------------------------------ by name


def test_loaded_by_name() -> None:
    b = policies.load("scaling", "backlog")
    assert isinstance(b, Backlog)
    assert b is not policies.load("scaling", "backlog")  # a new one each time
    assert isinstance(policies.load("scaling", "fixed"), Fixed)
    # The backoff kind has a "fixed" of its own: each kind finds its own.
    assert not isinstance(policies.load("backoff", "fixed"), Fixed)
    assert policies.load("backoff", "fixed").kind == "backoff"
    assert policies.available("scaling")[:2] == ["backlog", "fixed"]
    policies.check("scaling", "fixed")


def test_unknown_scaling_policy_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown scaling policy 'busiest'; choose from "
                                         r"backlog, fixed"):
        policies.load("scaling", "busiest")
    with pytest.raises(ValueError, match="unknown scaling policy 'round-robin'"):
        policies.load("scaling", "round-robin")  # a dispatch policy's name


@pytest.fixture
def scaling_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tests/system/plugin_scaling installed as a distribution, on sys.path."""
    shutil.copytree(PLUGIN_SRC, tmp_path / "zq_test_scaling",
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = tmp_path / "zq_test_scaling-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zq_test_scaling\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[zq.policies]\n"
                                           "always-two = zq_test_scaling:AlwaysTwo\n"
                                           "from-file = zq_test_scaling:FromFile\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(policies, "_FOUND", {})
    monkeypatch.setenv("ZQ_TEST_DIR", str(tmp_path))
    yield
    sys.modules.pop("zq_test_scaling", None)


def test_plugin_loaded_by_name(scaling_plugin: None, tmp_path: Path) -> None:
    assert policies.available("scaling") == ["backlog", "fixed", "always-two", "from-file"]
    two = policies.load("scaling", "always-two")
    assert (two.kind, two.name) == ("scaling", "always-two")
    d = two.decide([QueueFigures("q", ready=5)], node(workers=1, lo=1, hi=4))
    assert d == Decision(2, "always-two wants 2 worker(s) (ready 5, running 1)")
    steered = policies.load("scaling", "from-file")
    assert steered.decide([], node(lo=1)).workers == 1
    (tmp_path / "scaling-wanted").write_text("3\n")
    assert steered.decide([], node(lo=1)) == Decision(3, "from-file says 3 worker(s)")
    with pytest.raises(ValueError, match="'always-two' is not of kind 'dispatch'"):
        policies.load("dispatch", "always-two")
