"""Where a client's frames go in a cluster (PROTOCOL.md section 17). No I/O, no clock.

* :func:`endpoints`: the endpoints a :class:`zq.Client` was given (a list, or a
  comma-separated string as ``ZQ_ENDPOINT`` may hold).
* :func:`failover_order` and :func:`attempt_timeout`: which endpoint to try next
  when the main connection loses its node, and for how long.
* :class:`Routes`: queue → endpoint of the broker a MOVED named, bounded, least
  recently used out.
* :func:`next_hop` and :class:`Hops`: whether to follow a MOVED (at most
  :data:`MAX_HOPS` in a row), and where to.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

MAX_HOPS = 3  # MOVED answers followed in a row before the MOVED error is the answer
MAX_ROUTES = 10_000  # queues whose broker a client remembers


def endpoints(value: str | Iterable[str]) -> tuple[str, ...]:
    """The endpoints in ``value``: one, several separated by commas, or a list of them.

    Blanks around names are dropped, and so are repeats (the first one stays).
    Raises ValueError if none is left or an item is not a str.
    """
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"an endpoint is a str like 'tcp://host:port', got {item!r}")
        for part in item.split(","):
            ep = part.strip()
            if ep and ep not in out:
                out.append(ep)
    if not out:
        raise ValueError(f"no endpoint in {value!r}")
    return tuple(out)


def failover_order(eps: tuple[str, ...], current: str) -> list[str]:
    """The endpoints to try when the node at ``current`` is lost: those after it in
    order, wrapping around, and ``current`` last (it may be back by then)."""
    if current not in eps:
        return list(eps)
    i = eps.index(current)
    return [*eps[i + 1:], *eps[:i], current]


def attempt_timeout(left: float, tries_left: int) -> float:
    """A fair share of the ``left`` seconds for the next of ``tries_left`` endpoints:
    an endpoint that fails fast leaves its share to the ones after it."""
    return max(0.0, left) / max(1, tries_left)


def next_hop(info: Mapping[str, Any] | None, hops: int) -> str | None:
    """The endpoint a MOVED's ``info`` sends a frame to, if the frame may follow it
    after ``hops`` moves already; None: the MOVED error is the answer."""
    if hops >= MAX_HOPS or not info:
        return None
    ep = info.get("endpoint")
    return ep if isinstance(ep, str) and ep else None


def is_router(cluster: Mapping[str, Any] | None) -> bool:
    """Whether a WELCOME's ``cluster`` map says the node is a router."""
    return cluster is not None and cluster.get("role") == "router"


def located(loc: Mapping[str, Any]) -> str | None:
    """The endpoint in a LOCATION map (None if it has none)."""
    ep = loc.get("endpoint")
    return ep if isinstance(ep, str) and ep else None


class Routes:
    """Queue → endpoint of the broker that holds it, learnt from MOVED answers.

    At most ``limit`` queues; the least recently used goes first. ``table`` is
    the mapping itself: the client's publish path only tests it for emptiness.
    """

    __slots__ = ("limit", "table")

    def __init__(self, limit: int = MAX_ROUTES) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.table: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self.table)

    def get(self, queue: str) -> str | None:
        ep = self.table.get(queue)
        if ep is not None:
            self.table.move_to_end(queue)
        return ep

    def remember(self, queue: str, endpoint: str) -> None:
        self.table[queue] = endpoint
        self.table.move_to_end(queue)
        while len(self.table) > self.limit:
            self.table.popitem(last=False)

    def forget(self, queue: str) -> None:
        self.table.pop(queue, None)

    def forget_endpoint(self, endpoint: str) -> int:
        """Forget every queue routed to ``endpoint`` (its node was lost); how many."""
        gone = [q for q, ep in self.table.items() if ep == endpoint]
        for q in gone:
            del self.table[q]
        return len(gone)


class Hops:
    """MOVED answers a consumer followed: at most :data:`MAX_HOPS` within ``window``
    seconds of the first of them; a MOVED after a quiet ``window`` starts over."""

    __slots__ = ("count", "since", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self.count = 0
        self.since = 0.0

    def allow(self, now: float) -> bool:
        """One more MOVED at ``now``: whether to follow it."""
        if self.count == 0 or now - self.since > self.window:
            self.count, self.since = 0, now
        if self.count >= MAX_HOPS:
            return False
        self.count += 1
        return True
