"""Which broker a new queue name goes to. No I/O.

Pins first: a pin key matches a name when ``name == key or name.startswith(key)``;
of the matching keys the longest wins. A pin is honoured even when its broker is
draining: a pin is the operator's explicit choice, and draining only stops the
hash from choosing a broker.

Otherwise weighted rendezvous hashing (highest random weight, the logarithmic
method) over the active brokers: each broker draws ``u`` in (0, 1) from
``blake2b(f"{broker_id}\\x00{name}", digest_size=8)`` and scores
``-weight / ln(u)``; the highest score wins, a tie goes to the smaller broker id.
Adding a broker only moves names onto it, removing or draining one only moves its
own names, and a broker's share is its weight over the active brokers' total.

The hash is fixed (never the builtin ``hash()``, which is salted per process), so
every process and Python version places a name on the same broker. The scores go
through the platform's ``log``; two scores closer than one rounding error (about
one name in 2^50) could in principle order differently on another libm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from hashlib import blake2b
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zq.cluster.config import ClusterConfig

_BITS = 52  # u = (k + 1/2) / 2^52 is exact in a double, so never 0 and never 1
_SCALE = float(1 << (_BITS + 1))


def draw(broker_id: str, name: str) -> float:
    """The uniform number in (0, 1) that ``broker_id`` draws for ``name``."""
    digest = blake2b(f"{broker_id}\x00{name}".encode(), digest_size=8).digest()
    k = int.from_bytes(digest, "big") >> (64 - _BITS)
    return (2 * k + 1) / _SCALE


def score(broker_id: str, weight: float, name: str) -> float:
    """The broker's bid for ``name``: ``-weight / ln(u)``, higher wins."""
    return -weight / math.log(draw(broker_id, name))


def pinned(name: str, cfg: ClusterConfig) -> str | None:
    """The broker of the longest pin key that matches ``name``, or None."""
    best: tuple[str, str] | None = None
    for key, target in cfg.pins:
        if (name == key or name.startswith(key)) and (best is None or len(key) > len(best[0])):
            best = (key, target)
    return None if best is None else best[1]


def place(name: str, cfg: ClusterConfig) -> str:
    """The broker id for a new queue ``name``: its pin, else the top rendezvous score
    among the active brokers."""
    target = pinned(name, cfg)
    if target is not None:
        return target
    best_id = ""
    best = -math.inf
    for b in sorted(cfg.brokers, key=lambda b: b.id):
        if not b.active:
            continue
        s = score(b.id, b.weight, name)
        if s > best:  # strict: on a tie the smaller id, seen first, keeps it
            best_id, best = b.id, s
    return best_id  # the config guarantees at least one active broker


def spread(names: Iterable[str], cfg: ClusterConfig) -> dict[str, int]:
    """How many of ``names`` each broker gets (every broker listed, draining ones too)."""
    counts = dict.fromkeys(cfg.ids, 0)
    for name in names:
        counts[place(name, cfg)] += 1
    return counts
