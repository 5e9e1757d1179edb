"""Stream operations (MANAGE): declare, delete, list, and consumer groups: join, reset,
delete (PROTOCOL.md section 21; the core's side is zq.core.streams).

Each change is stored with the batch it is staged in: the reply means stored. A
group is made by the first session that joins it, at the ``start`` it names; a group
that exists goes on from its committed offset whatever ``start`` says (``reset``
moves it). Reset and delete need a group nobody reads: no consumer, nothing held.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from zq.core.streams import EVERYTHING, MAX_GROUPS, MAX_STREAMS, Group, Start, Stream
from zq.errors import InvalidArgument, UnknownQueue
from zq.manage.queues import _name
from zq.protocol.names import check_publishable, check_queue_name
from zq.uplink.settings import forwarded

if TYPE_CHECKING:
    from zq.core.default import BrokerCore as Core

MAX_LISTED = 1_000
WORDS = ("first", "last", "next")


def parse_start(value: Any) -> Start:
    """``start``: "first", "last", "next", an offset (int, or {"offset": n}) or a time
    ({"time": unix seconds})."""
    if value is None:
        return ("next",)
    if isinstance(value, str) and value in WORDS:
        return (value,)
    if isinstance(value, dict) and len(value) == 1:
        (kind, v), = value.items()
        if kind == "offset":
            value = v
        elif kind == "time" and type(v) in (int, float) and math.isfinite(v) and v >= 0:
            return ("time", float(v))
    if type(value) is int and 0 < value < EVERYTHING:
        return ("offset", value)
    raise InvalidArgument(f"start must be 'first', 'last', 'next', an offset (a positive "
                          f"int) or {{'time': unix seconds}}, got {value!r:.80}")


def _stream(core: Core, args: dict[str, Any]) -> Stream:
    name = _name(args, "stream")
    s = core.streams.get(name)
    if s is None:
        raise UnknownQueue(f"no stream named {name!r} (zq stream declare)", queue=name)
    return s


def _group(core: Core, args: dict[str, Any]) -> tuple[Stream, Group]:
    s = _stream(core, args)
    name = _name(args, "group")
    g = s.groups.get(name)
    if g is None:
        raise UnknownQueue(f"stream {s.name!r} has no group named {name!r}", queue=s.name)
    return s, g


def _limit(args: dict[str, Any], key: str, kind: type) -> Any:
    v = args.get(key, 0)
    if v is None:
        v = 0
    if type(v) not in ((int, float) if kind is float else (int,)) or not math.isfinite(v) \
            or v < 0:
        raise InvalidArgument(f"{key} must be a number >= 0 (0: no limit), got {v!r:.40}")
    return kind(v)


def _check_new(core: Core, name: str) -> None:
    """Refuse a new stream where it cannot be one."""
    if not core.journal.durable:
        raise InvalidArgument("streams need a durable store (this broker keeps nothing)")
    if core.membership is not None and name not in core.queues:
        moved = core.membership.refuse_new(name, None)  # a stream lives where it is placed
        if moved is not None:
            raise moved
    if core.forwards and forwarded(core.forwards, name):
        raise InvalidArgument(f"{name!r} is forwarded to the centre by this broker's "
                              f"uplink: declare the stream there")
    if len(core.streams) >= MAX_STREAMS:
        raise InvalidArgument(f"this broker holds {MAX_STREAMS} streams already")
    q = core.queues.get(name)
    if q is not None and (q.ready_count() or q.disk or q.delayed or q.staged or q.subs
                          or core.in_flight().get(name, 0) or q.moving or q.incoming):
        raise InvalidArgument(f"a queue named {name!r} exists and is in use: a stream "
                              f"needs a name of its own")
    if any(b.queue == name for t in core.topics.values() for b in t.bindings):
        raise InvalidArgument(f"queue {name!r} is bound to a topic: a stream needs a name "
                              f"of its own")


def declare(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Declare stream ``stream`` (or change its retention): ``max_age`` seconds and
    ``max_bytes`` of bodies, 0 for no limit; a limit not given stays as it is."""
    name = check_publishable(_name(args, "stream"))
    limits = {key: _limit(args, key, kind) for key, kind in (("max_age", float),
                                                              ("max_bytes", int)) if key in args}
    s = core.streams.get(name)
    created = s is None
    if s is None:
        _check_new(core, name)
        s = Stream(name)
        s.last = s.floor = core.next_id - 1
        if core.queues.pop(name, None) is not None:
            core.journal.settings(name, None)  # the idle queue of that name goes
        core.streams[name] = s
        core.queues[name] = s.q
    s.max_age = limits.get("max_age", s.max_age)  # (a limit not given stays as it is)
    s.max_bytes = limits.get("max_bytes", s.max_bytes)
    core.stage_stream(s)
    return {**s.stats(), "created": created}


