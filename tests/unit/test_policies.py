"""Policies without I/O: lane selection, backoff, overflow, and the registry with plugins."""

from __future__ import annotations

import random
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from zq.policies import (
    BACKOFF_POLICIES,
    DISPATCH_POLICIES,
    KINDS,
    OVERFLOW_POLICIES,
    SCALING_POLICIES,
    SELECTION_POLICIES,
    DropOldest,
    Exponential,
    Fixed,
    Reject,
    RoundRobin,
    Strict,
    WeightedFair,
    available,
    check,
    load,
    make_dispatch,
)


@dataclass
class FakeLane:
    tenant: str
    weight: int
    size: int = 1_000_000


def lanes(**weights: int) -> list[FakeLane]:
    return [FakeLane(t, w) for t, w in sorted(weights.items())]


def serve(policy: WeightedFair, ready: Sequence[FakeLane], batch: int) -> tuple[str, int]:
    """One pick, honoured up to ``batch`` messages (a consumer's free credit)."""
    i, quota = policy.pick(ready)
    assert 0 <= i < len(ready)
    assert quota >= 1
    n = min(quota, batch, ready[i].size)
    policy.took(ready[i].tenant, n)
    return ready[i].tenant, n


# --- weighted-fair ----------------------------------------------------------------------


def test_weighted_fair_is_exactly_3_to_1_one_message_at_a_time() -> None:
    policy = WeightedFair()
    ready = lanes(a=3, b=1)
    served = [serve(policy, ready, batch=1)[0] for _ in range(10_000)]
    for k in range(0, 10_000, 4):
        assert Counter(served[k:k + 4]) == {"a": 3, "b": 1}, k


def test_weighted_fair_quota_taken_as_batches() -> None:
    policy = WeightedFair()
    ready = lanes(a=3, b=1)
    turns = [serve(policy, ready, batch=100) for _ in range(1_000)]
    assert turns[:4] == [("a", 3), ("b", 1), ("a", 3), ("b", 1)]
    totals: Counter[str] = Counter()
    for tenant, n in turns:
        totals[tenant] += n
    assert totals == {"a": 1_500, "b": 500}


def test_weighted_fair_partial_batches_keep_the_ratio() -> None:
    policy = WeightedFair()
    ready = lanes(a=5, b=2)
    totals: Counter[str] = Counter()
    for _ in range(7_000):
        tenant, n = serve(policy, ready, batch=2)
        totals[tenant] += n
    assert totals["a"] * 2 == totals["b"] * 5


def test_weighted_fair_quota_is_at_most_the_lane_size() -> None:
    policy = WeightedFair()
    assert policy.pick([FakeLane("a", 10, size=4), FakeLane("b", 1, size=9)]) == (0, 4)


def test_weighted_fair_single_lane_gets_all_of_it() -> None:
    policy = WeightedFair()
    assert policy.pick([FakeLane("a", 1, size=17)]) == (0, 17)
    policy.took("a", 17)


def test_weighted_fair_skips_a_capped_lane_and_stays_fair() -> None:
    policy = WeightedFair()
    a, b, c = FakeLane("a", 1), FakeLane("b", 1), FakeLane("c", 2)
    totals: Counter[str] = Counter()
    for _ in range(1_000):  # c is capped: absent from the eligible lanes
        tenant, n = serve(policy, [a, b], batch=1)
        totals[tenant] += n
    assert totals == {"a": 500, "b": 500}
    totals.clear()
    for _ in range(4_000):
        tenant, n = serve(policy, [a, b, c], batch=1)
        totals[tenant] += n
    assert totals == {"a": 1_000, "b": 1_000, "c": 2_000}


def test_weighted_fair_current_tenant_capped_mid_turn() -> None:
    policy = WeightedFair()
    a, b, c = FakeLane("a", 3), FakeLane("b", 1), FakeLane("c", 1)
    assert serve(policy, [a, b, c], batch=1) == ("a", 1)
    # a hits its cap: its turn passes to the next tenant in name order.
    assert serve(policy, [b, c], batch=1) == ("b", 1)
    assert serve(policy, [b, c], batch=1) == ("c", 1)
    # a is back with 2 left over from its turn plus its weight.
    assert policy.pick([a, b, c]) == (0, 5)


def test_weighted_fair_capped_tenant_cannot_hoard_deficit() -> None:
    policy = WeightedFair()
    a, b = FakeLane("a", 2), FakeLane("b", 1)
    for _ in range(100):  # a is capped after one message of every turn
        assert serve(policy, [a, b], batch=1)[0] == "a"
        assert serve(policy, [b], batch=1)[0] == "b"
    _, quota = policy.pick([a, b])
    assert quota <= 2 * a.weight


