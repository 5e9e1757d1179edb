"""Queue operations (MANAGE): declare, info, list, pause, resume, purge, delete, redrive,
peek, sync.

Each operation works on the broker core directly (no I/O), stages what must be
stored, and returns the reply map. The core sends the reply once the batch
holding those changes is committed, so a reply means "done and stored".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zq import history
from zq.errors import InvalidArgument, InvalidQueueName, UnknownQueue
from zq.history import DEAD_AT, ORIGIN, REASON
from zq.protocol import codec
from zq.protocol.names import check_publishable, check_queue_name
from zq.settings import MAX_COUNT, QueueSettings, check_policies, from_map

if TYPE_CHECKING:
    from zq.core.api import QueueOps as BrokerCore
    from zq.core.model import Msg, Queue

MAX_PEEK = 100


def _name(args: dict[str, Any], key: str = "queue") -> str:
    name = args.get(key)
    if not isinstance(name, str) or not name or len(name.encode()) > codec.MAX_QUEUE_NAME:
        raise InvalidQueueName(f"{key} must be a queue name of 1..{codec.MAX_QUEUE_NAME} "
                               f"bytes, got {name!r:.80}")
    return name


def _new_name(core: BrokerCore, args: dict[str, Any], key: str = "queue") -> str:
    """A queue name that may create a queue: it must follow the rule of zq.protocol.names
    (queues that exist already, from an older store, are served as they are)."""
    name = _name(args, key)
    return name if name in core.queues else check_queue_name(name)


def _existing(core: BrokerCore, args: dict[str, Any], stream: bool = False) -> Queue:
    """The queue named in ``args`` (a stream's, for an operation that reads only)."""
    name = _name(args)
    q = core.queues.get(name)
    if q is None:
        raise UnknownQueue(f"no queue named {name!r}", queue=name)
    if q.stream is not None and not stream:
        raise InvalidArgument(f"{name!r} is a stream: use the stream operations (zq stream)",
                              queue=name)
    return q


def declare(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Create a queue or change the given settings of an existing one (others stay)."""
    name = _new_name(core, args)
    q = core.queues.get(name)
    if q is not None and q.stream is not None:
        raise InvalidArgument(f"{name!r} is a stream: zq stream declare sets its retention",
                              queue=name)
    created = q is None
    base = q.settings if q is not None else QueueSettings()
    s = from_map(args.get("settings") or {}, base)
    check_policies(s)
    if s.dlq == name:
        raise InvalidArgument(f"queue {name!r} cannot be its own dead-letter queue; "
                              f"dlq='-' drops dead messages instead")
    if s.dlq in core.streams:
        raise InvalidArgument(f"{s.dlq!r} is a stream: a dead-letter queue must be a queue")
    q = core.queue(name)
    core.configure(q, s)
    core.stage_settings(q)
    core.touch(q)
    return {"queue": name, "created": created, "settings": s.to_map()}


def info(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
    q = _existing(core, args, stream=True)
    stats = core.queue_stats(q, core.in_flight().get(q.name, 0), now)
    return {"queue": q.name, "settings": q.settings.to_map(), "stats": stats,
            "dlq": q.dlq}


MAX_LIST = 1000  # queues per ``list`` reply: 10,000 of them would pass 4 MiB


def list_queues(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """The stats of up to ``limit`` queues, by name, those after ``after``; ``more``
    says whether others follow (the SDK pages through them)."""
    after = args.get("after", "")
    limit = args.get("limit", MAX_LIST)
    if not isinstance(after, str):
        raise InvalidArgument("after must be a queue name")
    if type(limit) is not int or not 1 <= limit <= MAX_LIST:
        raise InvalidArgument(f"limit must be 1..{MAX_LIST}")
    names = sorted(n for n in core.queues if n > after)
    in_flight = core.in_flight()
    page = {n: core.queue_stats(core.queues[n], in_flight.get(n, 0), now)
            for n in names[:limit]}
    return {"queues": page, "more": len(names) > limit}


def _pause(paused: bool) -> Callable[[BrokerCore, dict[str, Any], float], dict[str, Any]]:
    def op(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
        q = _existing(core, args)
        q.paused = paused
        core.stage_settings(q)
        core.touch(q)
        return {"queue": q.name, "paused": paused}

    return op


def _take_delayed(core: BrokerCore, q: Queue) -> list[Msg]:
    """Remove ``q``'s delayed messages from the broker's timer heaps."""
    return core.remove_delayed(q) if q.delayed else []


def purge(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Delete every ready and delayed message (in flight ones stay with their consumers)."""
    q = _existing(core, args)
    return {"queue": q.name, "purged": _purge(core, q)}


def _purge(core: BrokerCore, q: Queue) -> int:
    msgs = q.ready_msgs() + _take_delayed(core, q)
    for pool in q.pools():
        pool.clear()
    n = len(msgs) + q.disk
    q.mem_bytes -= sum(len(m.body) for m in msgs)
    core.journal.delete([m.id for m in msgs])
    if q.disk:
        core.journal.purge(q.name, q.cursor, core.first_unstored(q) - 1)
    core.forget_backlog(q)
    return n


def delete(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Remove a queue, its settings, its bindings to topics and all its messages, in
    flight ones included.

    Acks for messages consumers held are answered STALE_DELIVERY. Consumers
    keep their subscriptions and credit: the queue starts again, empty and with
    default settings, as soon as it is used (at once if it has consumers).
    """
    q = _existing(core, args)
    n = _purge(core, q)
    for peer in core.peers.values():
        for mid in [mid for mid, m in peer.held.items() if m.q is q]:
            m = peer.held.pop(mid)
            sub = peer.subs.get(q.name)
            if sub is not None:
                sub.window.settle(1)
                if sub.probe is m:
                    sub.probe = None
            core.untrack(m)
            core.journal.delete([mid])
            n += 1
    del core.queues[q.name]
    core.untouch(q)
    if q.subs:
        fresh = core.queue(q.name)
        fresh.subs = q.subs
        for sub in fresh.subs:
            sub.q = fresh
    core.journal.purge(q.name, 0, core.first_unstored(q) - 1)
    core.journal.settings(q.name, None)
    unbound = core.unbind_all(q.name)  # its bindings to topics go with it
    return {"queue": q.name, "deleted": n, "unbound": unbound}


def redrive(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Move dead letters back to the queue they died in (or ``to``), attempts reset.

    Filters: ``match`` (text in the reason), ``since`` / ``until`` (wall-clock
    seconds of death), ``limit``. Only messages in memory move; ``left_on_disk``
    says how many of the queue's messages still wait on disk. Those are paged in
    after the call (up to the queue's window at a time), so calling again moves
    them; the SDK's ``redrive`` does that until none are left.
    """
    q = _existing(core, args)
    to = args.get("to")
    if to is not None:
        # Back to work: never into a dead-letter queue (only the broker writes there).
        to = check_publishable(_new_name(core, args, "to"))
        if to in core.streams:
            raise InvalidArgument(f"{to!r} is a stream: redrive moves messages to a queue")
    match = args.get("match")
    if match is not None and not isinstance(match, str):
        raise InvalidArgument("match must be a string")
    since, until = args.get("since"), args.get("until")
    for key, v in (("since", since), ("until", until)):
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
            raise InvalidArgument(f"{key} must be wall-clock seconds")
    limit = args.get("limit", 0)
    if type(limit) is not int or not 0 <= limit <= MAX_COUNT:
        raise InvalidArgument(f"limit must be an integer 0..{MAX_COUNT}")
    moved = 0
    full: set[str] = set()
    wall = round(now + core.wall_offset, 3)
    for pool in q.pools():
        keep = []
        for m in pool:
            h = m.headers or {}
            target = to or h.get(ORIGIN)
            ok = (isinstance(target, str) and target and target != q.name
                  and target not in full
                  and (not limit or moved < limit)
                  and (match is None or match in str(h.get(REASON, "")))
                  and (since is None or float(h.get(DEAD_AT, 0)) >= since)
                  and (until is None or float(h.get(DEAD_AT, 0)) <= until))
            if ok and _full(core, str(target)):
                full.add(str(target))  # its max_length holds for redrives too
                ok = False
            if not ok:
                keep.append(m)
                continue
            headers = {k: v for k, v in h.items() if k not in (ORIGIN, REASON, DEAD_AT)}
            m.headers, m.hsize = history.append(
                headers, {"attempt": 0, "outcome": "redriven", "end": wall,
                          "reason": f"from {q.name}"}, core.budget(m))
            m.attempts = 0
            q.mem_bytes -= len(m.body)
            core.move(m, core.queue(str(target)))
            moved += 1
        pool.clear()
        pool.extend(keep)
    if q.disk:
        core.drain_backlog(q)  # page the rest in, consumers or not, for the next call
    return {"queue": q.name, "moved": moved, "left_on_disk": q.disk, "full": sorted(full)}


def _full(core: BrokerCore, name: str) -> bool:
    t = core.queues.get(name)
    if t is None or not t.settings.max_length:
        return False
    return t.ready_count() + t.disk + t.delayed + t.staged >= t.settings.max_length


def peek(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """The first ready messages of a queue, with headers (a dead letter's history)."""
    q = _existing(core, args)
    limit = args.get("limit", 10)
    if type(limit) is not int or not 1 <= limit <= MAX_PEEK:
        raise InvalidArgument(f"limit must be 1..{MAX_PEEK}")
    # The reply is one header part: it must stay within 4 MiB as well as max_frame.
    budget = min(core.cfg.max_frame // 2, core.limits.max_header - 64 * 1024)
    out: list[dict[str, Any]] = []
    for m in q.ready_msgs()[:limit]:
        cost = len(m.body) + m.hsize + 64
        if cost > budget and not out:  # the first is shown even if too big, cut short
            out.append(_cut(m, budget))
            break
        budget -= cost
        if budget < 0:
            break
        out.append({"id": m.id, "attempts": m.attempts, "headers": m.headers or {},
                    "body": m.body})
    return {"queue": q.name, "messages": out, "ready": q.ready_count() + q.disk}


def _cut(m: Msg, budget: int) -> dict[str, Any]:
    """A peeked message too large for the reply: its headers if they fit in half the
    budget, and as much of its body as fits; ``size`` is the whole body's."""
    headers = m.headers or {}
    if m.hsize > budget // 2:
        headers = {"zq-peek": f"{m.hsize} bytes of headers, too large to show"}
    room = max(0, budget - codec.header_size(headers) - 128)
    return {"id": m.id, "attempts": m.attempts, "headers": headers, "body": m.body[:room],
            "truncated": True, "size": len(m.body)}


def sync(core: BrokerCore, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Nothing: answered once everything received before it is stored (a barrier)."""
    return {}


OPERATIONS: dict[str, Callable[[BrokerCore, dict[str, Any], float], dict[str, Any]]] = {
    "declare": declare,
    "info": info,
    "list": list_queues,
    "pause": _pause(True),
    "resume": _pause(False),
    "purge": purge,
    "delete": delete,
    "redrive": redrive,
    "peek": peek,
    "sync": sync,
}
