"""Per-queue settings: what ``zq queue declare``, the SDK and ``[queues.NAME]`` set.

A frozen dataclass validated on construction; the broker keeps one per queue
and stores it with the queue, so settings survive restarts. Durations are in
seconds; 0 means "none" (no limit, no TTL, no delay).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from zq.errors import InvalidArgument
from zq.protocol.names import RULE, name_problem

DLQ_SUFFIX = ".dlq"
NO_DLQ = "-"  # the ``dlq`` value for "dead messages are dropped"
OVERFLOW_RULES = ("reject", "drop-oldest")
MAX_COUNT = 10**12  # the largest max_length, redrive limit and the like
_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class QueueSettings:
    max_length: int = 0  # ready + delayed messages; 0 = unbounded
    overflow: str = "reject"  # overflow policy name: reject | drop-oldest | a plugin's
    ttl: float = 0.0  # seconds a message may wait before it expires to the DLQ
    max_attempts: int = 5  # failed attempts before a message goes to the DLQ
    dlq: str = ""  # dead-letter queue; "" = "<queue>.dlq", "-" = drop dead messages
    dedup_window: float = 300.0  # seconds a dedup_id is remembered
    time_limit: float = 0.0  # seconds one attempt may run; 0 = as long as the consumer lives
    retry: str = "fixed"  # backoff policy for nacks without a delay: fixed | exponential
    retry_delay: float = 0.0  # the backoff's base delay
    retry_max_delay: float = 300.0  # the backoff's cap
    selection: str = "weighted-fair"  # which tenant serves next: weighted-fair | strict
    weights: dict[str, int] = field(default_factory=dict)  # tenant -> weight (default 1)
    caps: dict[str, int] = field(default_factory=dict)  # tenant -> max messages in flight
    result_ttl: float = 0.0  # seconds each message's outcome (result, error) is kept; 0 = not
    idle_ttl: float = 0.0  # seconds without a consumer before the queue is deleted; 0 = never

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise InvalidArgument(f"queue setting {what}")

        need(type(self.max_length) is int and 0 <= self.max_length <= MAX_COUNT,
             f"max_length must be 0..{MAX_COUNT}")
        need(type(self.max_attempts) is int and 1 <= self.max_attempts <= 1_000_000,
             "max_attempts must be 1..1000000")
        for name in ("ttl", "dedup_window", "time_limit", "retry_delay", "retry_max_delay",
                     "result_ttl", "idle_ttl"):
            v = getattr(self, name)
            need(isinstance(v, int | float) and not isinstance(v, bool)
                 and 0 <= v <= 36_500 * _DAY, f"{name} must be 0..{36_500 * _DAY:.0f} seconds")
        for name in ("overflow", "retry", "selection"):
            v = getattr(self, name)
            need(isinstance(v, str) and 0 < len(v) <= 100, f"{name} must be a policy name")
        need(isinstance(self.dlq, str) and (self.dlq in ("", NO_DLQ)
                                            or name_problem(self.dlq) is None),
             f"dlq must be '', '-' or a queue name ({RULE})")
        for name in ("weights", "caps"):
            m = getattr(self, name)
            need(isinstance(m, dict) and len(m) <= 10_000, f"{name} must be a map")
            for k, v in m.items():
                need(isinstance(k, str) and 0 < len(k.encode()) <= 255
                     and type(v) is int and 1 <= v <= 1_000_000,
                     f"{name} must map tenant names to integers 1..1000000")

    def dead_letter_queue(self, queue: str) -> str | None:
        """Where ``queue``'s dead messages go (None: dropped)."""
        if self.dlq == NO_DLQ:
            return None
        if self.dlq:
            return self.dlq
        if queue.endswith(DLQ_SUFFIX):
            return None
        # Queue names are at most 255 bytes: shorten a long name to leave room.
        room = 255 - len(DLQ_SUFFIX)
        return queue.encode()[:room].decode("utf-8", "ignore") + DLQ_SUFFIX

    def to_map(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def update(self, changes: dict[str, Any]) -> QueueSettings:
        """These settings with ``changes`` applied (unknown keys are INVALID_ARGUMENT)."""
        return from_map(changes, self)


FIELDS = tuple(f.name for f in dataclasses.fields(QueueSettings))


def check_policies(s: QueueSettings) -> None:
    """INVALID_ARGUMENT unless every policy the settings name can be loaded."""
    from zq import policies  # the registry may import plugins: only when asked

    for kind, name in (("overflow", s.overflow), ("backoff", s.retry),
                       ("selection", s.selection)):
        try:
            policies.check(kind, name)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None


def from_map(m: Any, base: QueueSettings | None = None) -> QueueSettings:
    """Settings from a wire or TOML map (keys may use '-' for '_')."""
    if not isinstance(m, dict):
        raise InvalidArgument("queue settings must be a map")
    values: dict[str, Any] = {}
    for key, v in m.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise InvalidArgument(f"unknown queue setting {key!r}; known: {', '.join(FIELDS)}")
        if name in ("ttl", "dedup_window", "time_limit", "retry_delay", "retry_max_delay",
                    "result_ttl", "idle_ttl") and type(v) is int:
            v = float(v)
        values[name] = v
    try:
        return dataclasses.replace(base or QueueSettings(), **values)
    except TypeError as exc:
        raise InvalidArgument(f"bad queue settings: {exc}") from None
