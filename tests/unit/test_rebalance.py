"""``zq cluster rebalance --plan``'s planner (zq.cluster.rebalance): examples, and
properties over random clusters (hypothesis): pins are only ever moved to their pin,
draining brokers end empty, each balancing move lowers the imbalance it is for and
never raises the message imbalance, and a queue moves at most once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zq.cluster.config import ClusterConfig
from zq.cluster.placement import pinned
from zq.cluster.rebalance import DRAIN, MESSAGES, PIN, QUEUES, Load, Plan, move_command, plan


def cluster(*brokers: tuple[str, float, str], pins: Mapping[str, str] | None = None
            ) -> ClusterConfig:
    return ClusterConfig.from_dict({
        "cluster_id": "t", "version": 1, "pins": dict(pins or {}),
        "brokers": [{"id": b, "endpoint": f"tcp://127.0.0.1:{5600 + i}", "weight": w,
                     "state": s} for i, (b, w, s) in enumerate(brokers)]})


THREE = cluster(("b1", 1, "active"), ("b2", 1, "active"), ("b3", 1, "active"))


def moves(p: Plan) -> list[tuple[str, str, str, str]]:
    return [(m.queue, m.source, m.target, m.reason) for m in p.moves]


def test_a_balanced_cluster_needs_no_move() -> None:
    held = {b: {f"{b}-{i}": 100 for i in range(3)} for b in ("b1", "b2", "b3")}
    assert plan(THREE, held).moves == []


def test_a_new_empty_broker_gets_its_share_with_few_moves() -> None:
    cfg = cluster(("b1", 1, "active"), ("b2", 1, "active"), ("b3", 1, "active"),
                  ("b4", 1, "active"))
    held: dict[str, dict[str, int]] = {
        b: {f"{b}-{i}": 1000 for i in range(4)} for b in ("b1", "b2", "b3")}
    held["b4"] = {}
    p = plan(cfg, held)
    assert {m.target for m in p.moves} == {"b4"}
    assert {m.reason for m in p.moves} == {MESSAGES}
    assert len(p.moves) == 3  # 12 queues of 1,000: 3 each
    assert all(x.messages == 3000 and x.queues == 3 for x in p.after.values())
    assert p.before["b4"].target_messages == 3000


def test_weights_set_the_shares() -> None:
    cfg = cluster(("big", 3, "active"), ("small", 1, "active"))
    held = {"big": {}, "small": {f"q{i}": 10 for i in range(40)}}
    p = plan(cfg, held, tolerance=0.0)
    assert (p.after["big"].messages, p.after["small"].messages) == (300, 100)
    assert p.before["big"].target_messages == 300


def test_the_queue_nearest_half_the_difference_goes_first() -> None:
    cfg = cluster(("b1", 1, "active"), ("b2", 1, "active"))
    held = {"b1": {"a": 100, "b": 400, "c": 500}, "b2": {}}
    p = plan(cfg, held)
    assert moves(p) == [("c", "b1", "b2", MESSAGES)]  # 1,000 apart: 500 is nearest 500


def test_no_move_that_makes_it_worse() -> None:
    cfg = cluster(("b1", 1, "active"), ("b2", 1, "active"))
    held = {"b1": {"only": 1000}, "b2": {"small": 10}}
    assert plan(cfg, held).moves == []  # moving "only" would leave b2 further off


def test_a_draining_broker_is_emptied_biggest_queue_first() -> None:
    cfg = cluster(("b1", 1, "active"), ("b2", 1, "active"), ("old", 1, "draining"))
    held = {"b1": {"a": 100}, "b2": {"b": 100},
            "old": {"x": 300, "y": 200, "z": 0, "x.dlq": 5}}
    p = plan(cfg, held)
    drained = [(m.queue, m.target) for m in p.moves if m.reason == DRAIN]
    assert drained == [("x", "b1"), ("y", "b2"), ("z", "b2")]
    assert p.after["old"].queues == 0
    assert p.after["old"].messages == 5  # the dead-letter queue stays with its broker
    assert all(m.target != "old" for m in p.moves)


def test_pinned_queues_move_only_to_their_pin() -> None:
    cfg = cluster(("b1", 1, "active"), ("b2", 1, "active"), ("b3", 1, "draining"),
                  pins={"billing.": "b1", "audit": "b3"})
    held = {"b1": {"billing.eu": 5000},
            "b2": {"billing.us": 10},
            "b3": {"audit": 700, "other": 7}}
    p = plan(cfg, held)
    assert ("billing.us", "b2", "b1", PIN) in moves(p)
    assert all(m.queue not in ("billing.eu", "audit") for m in p.moves)  # on their pins
    assert ("other", "b3", "b2", DRAIN) in moves(p)


def test_empty_queues_are_spread_by_count() -> None:
    held = {"b1": {f"e{i}": 0 for i in range(9)}, "b2": {}, "b3": {}}
    p = plan(THREE, held)
    assert {m.reason for m in p.moves} == {QUEUES}
    assert [p.after[b].queues for b in ("b1", "b2", "b3")] == [3, 3, 3]


def test_conflicts_and_dead_letter_queues_are_not_moved() -> None:
    held = {"b1": {"twice": 500, "jobs.dlq": 900}, "b2": {"twice": 1}, "b3": {}}
    p = plan(THREE, held)
    assert p.conflicts == ["twice"]
    assert p.moves == []


def test_commands_are_runnable_as_they_are_printed() -> None:
    assert move_command("jobs", "b2") == "zq queue move jobs --to b2"
    assert move_command("a/b:c-d.e_f", "b-2") == "zq queue move a/b:c-d.e_f --to b-2"
    assert move_command("заказы", "b1") == "zq queue move 'заказы' --to b1"


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        plan(THREE, {}, tolerance=1.5)
    with pytest.raises(ValueError, match="not in the cluster file: b9"):
        plan(THREE, {"b9": {}})


# ------------------------------------------------------------------ properties


@st.composite
def clusters(draw: Any) -> tuple[ClusterConfig, dict[str, dict[str, int]]]:
    n = draw(st.integers(1, 5))
    ids = [f"b{i}" for i in range(n)]
    states = draw(st.lists(st.sampled_from(["active", "active", "draining"]),
                           min_size=n, max_size=n))
    states[draw(st.integers(0, n - 1))] = "active"
    weights = draw(st.lists(st.sampled_from([1, 2, 3]), min_size=n, max_size=n))
    pins = draw(st.dictionaries(st.sampled_from(["p", "pa", "pb", "q1"]), st.sampled_from(ids),
                                max_size=3))
    cfg = cluster(*zip(ids, weights, states, strict=True), pins=pins)
    names = st.from_regex(r"[pqr][ab]?[0-9]{1,2}(\.dlq)?", fullmatch=True)
    held = {b: draw(st.dictionaries(names, st.integers(0, 1000), max_size=12)) for b in ids}
    return cfg, held


def _cost(load: Mapping[str, Load], targets: Mapping[str, Load], active: list[str],
          by_queues: bool) -> float:
    if by_queues:
        return sum((load[b].queues - targets[b].target_queues) ** 2 for b in active)
    return sum((load[b].messages - targets[b].target_messages) ** 2 for b in active)


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_plans_keep_their_promises(case: tuple[ClusterConfig, dict[str, dict[str, int]]]
                                   ) -> None:
    cfg, held = case
    p = plan(cfg, held)
    active = [b.id for b in cfg.brokers if b.active]
    where = {q: b for b, qs in held.items() for q in qs}
    load = {b: Load(p.before[b].messages, p.before[b].queues) for b in p.before}
    seen: set[str] = set()
    for m in p.moves:
        assert m.queue not in seen, f"{m.queue} moved twice"
        seen.add(m.queue)
        assert m.queue not in p.conflicts
        assert not m.queue.endswith(".dlq")
        assert where[m.queue] == m.source != m.target
        assert m.messages == held[m.source][m.queue]
        pin = pinned(m.queue, cfg)
        assert (m.reason == PIN) == (pin is not None), m
        assert pin is None or m.target == pin
        assert cfg.broker(m.target).active or m.target == pin  # type: ignore[union-attr]
        costs = [_cost(load, p.before, active, q) for q in (False, True)]
        load[m.source].messages -= m.messages
        load[m.source].queues -= 1
        load[m.target].messages += m.messages
        load[m.target].queues += 1
        after = [_cost(load, p.before, active, q) for q in (False, True)]
        if m.reason == MESSAGES:
            assert after[0] < costs[0], m
        elif m.reason == QUEUES:
            # not worse in messages (to float rounding: sums taken in another order)
            assert after[0] <= costs[0] * (1 + 1e-12) + 1e-9, m
            assert after[1] < costs[1], m
    assert {b: (x.messages, x.queues) for b, x in load.items()} == \
        {b: (x.messages, x.queues) for b, x in p.after.items()}
    # Draining brokers keep only what is pinned to them, dead letters and conflicts.
    for b in cfg.brokers:
        if not b.active:
            for q in held[b.id]:
                if q not in seen:
                    assert (pinned(q, cfg) == b.id or q.endswith(".dlq")
                            or q in p.conflicts), q
    # The same holdings in another order: the same plan.
    again = plan(cfg, {b: dict(reversed(qs.items())) for b, qs in reversed(held.items())})
    assert moves(again) == moves(p)


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_a_plan_stops_only_when_balanced_or_no_single_move_helps(
        case: tuple[ClusterConfig, dict[str, dict[str, int]]]) -> None:
    cfg, held = case
    p = plan(cfg, held)
    active = [b.id for b in cfg.brokers if b.active]
    excess = {b: p.after[b].messages - p.before[b].target_messages for b in active}
    if all(abs(excess[b]) <= max(0.5, 0.05 * p.before[b].target_messages) for b in active):
        return
    moved = {m.queue for m in p.moves}
    after = {q: b for b, qs in held.items() for q in qs}
    after.update({m.queue: m.target for m in p.moves})
    for q, b in after.items():
        if (q in moved or b not in active or q in p.conflicts or q.endswith(".dlq")
                or pinned(q, cfg) is not None):
            continue
        n = held[next(h for h, qs in held.items() if q in qs)][q]
        assert not any(0 < n < excess[b] - excess[d] for d in active if d != b), (q, n)


def test_a_queue_count_move_that_unsettles_the_messages_is_mended() -> None:
    # Found by the property above: the queue phase moved r5 (162) from b0 to b3,
    # leaving b0 98 messages short of its share (over 5 %) while pb8 (127) on b1,
    # 56 over, could still close the gap; the message phase now runs again.
    cfg = cluster(("b0", 1, "active"), ("b1", 3, "active"), ("b2", 1, "active"),
                  ("b3", 2, "active"))
    held = {"b0": {"ra69.dlq": 66, "r5": 162},
            "b1": {"p52.dlq": 29, "rb89.dlq": 184, "ra5": 755, "qa42": 284,
                   "r43.dlq": 140, "q59.dlq": 59, "q1.dlq": 419, "pb8": 127,
                   "r9.dlq": 330, "r11.dlq": 43, "ra43.dlq": 613, "rb06.dlq": 861},
            "b2": {"pa71": 817, "r0": 430, "rb9": 172, "qa0": 507, "r20.dlq": 72,
                   "p61": 214, "ra11": 405},
            "b3": {"p77": 807, "ra05": 520, "pb3.dlq": 545, "pa0": 736, "p7.dlq": 34,
                   "qb16": 370}}
    p = plan(cfg, held)
    active = ("b0", "b1", "b2", "b3")
    assert all(abs(p.after[b].messages - p.before[b].target_messages)
               <= 0.05 * p.before[b].target_messages for b in active), p.after
    assert len({m.queue for m in p.moves}) == len(p.moves)
