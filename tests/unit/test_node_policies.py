"""Policies as the worker node and the broker use them: a backoff whose jitter a test
can fix, a round-robin dispatch that does not keep every queue name forever, and a
plugin found once by name and not looked up again."""

from __future__ import annotations

import random
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from zq import policies
from zq.node.retry import Retry
from zq.policies import Exponential, RoundRobin, load
from zq.protocol.credit import CreditWindow

# ------------------------------------------------------------------ backoff jitter


def test_exponential_jitter_comes_from_the_random_module_by_default() -> None:
    state = random.getstate()
    try:
        random.seed(42)
        first = [Exponential().delay(n, 1.0, 60.0) for n in range(1, 6)]
        random.seed(42)
        again = [Exponential().delay(n, 1.0, 60.0) for n in range(1, 6)]
    finally:
        random.setstate(state)
    assert first == again
    assert len(set(first)) == 5


def test_exponential_takes_its_own_random_source() -> None:
    a = Exponential(random.Random(9))
    b = Exponential(random.Random(9))
    assert [a.delay(3, 0.5, 60.0) for _ in range(10)] == [b.delay(3, 0.5, 60.0)
                                                         for _ in range(10)]

    class Top:
        def uniform(self, lo: float, hi: float) -> float:
            return hi

    assert Exponential(Top()).delay(2, 1.0, 60.0) == pytest.approx(2.2)


def test_retry_delays_use_the_same_policy() -> None:
    state = random.getstate()
    try:
        random.seed(7)
        first = Retry("exponential", base=1.0).delay(4)
        random.seed(7)
        assert Retry("exponential", base=1.0).delay(4) == first
    finally:
        random.setstate(state)
    assert 7.2 <= first <= 8.8


# ------------------------------------------------------------------ round robin


@dataclass
class Sub:
    window: CreditWindow


def subs(n: int) -> list[Sub]:
    return [Sub(CreditWindow(10)) for _ in range(n)]


def test_round_robin_takes_turns_per_queue() -> None:
    policy = RoundRobin()
    three, two = subs(3), subs(2)
    picks = []
    for _ in range(6):
        picks.append((policy.pick("a", three), policy.pick("b", two)))
    assert picks == [(0, 0), (1, 1), (2, 0), (0, 1), (1, 0), (2, 1)]


def test_round_robin_keeps_a_bounded_number_of_queues() -> None:
    policy = RoundRobin(max_queues=3)
    two = subs(2)
    for i in range(100):
        policy.pick(f"q{i}", two)
    assert policy.remembered == 3
    assert policy.pick("q99", two) == 1  # served last: its turn is kept
    assert policy.pick("q0", two) == 0  # forgotten long ago: starts again
    for name in ("hot", "x", "hot", "y", "hot", "z"):
        policy.pick(name, two)
    assert policy.remembered == 3
    assert policy.pick("hot", two) == 1  # kept while it is served: its fourth turn
    with pytest.raises(ValueError, match="max_queues"):
        RoundRobin(max_queues=0)


def test_round_robin_has_no_forget() -> None:
    assert not hasattr(RoundRobin(), "forget")  # nothing called it: the bound does its job


# ------------------------------------------------------------------ plugins found once

PLUGIN = """
class Slowest:
    kind = "backoff"
    name = "slowest"
    built = 0

    def __init__(self):
        type(self).built += 1

    def delay(self, attempt, base, cap):
        return cap
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plugin ``slowest`` installed, and a registry that remembers nothing yet."""
    (tmp_path / "zq_node_policy").mkdir()
    (tmp_path / "zq_node_policy" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "zq_node_policy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zq_node_policy\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[zq.policies]\n"
                                           "slowest = zq_node_policy:Slowest\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(policies, "_FOUND", {})
    yield
    sys.modules.pop("zq_node_policy", None)


def test_a_plugin_is_looked_up_once(plugin: None, monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[Any] = []
    real = policies.entry_points

    def counting(**kw: Any) -> Any:
        scans.append(kw)
        return real(**kw)

    monkeypatch.setattr(policies, "entry_points", counting)
    first = load("backoff", "slowest")
    assert len(scans) == 1
    again = [load("backoff", "slowest") for _ in range(5)]
    policies.check("backoff", "slowest")
    assert len(scans) == 1  # no scan of the installed packages after the first
    assert all(p is not first for p in again)  # a new instance every time, as before
    assert type(first).built == 7
    assert first.delay(3, 0.1, 2.0) == 2.0


def test_names_not_found_are_not_remembered(plugin: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown backoff policy 'later'"):
        load("backoff", "later")
    assert policies._FOUND == {}
    with pytest.raises(ValueError, match="'slowest' is not of kind 'selection'"):
        load("selection", "slowest")
    assert policies._FOUND == {}
    load("backoff", "slowest")
    assert list(policies._FOUND) == [("backoff", "slowest")]


def test_builtins_never_touch_the_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kw: Any) -> Any:
        raise AssertionError("scanned entry points for a built-in")

    monkeypatch.setattr(policies, "entry_points", refuse)
    for kind, name in (("dispatch", "round-robin"), ("selection", "weighted-fair"),
                       ("backoff", "exponential"), ("overflow", "drop-oldest")):
        assert load(kind, name).name == name
