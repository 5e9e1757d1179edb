"""What queue and task operations (MANAGE) get from the core: a table type, handed in.

The operations live in ``zq.manage``; the core never imports them. A handler gets
the core (typed here by what operations may use of it), the operation's
arguments, ``now``, the session that asked and the request's ``req``; it returns
the reply map, or None when it answers later (a ``wait``). No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from zq.config import BrokerConfig
    from zq.core.journal import Journal
    from zq.core.membership import Membership
    from zq.core.model import Msg, Peer, Queue
    from zq.core.results import Outcome, Results
    from zq.core.streams import Stream
    from zq.core.topics import Topic
    from zq.protocol import codec
    from zq.protocol import frames as f
    from zq.schedules import Schedule

Handler = Callable[[Any, dict[str, Any], float, Any, int], "dict[str, Any] | None"]
Status = Callable[[Any, str, int, float], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Operations:
    """MANAGE operations by name; those that only read (their reply never waits for a
    write that failed); those answered at once, not after the next commit (they say
    by name what is not stored yet: ``explain``); and how a timed-out ``wait`` is
    answered."""

    handlers: Mapping[str, Handler] = field(default_factory=dict)
    read_only: frozenset[str] = frozenset()
    at_once: frozenset[str] = frozenset()
    status: Status | None = None


NO_OPERATIONS = Operations()


class QueueOps(Protocol):
    """What queue and task operations may use of the core (``zq.core.facade.Core``)."""

    cfg: BrokerConfig
    limits: codec.Limits
    queues: dict[str, Queue]
    peers: dict[bytes, Peer]
    counters: dict[str, int]
    results: Results
    schedules: dict[str, Schedule]
    journal: Journal
    wall_offset: float
    next_id: int
    topics: dict[str, Topic]
    streams: dict[str, Stream]
    membership: Membership | None

    def queue(self, name: str) -> Queue: ...
    def touch(self, q: Queue) -> None: ...
    def untouch(self, q: Queue) -> None: ...
    def forget_backlog(self, q: Queue) -> None: ...
    def drain_backlog(self, q: Queue) -> None: ...
    def budget(self, m: Msg) -> int: ...
    def configure(self, q: Queue, s: Any) -> None: ...
    def stage_settings(self, q: Queue) -> None: ...
    def stage_schedule(self, s: Schedule) -> None: ...
    def stage_topic(self, t: Topic) -> None: ...
    def unbind_all(self, queue: str) -> int: ...
    def queue_stats(self, q: Queue, in_flight: int, now: float) -> dict[str, Any]: ...
    def in_flight(self) -> dict[str, int]: ...
    def first_unstored(self, q: Queue) -> int: ...
    def remove_delayed(self, q: Queue) -> list[Msg]: ...
    def delayed_entries(self) -> list[tuple[float, int, Msg]]: ...
    def move(self, m: Msg, d: Queue) -> None: ...
    def untrack(self, m: Msg) -> None: ...
    def outcome(self, m: Msg, state: str, data: dict[str, Any], now: float) -> None: ...
    def stale_settled(self, peer: Peer, mid: int, attempt: int) -> None: ...
    def on_ack(self, peer: Peer, frame: f.Ack, data: dict[str, Any] | None = None) -> None: ...
    def on_nack(self, peer: Peer, frame: f.Nack, now: float) -> None: ...


__all__ = ["NO_OPERATIONS", "Handler", "Operations", "Outcome", "QueueOps", "Status"]