def _idle(core: Core, g: Group) -> None:
    """Refuse to change a group that is being read."""
    held = sum(1 for p in core.peers.values() for m in p.held.values() if m.q is g.q)
    if g.q.subs or held:
        raise InvalidArgument(f"group {g.name!r} of stream {g.stream.name!r} is being read "
                              f"({len(g.q.subs)} consumer(s), {held} unacked): stop its "
                              f"consumers first")


def delete(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Delete a stream, its entries and its groups (nobody may be reading it)."""
    s = _stream(core, args)
    for g in s.groups.values():
        _idle(core, g)
    for g in list(s.groups.values()):
        _drop_group(core, s, g)
    core.journal.purge(s.key, 0, core.next_id - 1)  # (not what a new one appends later)
    core.journal.settings(s.key, None)
    del core.streams[s.name]
    if core.queues.get(s.name) is s.q:
        del core.queues[s.name]
    return {"stream": s.name, "deleted": s.count}


def _drop_group(core: Core, s: Stream, g: Group) -> None:
    core.clear_group(g)
    g.gone = True
    core.forget_group(g)
    del s.groups[g.name]
    core.journal.settings(g.key, None)


def join(core: Core, args: dict[str, Any], now: float, peer: Any) -> dict[str, Any]:
    """This session reads ``stream`` in ``group`` (made at ``start`` if new); a CREDIT
    on the stream's name then delivers the group's entries."""
    s = _stream(core, args)
    name = check_queue_name(_name(args, "group"))
    start = parse_start(args.get("start"))
    g = s.groups.get(name)
    created = g is None
    if g is None:
        if len(s.groups) >= MAX_GROUPS:
            raise InvalidArgument(f"stream {s.name!r} has {MAX_GROUPS} groups already")
        g = s.groups[name] = Group(s, name)
        core.place_group(g, start)
    if peer is not None:
        sub = peer.subs.get(s.name)
        if sub is not None and sub.q is not g.q:  # it read the name otherwise before
            old = sub.q.group
            if sub.active or sub.window.in_flight > sub.window.owed:  # (acked: not held)
                what = f"in group {old.name!r}" if old is not None else "as a queue"
                raise InvalidArgument(f"this session reads {s.name!r} {what}: one group "
                                      f"per stream per session")
            del peer.subs[s.name]  # cancelled, nothing held: its next CREDIT is the group's
        peer.groups[s.name] = g
    return {**g.stats(), "stream": s.name, "created": created}


def reset(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Move a group (read by nobody) to ``start``: it reads from there on."""
    s, g = _group(core, args)
    start = parse_start(args.get("start"))
    _idle(core, g)
    core.clear_group(g)
    core.place_group(g, start)
    return {**g.stats(), "stream": s.name}


def group_delete(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    s, g = _group(core, args)
    _idle(core, g)
    _drop_group(core, s, g)
    return {"stream": s.name, "group": g.name, "deleted": True}


def streams(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Every stream (the first MAX_LISTED by name), or the one named, and its groups."""
    if args.get("stream") is not None:
        return {"streams": [_stream(core, args).stats()], "total": 1}
    names = sorted(core.streams)
    return {"streams": [core.streams[n].stats() for n in names[:MAX_LISTED]],
            "total": len(names)}


OPERATIONS = {"stream_declare": declare, "stream_delete": delete, "streams": streams,
              "stream_group_reset": reset, "stream_group_delete": group_delete}
PEER_OPERATIONS = {"stream_join": join}