def test_weighted_fair_remembers_the_turn_when_lanes_change() -> None:
    policy = WeightedFair()
    a, b, c = FakeLane("a", 1), FakeLane("b", 1), FakeLane("c", 1)
    assert serve(policy, [a, c], batch=1)[0] == "a"
    assert serve(policy, [a, b, c], batch=1)[0] == "b"  # b, newly eligible, follows a
    assert serve(policy, [a, c], batch=1)[0] == "c"
    assert serve(policy, [a, b, c], batch=1)[0] == "a"


def test_weighted_fair_idle_resets_the_deficit() -> None:
    kept, reset = WeightedFair(), WeightedFair()
    ready = lanes(a=3, b=1)
    for policy in (kept, reset):
        assert serve(policy, ready, batch=1) == ("a", 1)
    reset.idle("a")  # a's lane emptied, then refilled
    assert kept.pick(ready) == (0, 2)
    assert reset.pick(ready) == (1, 1)


# --- strict -----------------------------------------------------------------------------


def test_strict_takes_the_highest_weight_then_the_first_name() -> None:
    policy = Strict()
    ready = [FakeLane("a", 1, 5), FakeLane("b", 3, 7), FakeLane("c", 3, 9)]
    assert policy.pick(ready) == (1, 7)
    policy.took("b", 7)
    policy.idle("b")
    assert policy.pick(ready[::-1]) == (1, 7)  # order given does not matter
    assert policy.pick([ready[0], ready[2]]) == (1, 9)
    assert policy.pick([ready[0]]) == (0, 5)


# --- backoff ----------------------------------------------------------------------------


class MidRandom(random.Random):
    """Jitter factor exactly 1."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def test_exponential_doubles_up_to_the_cap() -> None:
    policy = Exponential(MidRandom())
    got = [policy.delay(n, 0.1, 1.0) for n in range(1, 7)]
    assert got == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_exponential_jitter_stays_within_ten_percent() -> None:
    policy = Exponential(random.Random(1234))
    factors = []
    for n in range(1, 2_000):
        attempt = n % 12 + 1
        expected = min(5.0, 0.05 * 2 ** (attempt - 1))
        got = policy.delay(attempt, 0.05, 5.0)
        assert 0.9 * expected <= got <= 1.1 * expected
        factors.append(got / expected)
    assert min(factors) < 0.92
    assert max(factors) > 1.08


def test_exponential_edges() -> None:
    policy = Exponential(random.Random(7))
    assert policy.delay(1, 0.0, 10.0) == 0.0
    assert policy.delay(50, 0.0, 10.0) == 0.0
    assert 9.0 <= policy.delay(100_000, 0.5, 10.0) <= 11.0  # no float overflow
    assert 0.9 <= policy.delay(0, 1.0, 10.0) <= 1.1  # treated as the first attempt
    assert Exponential().delay(1, 1.0, 10.0) > 0


def test_fixed_is_base_up_to_the_cap() -> None:
    policy = Fixed()
    assert [policy.delay(n, 0.25, 10.0) for n in (1, 2, 30)] == [0.25, 0.25, 0.25]
    assert policy.delay(3, 20.0, 10.0) == 10.0
    assert policy.delay(1, 0.0, 10.0) == 0.0


# --- overflow ---------------------------------------------------------------------------


def test_reject_refuses() -> None:
    assert Reject().on_full(10, 10, 1) == -1
    assert Reject().on_full(9, 10, 5) == -1


def test_drop_oldest_makes_just_enough_room() -> None:
    policy = DropOldest()
    assert policy.on_full(10, 10, 1) == 1
    assert policy.on_full(8, 10, 5) == 3
    assert policy.on_full(10, 10, 10) == 10
    assert policy.on_full(3, 10, 11) == 4  # a ring buffer: the batch's own oldest go too


# --- registry ---------------------------------------------------------------------------

BUILTIN: dict[str, Mapping[str, Callable[[], Any]]] = {
    "dispatch": DISPATCH_POLICIES,
    "selection": SELECTION_POLICIES,
    "backoff": BACKOFF_POLICIES,
    "overflow": OVERFLOW_POLICIES,
    "scaling": SCALING_POLICIES,
}
NAMES = {
    "dispatch": ["round-robin", "least-loaded"],
    "selection": ["weighted-fair", "strict"],
    "backoff": ["fixed", "exponential"],
    "overflow": ["reject", "drop-oldest"],
    "scaling": ["backlog", "fixed"],
}


def test_kinds() -> None:
    assert KINDS == ("dispatch", "selection", "backoff", "overflow", "scaling")
    assert list(BUILTIN) == list(KINDS)
    for kind in KINDS:
        assert list(BUILTIN[kind]) == NAMES[kind]
        assert available(kind)[:2] == NAMES[kind]


@pytest.mark.parametrize(("kind", "name"),
                         [(k, n) for k in NAMES for n in NAMES[k]])
def test_builtins_load_by_kind_and_name(kind: str, name: str) -> None:
    policy = load(kind, name)
    assert type(policy) is BUILTIN[kind][name]
    assert policy.kind == kind
    assert policy.name == name
    assert load(kind, name) is not policy
    check(kind, name)


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_name_lists_the_choices(kind: str) -> None:
    with pytest.raises(ValueError, match=f"unknown {kind} policy 'nope'") as err:
        load(kind, "nope")
    for name in NAMES[kind]:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="choose from"):
        check(kind, "nope")


def test_builtin_names_belong_to_one_kind() -> None:
    with pytest.raises(ValueError, match="unknown selection policy 'fixed'"):
        load("selection", "fixed")


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown policy kind 'color'; choose from dispatch"):
        load("color", "red")
    with pytest.raises(ValueError, match="unknown policy kind"):
        available("color")


def test_make_dispatch_uses_the_registry() -> None:
    assert isinstance(make_dispatch("round-robin"), RoundRobin)
    with pytest.raises(ValueError, match="unknown dispatch policy 'x'; choose from round-robin"):
        make_dispatch("x")


# --- plugins ----------------------------------------------------------------------------

DEMO = """
class LifoTenant:
    kind = "selection"
    name = "lifo-tenant"

    def pick(self, lanes):
        return len(lanes) - 1, 1

    def took(self, tenant, n):
        pass

    def idle(self, tenant):
        pass


