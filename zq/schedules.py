"""Durable schedules: a message published to a queue at each due time. No I/O.

A schedule fires every ``every_ms`` milliseconds (anchored at the time it was
added) or at the minutes a cron expression names (UTC). The broker publishes the
message and stores the schedule's next due time in the same transaction, so each
due time fires exactly once however many workers there are. After downtime the
``misfire`` rule applies: ``skip`` goes on from the next future due time; ``once``
fires one message for everything missed, then goes on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from zq.cron import Cron
from zq.errors import InvalidArgument

MISFIRE_RULES = ("skip", "once")
MAX_NAME = 255
MIN_EVERY_MS = 10


@dataclass(slots=True)
class Schedule:
    name: str
    queue: str
    body: bytes
    headers: dict[str, Any] | None = None
    every_ms: int = 0
    cron: str = ""
    misfire: str = "once"
    options: dict[str, Any] = field(default_factory=dict)  # publish options
    anchor: float = 0.0  # wall-clock time of the first due time (every_ms)
    next_due: float = 0.0  # wall clock
    fired: int = 0
    last_fired: float | None = None

    def __post_init__(self) -> None:
        if bool(self.every_ms) == bool(self.cron):
            raise InvalidArgument("a schedule needs exactly one of every_ms and cron")
        if self.every_ms and (type(self.every_ms) is not int
                              or not MIN_EVERY_MS <= self.every_ms <= 366 * 86_400_000):
            raise InvalidArgument(f"every_ms must be {MIN_EVERY_MS}..{366 * 86_400_000}")
        if self.cron:
            Cron.parse(self.cron)
        if self.misfire not in MISFIRE_RULES:
            raise InvalidArgument(f"misfire must be one of {', '.join(MISFIRE_RULES)}")

    def after(self, wall: float) -> float:
        """The first due time strictly after ``wall``."""
        if self.cron:
            return Cron.parse(self.cron).next_after(wall)
        every = self.every_ms / 1000.0
        k = math.floor((wall - self.anchor) / every) + 1
        return self.anchor + max(k, 0) * every

    def to_map(self) -> dict[str, Any]:
        return asdict(self)


def from_map(d: dict[str, Any]) -> Schedule:
    try:
        return Schedule(**d)
    except TypeError as exc:
        raise InvalidArgument(f"bad schedule: {exc}") from None
