"""The bounds a broker and a router put on sessions and on malformed frames. No I/O.

Both cores keep a count of sessions per key and a budget of malformed frames per
routing id; these are the rules, written once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from zq.errors import TooManySessions
from zq.security.permissions import SERVER

STRIKES_KEPT = 10_000  # routing ids whose malformed frames are counted at once


def admit(cfg: Any, sessions: int, per_key: Counter[str | None], user: str | None,
          secure: bool, server: str) -> None:
    """Raise TooManySessions unless one more session (of key ``user``) fits: at most
    ``cfg.max_sessions`` in all, and with CURVE ``cfg.max_sessions_per_key`` per key (the
    server's own key is not counted against it). ``server`` names the server in the
    message ("broker", "router")."""
    if sessions >= cfg.max_sessions:
        raise TooManySessions(f"the {server} holds its most sessions "
                              f"(max_sessions {cfg.max_sessions})")
    if secure and user != SERVER and per_key[user] >= cfg.max_sessions_per_key:
        raise TooManySessions(f"key {user!r} holds its most sessions "
                              f"(max_sessions_per_key {cfg.max_sessions_per_key})")


def forget(per_key: Counter[str | None], user: str | None) -> None:
    """A session of ``user`` ended."""
    left = per_key[user] - 1
    if left > 0:
        per_key[user] = left
    else:
        per_key.pop(user, None)


def strike(strikes: dict[bytes, int], identity: bytes, budget: int,
           counters: dict[str, int], noted: list[str]) -> bool:
    """A malformed or out-of-order frame from ``identity``: True if it gets its ERROR;
    False once it has used its ``budget`` (no more ERROR frames: "cut" is noted, and the
    shell closes its connection; ``counters["peers_cut"]`` counts it once)."""
    n = strikes.get(identity, 0) + 1
    if n == 1 and len(strikes) >= STRIKES_KEPT:
        strikes.clear()
    strikes[identity] = n
    if n <= budget:
        return True
    if n == budget + 1:
        counters["peers_cut"] += 1
    noted.append("cut")
    return False