class Slow:
    kind = "backoff"
    name = "slow"

    def delay(self, attempt, base, cap):
        return cap


def make_lifo():
    return LifoTenant()


def make_nothing():
    return object()
"""

DEMO_ENTRY_POINTS = """
[zq.policies]
lifo-tenant = zq_demo_policy:LifoTenant
lifo-factory = zq_demo_policy:make_lifo
slow = zq_demo_policy:Slow
nothing = zq_demo_policy:make_nothing
"""


@pytest.fixture
def plugin_root(tmp_path: Path) -> Iterator[Path]:
    """A directory put on sys.path; modules imported from it are forgotten afterwards."""
    before = set(sys.modules)
    yield tmp_path
    for module in set(sys.modules) - before:
        if module.startswith(("zq_demo_policy", "zq_broken_policy")):
            del sys.modules[module]


def install(root: Path, monkeypatch: pytest.MonkeyPatch, package: str, code: str,
            entry_points: str) -> None:
    """A package and its dist-info, as pip would leave them, then on sys.path."""
    (root / package).mkdir()
    (root / package / "__init__.py").write_text(textwrap.dedent(code))
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).lstrip())
    monkeypatch.syspath_prepend(str(root))


def test_plugin_found_by_name(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown selection policy 'lifo-tenant'"):
        load("selection", "lifo-tenant")  # before it is installed: caches must not stick
    install(plugin_root, monkeypatch, "zq_demo_policy", DEMO, DEMO_ENTRY_POINTS)
    policy = load("selection", "lifo-tenant")
    demo: Any = sys.modules["zq_demo_policy"]
    assert isinstance(policy, demo.LifoTenant)
    assert policy.pick([FakeLane("a", 1), FakeLane("b", 1)]) == (1, 1)
    assert load("selection", "lifo-tenant") is not policy
    assert isinstance(load("selection", "lifo-factory"), demo.LifoTenant)
    assert load("backoff", "slow").delay(1, 0.1, 3.0) == 3.0
    check("selection", "lifo-tenant")
    assert available("selection") == ["weighted-fair", "strict", "lifo-factory", "lifo-tenant"]
    assert available("backoff") == ["fixed", "exponential", "slow"]
    with pytest.raises(ValueError, match="lifo-factory, lifo-tenant"):
        load("selection", "nope")


def test_plugin_of_another_kind(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(plugin_root, monkeypatch, "zq_demo_policy", DEMO, DEMO_ENTRY_POINTS)
    with pytest.raises(ValueError, match="'slow' is not of kind 'selection': it is 'backoff' "):
        load("selection", "slow")
    with pytest.raises(ValueError, match="'lifo-tenant' is not of kind 'backoff'"):
        check("backoff", "lifo-tenant")
    with pytest.raises(ValueError, match="'nothing' is not of kind 'overflow': it is None"):
        load("overflow", "nothing")


BROKEN_ENTRY_POINTS = """
[zq.policies]
broken = zq_broken_policy:Policy
"""


def test_broken_plugin(plugin_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(plugin_root, monkeypatch, "zq_broken_policy", "raise RuntimeError('boom')\n",
            BROKEN_ENTRY_POINTS)
    with pytest.raises(ValueError, match=r"policy plugin 'broken' \(zq_broken_policy:Policy\) "
                                         r"failed to load: RuntimeError\('boom'\)"):
        load("selection", "broken")
    with pytest.raises(ValueError, match="choose from weighted-fair, strict; "
                                         "plugins that failed to load: policy plugin 'broken'"):
        load("selection", "nope")
    assert available("selection") == ["weighted-fair", "strict"]
