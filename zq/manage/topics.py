"""Topic operations (MANAGE): bind, unbind, topics, topic_set (PROTOCOL.md section 20).

A binding says that a queue gets a copy of every publish to a topic whose key matches
its pattern (none: every key). Binding makes the topic, and the queue if it does not
exist; unbinding a topic's last binding removes the topic unless a setting was given
to it. Each change is stored with the batch it is staged in: the reply means stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zq.core.topics import MAX_BINDINGS, MAX_TOPICS, UNROUTABLE, Binding, Topic
from zq.errors import InvalidArgument, UnknownQueue
from zq.manage.queues import _name
from zq.protocol.names import check_publishable, check_queue_name

if TYPE_CHECKING:
    from zq.core.api import QueueOps as Core

MAX_LISTED = 1_000


def _pattern(args: dict[str, Any]) -> str | None:
    p = args.get("pattern")
    if p is None:
        return None
    try:
        return Binding("-", p).text
    except ValueError as exc:
        raise InvalidArgument(f"pattern: {exc}") from None


def _topic(core: Core, args: dict[str, Any], create: bool) -> Topic:
    name = _name(args, "topic")
    t = core.topics.get(name)
    if t is not None:
        return t
    if not create:
        raise UnknownQueue(f"no topic named {name!r}", queue=name)
    check_queue_name(name)
    if core.membership is not None:  # a topic lives on the broker its name is placed on
        moved = core.membership.refuse_new(name, None)
        if moved is not None:
            raise moved
    if len(core.topics) >= MAX_TOPICS:
        raise InvalidArgument(f"this broker holds {MAX_TOPICS} topics already")
    t = core.topics[name] = Topic(name)
    return t


def _together(core: Core, t: Topic, queue: str) -> None:
    """In a cluster, a topic's queues live on its broker: a queue placed elsewhere (by
    the cluster file) cannot be bound to it."""
    if core.membership is None or queue in core.queues:
        return
    elsewhere = core.membership.refuse_new(queue, None)
    if elsewhere is not None:
        raise InvalidArgument(
            f"queue {queue!r} is placed on broker {elsewhere.attrs.get('info', {}).get('broker')}"
            f" and topic {t.name!r} on this one: a topic and the queues bound to it live on "
            f"one broker; pin a prefix that covers both to one broker in the cluster file "
            f"(pins), or bind a queue placed here", queue=queue)


def bind(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Bind ``queue`` to ``topic`` for keys matching ``pattern`` (none: every key)."""
    queue = check_publishable(_name(args))  # a dead-letter queue takes no publishes
    if queue in core.streams:
        raise InvalidArgument(f"{queue!r} is a stream: a topic's copies go to queues only "
                              f"(for now)", queue=queue)
    pattern = _pattern(args)
    t = _topic(core, args, create=True)
    created = t.find(queue, pattern) is None
    if created:
        if len(t.bindings) >= MAX_BINDINGS:
            raise InvalidArgument(f"topic {t.name!r} has {MAX_BINDINGS} bindings already")
        _together(core, t, queue)
        t.bindings.append(Binding(queue, pattern))
        t.cache.clear()
        core.queue(queue)  # made now: it shows, and takes copies from the first publish
        core.stage_topic(t)
    return {"topic": t.name, "queue": queue, "pattern": pattern, "created": created}


def unbind(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Remove the binding of ``queue`` with ``pattern``; the queue and its messages stay."""
    queue = _name(args)
    pattern = _pattern(args)
    t = _topic(core, args, create=False)
    b = t.find(queue, pattern)
    if b is not None:
        t.bindings.remove(b)
        t.cache.clear()
        core.stage_topic(t)
        if not t.bindings and t.unroutable == "refuse":
            del core.topics[t.name]
    return {"topic": t.name, "queue": queue, "pattern": pattern, "removed": b is not None}


def topic_set(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Set what a publish matching no binding gets: ``unroutable`` refuse or drop."""
    rule = args.get("unroutable")
    if rule not in UNROUTABLE:
        raise InvalidArgument(f"unroutable must be one of {', '.join(UNROUTABLE)}, "
                              f"got {rule!r:.40}")
    t = _topic(core, args, create=True)
    t.unroutable = rule
    core.stage_topic(t)
    if not t.bindings and rule == "refuse":
        del core.topics[t.name]
    return t.stats()


def topics(core: Core, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Every topic (the first MAX_LISTED by name), its bindings and counters."""
    names = sorted(core.topics)
    return {"topics": [core.topics[n].stats() for n in names[:MAX_LISTED]],
            "total": len(names)}


OPERATIONS = {"bind": bind, "unbind": unbind, "topic_set": topic_set, "topics": topics}
