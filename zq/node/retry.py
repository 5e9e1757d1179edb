"""``zq.Retry``: how long a failed task waits before its next attempt.

The worker computes the delay when a task fails and sends it with the nack, so
the broker needs no knowledge of the task's backoff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry (and importlib.metadata) loads on the first Retry
    from zq.policies.backoff import BackoffPolicy


@dataclass(frozen=True, slots=True)
class Retry:
    """How long a failed task waits before its next attempt (computed by the worker).

    ``backoff`` names a backoff policy (``exponential``: ``base * 2 ** (attempt -
    1)`` with +-10% jitter, or ``fixed``: ``base``, or a plugin's); never more
    than ``cap`` seconds (exponential jitter may exceed it by 10%).
    """

    backoff: str = "exponential"
    base: float = 0.2
    cap: float = 60.0

    def __post_init__(self) -> None:
        from zq import policies

        try:
            policies.check("backoff", self.backoff)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        for what, v in (("base", self.base), ("cap", self.cap)):
            if (not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
                    or v < 0):
                raise ValueError(f"Retry {what} must be seconds >= 0, got {v!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1 = the first) failed."""
        return float(_backoff(self.backoff).delay(attempt, self.base, self.cap))


# One policy object per name for the life of the process: the Retry is frozen and
# shared by every call of its task, and a backoff policy keeps at most a random source.
_BACKOFFS: dict[str, BackoffPolicy] = {}


def _backoff(name: str) -> BackoffPolicy:
    policy = _BACKOFFS.get(name)
    if policy is None:
        from zq import policies

        policy = _BACKOFFS[name] = policies.load("backoff", name)
    return policy
