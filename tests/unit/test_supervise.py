"""The decisions of ``zq node`` without I/O or sleeps (zq.node.supervise): the Scaler
(up at once, down only after the cool-down) and the Supervisor (which worker processes
to start, restart, kill or drain), each told the time."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from zq.node.supervise import (
    DRAINING,
    RUNNING,
    STARTING,
    STARTUP_LIMIT,
    WAITING,
    Kill,
    Scaler,
    Slot,
    Start,
    Stop,
    Supervisor,
)
from zq.policies.scaling import Decision, NodeFigures, QueueFigures

# ------------------------------------------------------------------ the scaler


class Wants:
    """A policy that wants what the test says."""

    kind = "scaling"
    name = "wants"

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[tuple[Sequence[QueueFigures], NodeFigures]] = []

    def decide(self, queues: Sequence[QueueFigures], node: NodeFigures) -> Decision:
        self.seen.append((queues, node))
        return Decision(self.n, f"wants {self.n}")


NODE = NodeFigures(1, 1, 6, 4)
QS = [QueueFigures("work", ready=10)]


def test_scaler_starts_at_min() -> None:
    s = Scaler(Wants(3), 2, 6, cooldown=5.0)
    assert s.target == 2
    assert s.decision == Decision(2, "start with 2 worker(s)")


def test_scaler_asks_the_policy_with_the_figures() -> None:
    policy = Wants(3)
    s = Scaler(policy, 1, 6, cooldown=5.0)
    s.tick(0.0, QS, NODE)
    assert policy.seen == [(QS, NODE)]


def test_scaler_goes_up_at_once_within_its_bounds() -> None:
    policy = Wants(4)
    s = Scaler(policy, 1, 6, cooldown=5.0)
    assert s.tick(0.0, QS, NODE) == 4
    assert s.decision == Decision(4, "wants 4")
    policy.n = 50
    assert s.tick(1.0, QS, NODE) == 6  # at most max
    assert s.decision == Decision(6, "wants 50")  # the policy's reason, the node's number
    policy.n = 6
    assert s.tick(2.0, QS, NODE) == 6


def test_scaler_never_goes_below_min() -> None:
    s = Scaler(Wants(0), 2, 6, cooldown=0.0)
    for t in range(5):
        assert s.tick(float(t), QS, NODE) == 2
    assert s.decision == Decision(2, "wants 0")


def test_scaler_goes_down_only_after_the_cooldown() -> None:
    policy = Wants(6)
    s = Scaler(policy, 1, 6, cooldown=2.0)
    assert s.tick(0.0, QS, NODE) == 6
    policy.n = 1
    assert s.tick(10.0, QS, NODE) == 6  # it wants fewer from now on
    assert s.decision == Decision(6, "wants 1 (cooling down 2 s)")
    assert s.tick(11.0, QS, NODE) == 6
    assert s.tick(11.999, QS, NODE) == 6  # 1.999 s: not yet
    assert s.tick(12.0, QS, NODE) == 1  # 2 s: down
    assert s.decision == Decision(1, "wants 1")
    assert s.tick(13.0, QS, NODE) == 1


def test_scaler_goes_down_to_what_the_policy_wants_at_the_end_of_the_cooldown() -> None:
    policy = Wants(6)
    s = Scaler(policy, 1, 6, cooldown=2.0)
    s.tick(0.0, QS, NODE)
    policy.n = 2
    s.tick(1.0, QS, NODE)
    policy.n = 4  # more than before, still fewer than now: the cool-down goes on
    assert s.tick(2.0, QS, NODE) == 6
    assert s.tick(3.0, QS, NODE) == 4


def test_scaler_rise_during_the_cooldown_cancels_it() -> None:
    policy = Wants(5)
    s = Scaler(policy, 1, 6, cooldown=2.0)
    s.tick(0.0, QS, NODE)
    policy.n = 1
    s.tick(1.0, QS, NODE)  # cooling down from 1.0
    policy.n = 5  # as many as now: the cool-down is off
    assert s.tick(2.0, QS, NODE) == 5
    assert s.decision == Decision(5, "wants 5")
    policy.n = 1
    assert s.tick(3.5, QS, NODE) == 5  # a new cool-down from 3.5, not from 1.0
    assert s.tick(5.0, QS, NODE) == 5
    assert s.tick(5.5, QS, NODE) == 1
    policy.n = 6
    assert s.tick(6.0, QS, NODE) == 6  # up again at once


def test_a_cooldown_of_zero_scales_down_at_once() -> None:
    """``--cooldown 0`` (the CLI allows it): the policy has wanted fewer for 0 s as soon
    as it wants fewer, so the target falls on that tick, not one interval later."""
    policy = Wants(6)
    s = Scaler(policy, 1, 6, cooldown=0.0)
    s.tick(0.0, QS, NODE)
    policy.n = 2
    assert s.tick(1.0, QS, NODE) == 2


# ------------------------------------------------------------------ the supervisor

PIDS = iter(range(1000, 100_000))


def beat_all(sup: Supervisor, now: float, *, but: Sequence[Slot] = ()) -> None:
    """Every worker process beats at ``now`` (those in ``but`` stay silent)."""
    for s in sup.slots:
        if s.pid and s not in but:
            sup.beat(s, now)


def run(sup: Supervisor, now: float, *, beat: bool = True) -> list[Start | Stop | Kill]:
    """The supervisor's actions at ``now``, the shell's part played: its workers beat
    (if ``beat``) and each Start gets a process (a new pid), which beats at once too."""
    if beat:
        beat_all(sup, now)
    acts = sup.actions(now)
    for a in acts:
        if isinstance(a, Start):
            sup.started(a.slot, next(PIDS), now)
            if beat:
                sup.beat(a.slot, now)
    return acts


def kinds(acts: Sequence[Start | Stop | Kill]) -> list[tuple[str, int]]:
    return [(type(a).__name__, a.slot.n) for a in acts]


def supervisor(target: int, now: float = 0.0) -> Supervisor:
    sup = Supervisor()
    sup.target = target
    run(sup, now)
    return sup


def test_starts_up_to_the_target() -> None:
    sup = Supervisor()
    sup.target = 3
    acts = sup.actions(0.0)
    assert kinds(acts) == [("Start", 0), ("Start", 1), ("Start", 2)]
    assert [s.state for s in sup.slots] == [WAITING] * 3
    for a in acts:
        assert isinstance(a, Start)
        sup.started(a.slot, 100 + a.slot.n, 0.0)
    assert [(s.state, s.pid, s.ready) for s in sup.slots] == [
        (STARTING, 100, False), (STARTING, 101, False), (STARTING, 102, False)]
    assert sup.actions(0.1) == []  # starting: nothing more to do
    sup.beat(sup.slots[1], 0.2)
    assert [s.state for s in sup.slots] == [STARTING, RUNNING, STARTING]
    assert sup.slots[1].ready
    sup.target = 5
    assert kinds(sup.actions(0.3)) == [("Start", 3), ("Start", 4)]


def test_a_worker_that_ran_a_while_is_restarted_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    sup = supervisor(2)
    slot = sup.slots[0]
    pid = slot.pid
    sup.beat(slot, 30.0)
    with caplog.at_level(logging.INFO, logger="zq.node"):
        sup.exited(slot, -9, 42.5)
    assert (slot.state, slot.pid, slot.crashes, slot.exits) == (WAITING, 0, 0, [-9])
    assert sup.restarts == 1
    assert f"worker 0 (pid {pid}) exited with signal 9 after 42.5 s; restarting it" \
        in caplog.text
    acts = run(sup, 42.5)
    assert kinds(acts) == [("Start", 0)]  # the same slot, the same number
    assert slot.pid not in (0, pid)
    assert len(sup.slots) == 2


def test_crashes_at_start_are_restarted_with_a_growing_delay(
        caplog: pytest.LogCaptureFixture) -> None:
    sup = supervisor(1)
    slot = sup.slots[0]
    now, delays = 0.0, []
    caplog.set_level(logging.INFO, logger="zq.node")
    for _ in range(9):
        sup.started(slot, next(PIDS), now)
        now += 0.3  # it dies while importing: no heartbeat
        sup.exited(slot, 1, now)
        delays.append(slot.restart_at - now)
        assert run(sup, slot.restart_at - 0.001) == []  # not before its time
        now = slot.restart_at
        assert kinds(sup.actions(now)) == [("Start", 0)]
    assert delays == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
    assert slot.crashes == 9
    assert sup.restarts == 9
    assert "worker 0 (pid" in caplog.text
    assert "exited with code 1 after 0.3 s; it crashed 1 time(s) in a row: restarting it " \
           "in 0.5 s" in caplog.text
    assert "it crashed 3 time(s) in a row: restarting it in 2 s" in caplog.text
    assert slot.exits == [1] * 9


def test_backoff_settings_and_the_next_deadline() -> None:
    sup = Supervisor(backoff_first=0.1, backoff_max=0.35)
    sup.target = 1
    sup.actions(0.0)
    slot = sup.slots[0]
    got = []
    for i in range(4):
        sup.started(slot, 10 + i, float(i))
        sup.exited(slot, 3, i + 0.05)
        got.append(round(slot.restart_at - (i + 0.05), 6))
        assert sup.next_deadline(i + 0.05) == slot.restart_at  # it wakes for the restart
    assert got == [0.1, 0.2, 0.35, 0.35]


def test_a_quick_exit_after_the_first_heartbeat_is_a_crash_too() -> None:
    sup = supervisor(1)
    slot = sup.slots[0]
    sup.exited(slot, 1, 0.9)  # ready (it beat at 0.0), but gone within `quick` (1 s)
    assert (slot.crashes, slot.restart_at) == (1, 1.4)


def test_a_good_run_resets_the_backoff() -> None:
    sup = supervisor(1)
    slot = sup.slots[0]
    for t in (0.2, 1.0, 2.5):  # three crashes in a row, ready or not
        sup.exited(slot, 1, t)
        sup.started(slot, next(PIDS), slot.restart_at)
    assert slot.crashes == 3
    started = slot.started
    sup.beat(slot, started + 0.5)
    sup.exited(slot, -9, started + 5.0)  # it ran 5 s: not a crash
    assert (slot.crashes, slot.restart_at) == (0, started + 5.0)
    sup.started(slot, next(PIDS), started + 5.0)
    sup.exited(slot, 1, started + 5.2)  # the next crash starts again at the first delay
    assert (slot.crashes, slot.restart_at) == (1, started + 5.7)


def test_a_worker_that_stops_heartbeating_is_killed(
        caplog: pytest.LogCaptureFixture) -> None:
    sup = supervisor(2)
    a, b = sup.slots
    sup.beat(a, 10.0)
    sup.beat(b, 10.0)
    assert sup.actions(11.0) == []  # silent for exactly beat_timeout (1 s): not yet
    assert sup.next_deadline(10.5) == 11.0
    sup.beat(b, 11.0)
    with caplog.at_level(logging.WARNING, logger="zq.node"):
        acts = sup.actions(11.01)
    assert kinds(acts) == [("Kill", 0)]
    assert f"worker 0 (pid {a.pid}) sent no heartbeat for 1.0 s: killing it" in caplog.text
    assert sup.actions(11.5) == []  # killed once; its exit restarts it
    sup.exited(a, -9, 11.6)
    assert a.crashes == 0  # it ran 11.6 s
    assert kinds(run(sup, 11.6)) == [("Start", 0)]


def test_a_worker_not_ready_yet_is_given_the_startup_limit() -> None:
    sup = Supervisor()
    sup.target = 1
    run(sup, 0.0, beat=False)  # importing its App, connecting: no heartbeat yet
    slot = sup.slots[0]
    assert sup.actions(5.0) == []
    assert sup.actions(STARTUP_LIMIT) == []
    assert kinds(sup.actions(STARTUP_LIMIT + 0.01)) == [("Kill", 0)]
    sup.exited(slot, -9, STARTUP_LIMIT + 0.02)
    assert slot.crashes == 1  # never ready: a crash at start
    assert slot.restart_at == STARTUP_LIMIT + 0.52


def test_a_late_first_heartbeat_makes_it_ready() -> None:
    sup = Supervisor()
    sup.target = 1
    run(sup, 0.0, beat=False)
    slot = sup.slots[0]
    sup.beat(slot, 7.0)
    assert (slot.state, slot.ready) == (RUNNING, True)
    assert sup.actions(8.0) == []
    assert kinds(sup.actions(8.01)) == [("Kill", 0)]  # from now on it must keep beating


def test_scaling_down_drains_the_newest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zq.node")
    sup = supervisor(4)
    assert [s.n for s in sup.slots] == [0, 1, 2, 3]
    sup.target = 1
    acts = run(sup, 1.0)
    assert kinds(acts) == [("Stop", 1), ("Stop", 2), ("Stop", 3)]
    assert [s.state for s in sup.slots] == [RUNNING, DRAINING, DRAINING, DRAINING]
    assert [s.n for s in sup.active()] == [0]
    assert "worker 3 (pid" in caplog.text
    assert "draining it (the target is 1)" in caplog.text
    assert run(sup, 1.5) == []  # each is told once
    # They leave the slots as they exit, and are not restarted.
    draining = sup.slots[1:]
    for i, s in enumerate(draining):
        sup.exited(s, 0, 2.0 + i)
        assert s not in sup.slots
    assert [s.n for s in sup.slots] == [0]
    assert sup.restarts == 0
    assert run(sup, 5.0) == []
    assert "worker 2 (pid" in caplog.text
    assert "stopped (code 0)" in caplog.text


def test_scaling_down_drops_a_slot_waiting_to_restart() -> None:
    sup = supervisor(3)
    crashed = sup.slots[2]
    sup.exited(crashed, 1, 0.2)  # waits 0.5 s to restart
    sup.target = 2
    assert sup.actions(0.3) == []  # nothing to stop: it has no process
    assert [s.n for s in sup.slots] == [0, 1]


def test_a_rise_while_draining_starts_new_workers() -> None:
    sup = supervisor(3)
    sup.target = 1
    run(sup, 1.0)
    sup.target = 3  # the draining ones go on draining; two new ones count instead
    acts = run(sup, 1.5)
    assert kinds(acts) == [("Start", 3), ("Start", 4)]
    assert [(s.n, s.state) for s in sup.slots] == [
        (0, RUNNING), (1, DRAINING), (2, DRAINING), (3, RUNNING), (4, RUNNING)]


def test_slot_numbers_are_reused() -> None:
    sup = supervisor(4)
    sup.target = 2
    for a in run(sup, 1.0):
        sup.exited(a.slot, 0, 2.0)
    assert [s.n for s in sup.slots] == [0, 1]
    sup.target = 4
    assert kinds(run(sup, 3.0)) == [("Start", 2), ("Start", 3)]
    # The first one goes: its number is the lowest free one for the next slot.
    first = sup.slots[0]
    sup.target = 3
    assert kinds(run(sup, 4.0)) == [("Stop", 3)]  # the newest, not the first
    sup.exited(sup.slots[-1], 0, 4.5)
    assert [s.n for s in sup.slots] == [0, 1, 2]
    sup.slots.remove(first)  # as if it had been drained
    sup.target = 3
    assert kinds(run(sup, 5.0)) == [("Start", 0)]


def test_stopping_stops_every_worker_and_restarts_none() -> None:
    sup = supervisor(3)
    sup.exited(sup.slots[1], 1, 0.5)  # waiting to restart
    run(sup, 1.0, beat=False)  # it is restarting, not ready yet
    sup.stopping = True
    acts = sup.actions(2.0)
    assert kinds(acts) == [("Stop", 0), ("Stop", 1), ("Stop", 2)]
    for a in acts:
        sup.exited(a.slot, 0, 3.0)
    assert sup.slots == []
    assert sup.restarts == 1  # only the one before stopping
    assert sup.actions(4.0) == []


def test_a_draining_worker_that_stops_heartbeating_is_killed() -> None:
    """A worker goes on beating while it drains (``serve`` stops its beat only after the
    drain): one whose event loop hangs while draining (a task that blocks the loop; its
    own drain timeout runs on that loop, so it never exits) stays for ever unless the
    node kills it, for its silence or at the latest when a drain should have ended (the
    default drain timeout is 30 s). tests/system/test_node.py shows it with processes."""
    sup = supervisor(2)
    newest = sup.slots[1]
    sup.target = 1
    assert kinds(sup.actions(1.0)) == [("Stop", 1)]
    sup.beat(newest, 1.2)  # and then never again: its loop hangs
    beat_all(sup, 60.0, but=[newest])
    assert kinds(sup.actions(60.0)) == [("Kill", 1)]


def test_slot_defaults() -> None:
    s = Slot(7)
    assert (s.n, s.state, s.pid, s.ready, s.crashes, s.exits) == (7, WAITING, 0, False, 0, [])
    assert Supervisor().next_deadline(5.0) == 6.0  # nothing to wait for: a second
