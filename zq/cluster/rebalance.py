"""``zq cluster rebalance --plan``: which queues to move so that each broker holds its
share. No I/O: :func:`plan` takes the cluster file and what each broker holds.

The goal, in order (a move is proposed only if it makes this better, never worse):

1. **Pins.** A pinned queue (the cluster file's ``pins``) that is not on its pin's
   broker goes there; a pinned queue is never moved anywhere else.
2. **Draining brokers are emptied.** Each queue on a draining broker goes to the
   active broker that is furthest below its share (the biggest queues first). A queue
   pinned to the draining broker stays: a pin is the operator's explicit choice.
3. **Messages by weight.** Each active broker's share of all messages approaches its
   weight over the active brokers' total: the most loaded broker against the least
   loaded (the biggest imbalance first), with the queue whose size is nearest half
   their difference, as long as the sum of squared differences from the targets goes
   down and some broker is off by more than ``tolerance`` of its target.
4. **Queues by weight**, the tie-breaker: the same for the number of queues, moving
   only queues whose move does not make the message balance worse (mostly empty ones).

Phases 3 and 4 take turns until neither finds a move: a queue-count move may leave
the messages outside ``tolerance`` again, and the next message pass mends that with
a queue not moved yet. A queue is moved at most once in a plan, so a plan has at most
as many moves as there are queues. Dead-letter queues (``.dlq``) are never
proposed: only their broker writes them, so they stay with their source queue; their
messages count where they are. A queue held by two brokers (QUEUE_CONFLICT) is left
for an operator to settle, and counted where it is.
"""

from __future__ import annotations

import bisect
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from zq.cluster.config import ClusterConfig
from zq.cluster.placement import pinned
from zq.protocol.names import is_dead_letter_queue

PIN, DRAIN, MESSAGES, QUEUES = "pin", "draining", "messages", "queues"


@dataclass(frozen=True, slots=True)
class Move:
    queue: str
    source: str
    target: str
    messages: int
    reason: str  # PIN, DRAIN, MESSAGES or QUEUES

    @property
    def command(self) -> str:
        """The command that carries it out."""
        return move_command(self.queue, self.target)


@dataclass(slots=True)
class Load:
    """What one broker holds, and what it should hold."""

    messages: int = 0
    queues: int = 0  # movable ones: not dead-letter queues, not in conflict
    target_messages: float = 0.0
    target_queues: float = 0.0


@dataclass(slots=True)
class Plan:
    moves: list[Move] = field(default_factory=list)
    before: dict[str, Load] = field(default_factory=dict)
    after: dict[str, Load] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)  # queues held by two brokers


def move_command(queue: str, broker: str) -> str:
    """``zq queue move QUEUE --to BROKER``, quoted for a POSIX shell where needed."""
    return f"zq queue move {shlex.quote(queue)} --to {shlex.quote(broker)}"


class _State:
    """Where each movable queue is, each broker's totals, and the rules that move them."""

    def __init__(self, cfg: ClusterConfig, held: Mapping[str, Mapping[str, int]],
                 tolerance: float) -> None:
        self.cfg = cfg
        self.tolerance = tolerance
        self.active = [b.id for b in cfg.brokers if b.active]
        self.load = {b.id: Load() for b in cfg.brokers}
        holders: dict[str, list[str]] = {}
        for bid, queues in held.items():
            for q in queues:
                holders.setdefault(q, []).append(bid)
        self.conflicts = sorted(q for q, bs in holders.items() if len(bs) > 1)
        self.where: dict[str, str] = {}
        self.size: dict[str, int] = {}
        self.movable: dict[str, list[tuple[int, str]]] = {b: [] for b in self.load}
        for bid, queues in held.items():
            for q, n in queues.items():
                self.load[bid].messages += n
                if len(holders[q]) > 1 or is_dead_letter_queue(q):
                    continue
                self.load[bid].queues += 1
                self.where[q], self.size[q] = bid, n
                if pinned(q, cfg) is None:
                    bisect.insort(self.movable[bid], (n, q))
        self.moves: list[Move] = []

    def set_targets(self) -> None:
        """Each active broker's share, by weight, of what the active brokers will hold
        once the draining ones are emptied (what stays there, pinned to them or not
        movable, is not shared out)."""
        weights = {b.id: b.weight for b in self.cfg.brokers if b.active}
        total_w = sum(weights.values())
        total_m = sum(x.messages for x in self.load.values())
        total_q = sum(x.queues for x in self.load.values())
        for b in self.cfg.brokers:
            if not b.active:
                total_m -= self.load[b.id].messages - sum(n for n, _ in self.movable[b.id])
                total_q -= self.load[b.id].queues - len(self.movable[b.id])
        for bid, w in weights.items():
            self.load[bid].target_messages = total_m * w / total_w
            self.load[bid].target_queues = total_q * w / total_w

    def move(self, q: str, target: str, reason: str) -> None:
        source, n = self.where[q], self.size[q]
        if pinned(q, self.cfg) is None:
            self.movable[source].remove((n, q))  # moved once: not offered again
        for bid, sign in ((source, -1), (target, 1)):
            self.load[bid].messages += sign * n
            self.load[bid].queues += sign
        self.where[q] = target
        self.moves.append(Move(q, source, target, n, reason))

    def excess(self, bid: str, by_queues: bool) -> float:
        x = self.load[bid]
        return x.queues - x.target_queues if by_queues else x.messages - x.target_messages

    def settled(self, by_queues: bool) -> bool:
        """Whether every active broker is within ``tolerance`` of its target, or within
        half a message or queue (units cannot be split)."""
        for bid in self.active:
            x = self.load[bid]
            target = x.target_queues if by_queues else x.target_messages
            if abs(self.excess(bid, by_queues)) > max(0.5, self.tolerance * target):
                return False
        return True

    def emptiest(self) -> str:
        """The active broker a queue is best added to: the furthest below its share of
        messages (then of queues, then the smaller id)."""
        return min(self.active, key=lambda b: (self.excess(b, False), self.excess(b, True), b))


