"""Scaling: how many worker processes a node (``zq node``) should run. No I/O.

Every interval the node hands its policy what the broker reports for the node's queues
(:class:`QueueFigures`) and the node's own figures (:class:`NodeFigures`); the policy
answers a :class:`Decision`: the number of workers it wants, and why, in words. The
node keeps the number between its ``--min`` and ``--max``, scales up at once, and
scales down only after a cool-down (``zq.node.supervise``), so a policy need not.

A plugin is a class with ``kind = "scaling"``, a ``name`` and ``decide``, registered
in the ``zq.policies`` entry-point group (docs/DESIGN.md, "The scheduler").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue as the broker reports it (``zq queue info``)."""

    name: str
    ready: int = 0  # ready to deliver, in memory and on disk
    delayed: int = 0
    in_flight: int = 0
    consumers: int = 0
    publish_rate: float = 0.0  # messages per second, recent
    ack_rate: float = 0.0
    oldest_age: float = 0.0  # seconds the oldest ready message has waited


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """The node's own: its workers now, its bounds, and the host."""

    workers: int  # running (or starting) now
    min: int
    max: int
    concurrency: int  # tasks one worker runs at once
    cpu_percent: float = 0.0  # of the workers together, of one CPU
    rss_mb: float = 0.0  # of the workers together
    load1: float = 0.0  # the host's load average over a minute


@dataclass(frozen=True, slots=True)
class Decision:
    workers: int
    reason: str


class ScalingPolicy(Protocol):
    kind: ClassVar[str]
    name: ClassVar[str]

    def decide(self, queues: Sequence[QueueFigures], node: NodeFigures) -> Decision: ...


def service_time(queues: Sequence[QueueFigures], fallback: float) -> float:
    """Mean seconds one task takes, from the broker's figures by Little's law: tasks in
    flight divided by the rate they are acked at (``fallback`` until acks are seen)."""
    in_flight = sum(q.in_flight for q in queues)
    acks = sum(q.ack_rate for q in queues)
    if in_flight <= 0 or acks <= 0:
        return fallback
    return in_flight / acks


class Backlog:
    """Enough workers to drain the ready backlog within ``target`` seconds at the
    measured service time, plus those busy with what is in flight (the default)."""

    kind: ClassVar[str] = "scaling"
    name: ClassVar[str] = "backlog"

    def __init__(self, target: float = 10.0, fallback_service: float = 0.1) -> None:
        self.target = target
        self.fallback_service = fallback_service

    def decide(self, queues: Sequence[QueueFigures], node: NodeFigures) -> Decision:
        backlog = sum(q.ready for q in queues)
        in_flight = sum(q.in_flight for q in queues)
        service = service_time(queues, self.fallback_service)
        # Task slots: those the backlog needs to be done within the target, and those
        # the tasks in flight hold now.
        slots = backlog * service / self.target + in_flight
        wanted = math.ceil(slots / max(1, node.concurrency)) if slots > 0 else 0
        workers = min(node.max, max(node.min, wanted))
        return Decision(workers, f"backlog {backlog:,}, in flight {in_flight:,}, service "
                                 f"{service * 1000:,.0f} ms, target {self.target:g} s "
                                 f"-> {workers} worker(s)")


class Fixed:
    """Always ``--min`` workers (restarted when they die, never scaled)."""

    kind: ClassVar[str] = "scaling"
    name: ClassVar[str] = "fixed"

    def decide(self, queues: Sequence[QueueFigures], node: NodeFigures) -> Decision:
        return Decision(node.min, f"fixed at {node.min} worker(s)")


SCALING_POLICIES: dict[str, Callable[[], ScalingPolicy]] = {
    Backlog.name: Backlog,
    Fixed.name: Fixed,
}
