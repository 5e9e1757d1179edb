"""The decisions of ``zq node``, without I/O: how many workers to run (``Scaler``, over
a scaling policy) and which worker processes to start, stop or kill (``Supervisor``).

The shell (``zq.node.noded``) tells them what happened, with the time, and carries out
the actions they return; timing is tested without sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from zq.policies.scaling import Decision, NodeFigures, QueueFigures, ScalingPolicy

log = logging.getLogger("zq.node")

STARTING, RUNNING, DRAINING, WAITING = "starting", "running", "draining", "waiting"
STARTUP_LIMIT = 30.0  # seconds a worker may take to import its App and connect
DRAIN_MARGIN = 5.0  # seconds past its drain timeout before a draining worker is killed


class Scaler:
    """The number of workers wanted: the policy's, within ``lo``..``hi``; up at once,
    down only once the policy has wanted fewer for ``cooldown`` seconds."""

    def __init__(self, policy: ScalingPolicy, lo: int, hi: int, cooldown: float) -> None:
        self.policy = policy
        self.lo, self.hi = lo, hi
        self.cooldown = cooldown
        self.target = lo
        self.decision = Decision(lo, f"start with {lo} worker(s)")
        self._lower_since: float | None = None

    def tick(self, now: float, queues: Sequence[QueueFigures], node: NodeFigures) -> int:
        d = self.policy.decide(queues, node)
        wanted = min(self.hi, max(self.lo, d.workers))
        if wanted < self.target and self._lower_since is None:
            self._lower_since = now
        if wanted >= self.target or now - (self._lower_since or now) >= self.cooldown:
            self._lower_since = None
            self.target = wanted
            self.decision = Decision(wanted, d.reason)
        else:
            self.decision = Decision(self.target, f"{d.reason} (cooling down "
                                                  f"{self.cooldown:g} s)")
        return self.target


@dataclass(slots=True)
class Slot:
    """One worker process of the node (it keeps its number through restarts)."""

    n: int
    state: str = WAITING
    pid: int = 0
    started: float = 0.0
    last_beat: float = 0.0
    ready: bool = False  # it has sent a heartbeat since it started
    crashes: int = 0  # quick exits in a row
    restart_at: float = 0.0
    drain_from: float = 0.0  # when it was told to drain
    exits: list[int] = field(default_factory=list)  # exit codes, latest last (last 10)


@dataclass(frozen=True, slots=True)
class Start:
    slot: Slot


@dataclass(frozen=True, slots=True)
class Stop:  # SIGTERM: finish what it runs, hand back what it holds
    slot: Slot


@dataclass(frozen=True, slots=True)
class Kill:  # SIGKILL: it stopped heartbeating
    slot: Slot


Action = Start | Stop | Kill


class Supervisor:
    """Worker slots: started up to the target, restarted when they exit (with a growing
    delay when they die soon after starting), killed when they stop heartbeating,
    drained when the target falls."""

    def __init__(self, *, beat_timeout: float = 1.0, quick: float = 1.0,
                 backoff_first: float = 0.5, backoff_max: float = 30.0,
                 drain_timeout: float = 30.0) -> None:
        self.beat_timeout = beat_timeout
        self.quick = quick  # a worker that exits sooner than this after its start crashed
        self.backoff_first, self.backoff_max = backoff_first, backoff_max
        self.drain_limit = drain_timeout + DRAIN_MARGIN  # then a draining worker is killed
        self.slots: list[Slot] = []
        self.target = 0
        self.stopping = False
        self.restarts = 0

    def active(self) -> list[Slot]:
        """Slots that count towards the target (not draining)."""
        return [s for s in self.slots if s.state != DRAINING]

    def started(self, slot: Slot, pid: int, now: float) -> None:
        slot.state, slot.pid, slot.started, slot.last_beat = STARTING, pid, now, now
        slot.ready = False

    def beat(self, slot: Slot, now: float) -> None:
        slot.last_beat = now
        if not slot.ready:
            slot.ready = True
            if slot.state == STARTING:
                slot.state = RUNNING

    def exited(self, slot: Slot, code: int, now: float) -> None:
        """Its process ended (``code``: its exit status, negative for a signal)."""
        slot.exits = [*slot.exits[-9:], code]
        if slot.state == DRAINING or self.stopping:
            if slot in self.slots:
                self.slots.remove(slot)
            log.info("worker %d (pid %d) stopped (%s)", slot.n, slot.pid, _status(code))
            return
        ran = now - slot.started
        # A crash at start: before it was ready (its first heartbeat), or soon after.
        crashed = not slot.ready or ran < self.quick
        slot.crashes = slot.crashes + 1 if crashed else 0
        delay = 0.0 if slot.crashes == 0 else min(
            self.backoff_max, self.backoff_first * 2 ** (slot.crashes - 1))
        pid = slot.pid
        slot.state, slot.pid, slot.restart_at = WAITING, 0, now + delay
        self.restarts += 1
        log.warning("worker %d (pid %d) exited with %s after %.1f s; %s", slot.n, pid,
                    _status(code), ran, "restarting it" if delay == 0 else
                    f"it crashed {slot.crashes} time(s) in a row: restarting it in "
                    f"{delay:g} s")

    def actions(self, now: float) -> list[Action]:
        """What to do now."""
        if self.stopping:
            return [Stop(s) for s in self.slots if s.state in (STARTING, RUNNING)]
        out: list[Action] = []
        for s in self.slots:
            if s.state == WAITING or s.pid == 0:
                continue
            if now - s.last_beat > self.beat_timeout \
                    and (s.ready or now - s.started > STARTUP_LIMIT):
                log.warning("worker %d (pid %d) sent no heartbeat for %.1f s: killing it",
                            s.n, s.pid, now - s.last_beat)
                s.last_beat = now  # once: its exit restarts it (or ends it, if draining)
                out.append(Kill(s))
            elif s.state == DRAINING and now - s.drain_from > self.drain_limit:
                log.warning("worker %d (pid %d) is still draining after %.0f s: killing it",
                            s.n, s.pid, now - s.drain_from)
                s.drain_from = now  # once
                out.append(Kill(s))
        active = self.active()
        for s in active[self.target:]:  # the newest go first
            if s.state == WAITING:
                self.slots.remove(s)
            else:
                s.state, s.drain_from = DRAINING, now
                log.info("worker %d (pid %d): draining it (the target is %d)", s.n, s.pid,
                         self.target)
                out.append(Stop(s))
        taken = {s.n for s in self.slots}
        while len(self.active()) < self.target:
            n = next(i for i in range(len(self.slots) + 1) if i not in taken)
            taken.add(n)
            self.slots.append(Slot(n))
        out += [Start(s) for s in self.slots if s.state == WAITING and s.restart_at <= now]
        return out

    def next_deadline(self, now: float) -> float:
        waits = [s.restart_at for s in self.slots if s.state == WAITING]
        beats = [s.last_beat + self.beat_timeout for s in self.slots
                 if s.state != WAITING and s.pid]
        beats += [s.drain_from + self.drain_limit for s in self.slots if s.state == DRAINING]
        return min([*waits, *beats, now + 1.0])


def _status(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"