def _pins(s: _State) -> None:
    for q in sorted(s.where):
        pin = pinned(q, s.cfg)
        if pin is not None and s.where[q] != pin:
            s.move(q, pin, PIN)


def _drain(s: _State) -> None:
    """Biggest queues first, each to the broker furthest below its share then."""
    draining = [b.id for b in s.cfg.brokers if not b.active]
    for _, q, _ in sorted(((n, q, bid) for bid in draining for n, q in s.movable[bid]),
                          reverse=True):
        s.move(q, s.emptiest(), DRAIN)


def _pick(s: _State, source: str, gap: float, by_queues: bool) -> str | None:
    """A queue on ``source`` whose move to a broker ``gap`` below it (in messages, or
    in queues) lowers the sum of squares: messages nearest ``gap / 2``; for queues,
    the smallest queue that keeps the message balance (``gap`` is then the messages')."""
    queues = s.movable[source]
    if not queues:
        return None
    if by_queues:
        n, q = queues[0]  # the smallest
        return q if n == 0 or n <= gap else None
    i = bisect.bisect_left(queues, (gap / 2, ""))
    best = None
    for n, q in queues[max(0, i - 1):i + 1]:
        if 0 < n < gap and (best is None or abs(n - gap / 2) < abs(best[0] - gap / 2)):
            best = (n, q)
    return None if best is None else best[1]


def _balance(s: _State, by_queues: bool) -> None:
    """Phase 3 (messages) or 4 (queues): the pair of brokers furthest apart first."""
    for _ in range(len(s.where) + 1):  # each queue moves at most once
        if s.settled(by_queues):
            return
        pairs = sorted(((s.excess(a, by_queues) - s.excess(b, by_queues), a, b)
                        for a in s.active for b in s.active if a != b), reverse=True)
        for gap, source, target in pairs:
            if gap <= (1 if by_queues else 0):
                return  # no move between these (or any closer pair) lowers the sum
            msg_gap = s.excess(source, False) - s.excess(target, False)
            q = _pick(s, source, msg_gap if by_queues else gap, by_queues)
            if q is not None:
                s.move(q, target, QUEUES if by_queues else MESSAGES)
                break
        else:
            return


def _copy(load: Mapping[str, Load]) -> dict[str, Load]:
    return {b: Load(x.messages, x.queues, x.target_messages, x.target_queues)
            for b, x in load.items()}


def plan(cfg: ClusterConfig, held: Mapping[str, Mapping[str, int]],
         tolerance: float = 0.05) -> Plan:
    """The moves for brokers holding ``held`` (broker id -> queue name -> messages; every
    broker of ``cfg`` should be in it), with each broker's load before and after."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    unknown = sorted(set(held) - set(cfg.ids))
    if unknown:
        raise ValueError(f"brokers not in the cluster file: {', '.join(unknown)}")
    s = _State(cfg, held, tolerance)
    before = _copy(s.load)
    _pins(s)
    s.set_targets()
    for bid, x in before.items():
        x.target_messages, x.target_queues = s.load[bid].target_messages, s.load[bid].target_queues
    _drain(s)
    while True:  # each move spends a queue: at most len(s.where) rounds
        made = len(s.moves)
        _balance(s, by_queues=False)
        _balance(s, by_queues=True)
        if len(s.moves) == made:
            break
    return Plan(s.moves, before, _copy(s.load), s.conflicts)
