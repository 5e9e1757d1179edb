"""MANAGE operations for tasks and schedules: complete, status, wait, schedule_*.

Like the queue operations in ``zq/admin.py`` they act on the core with no I/O;
their replies are sent once what they changed is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zq.core.results import FINAL, Waiter
from zq.errors import InvalidArgument, InvalidQueueName, StaleDelivery, UnknownDelivery
from zq.history import HISTORY, ORIGIN, REASON
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.names import check_publishable
from zq.schedules import MAX_NAME, Schedule

if TYPE_CHECKING:
    from zq.core.api import QueueOps as BrokerCore
    from zq.core.model import Msg, Peer, Queue

MAX_WAIT_MS = 60_000
MAX_ERROR_TEXT = 64 * 1024  # bytes of an error's message or traceback kept


def _uint(args: dict[str, Any], key: str, default: int | None = None) -> int:
    v = args.get(key, default)
    if type(v) is not int or not 0 <= v < 1 << 63:
        raise InvalidArgument(f"{key} must be an unsigned integer")
    return v


def _queue(args: dict[str, Any]) -> str:
    name = args.get("queue")
    if not isinstance(name, str) or not name or len(name.encode()) > codec.MAX_QUEUE_NAME:
        raise InvalidQueueName(f"queue must be a queue name of 1..{codec.MAX_QUEUE_NAME} "
                               f"bytes, got {name!r:.80}")
    return name


def _error(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise InvalidArgument("error must be a map of type, message and traceback")
    out: dict[str, str] = {}
    for key in ("type", "message", "traceback"):
        text = v.get(key, "")
        if not isinstance(text, str):
            raise InvalidArgument(f"error {key} must be a string")
        out[key] = text[:MAX_ERROR_TEXT]
    return out


# ------------------------------------------------------------------ complete


def complete(core: BrokerCore, args: dict[str, Any], now: float, peer: Peer
             ) -> dict[str, Any]:
    """Settle one delivery with its outcome: ACK (ok) or NACK (not ok), same fencing."""
    queue, mid, attempt = _queue(args), _uint(args, "id"), _uint(args, "attempt")
    ok = args.get("ok")
    if type(ok) is not bool:
        raise InvalidArgument("ok must be a boolean")
    m = peer.held.get(mid)
    if m is None or m.attempts != attempt or m.q.name != queue:
        if m is None and mid < core.next_id and attempt >= 1:
            core.stale_settled(peer, mid, attempt)
        if m is not None or (mid < core.next_id and attempt >= 1):
            raise StaleDelivery(f"message {mid} attempt {attempt} is no longer current",
                                id=mid)
        raise UnknownDelivery(f"message {mid} was never delivered", id=mid)
    keeps = m.q.settings.result_ttl > 0
    if ok:
        data = {"result": args.get("result"), "attempt": attempt, "worker": peer.name}
        core.on_ack(peer, f.Ack([mid], [attempt]), data)
        return {"state": "succeeded"}
    error = _error(args.get("error", {}))
    retry = args.get("retry", True)
    if type(retry) is not bool:
        raise InvalidArgument("retry must be a boolean")
    delay_ms = _uint(args, "delay_ms", 0)
    if keeps:
        core.outcome(m, "failed", {"error": error, "attempt": attempt, "worker": peer.name}, now)
    dead_before = core.counters["dead"]
    reason = f"{error['type']}: {error['message']}" if error["type"] else error["message"]
    core.on_nack(peer, f.Nack([mid], [attempt], retry, delay_ms, reason[:1000]), now)
    return {"state": "dead" if core.counters["dead"] > dead_before else "failed"}


# ------------------------------------------------------------------ status, wait


def _history(m: Msg) -> list[Any]:
    return list((m.headers or {}).get(HISTORY) or [])


def status_of(core: BrokerCore, queue: str, mid: int, now: float) -> dict[str, Any]:
    """What is known of message ``mid`` published to ``queue``: running at a consumer,
    final (its outcome), waiting in its queue (ready, delayed, failed before a retry,
    on disk), dead in the dead-letter queue, else what its outcome says, else unknown."""
    base: dict[str, Any] = {"id": mid, "queue": queue}
    running = _running(core, queue, mid)
    if running is not None:
        return {**base, **running}
    o = core.results.get(mid, now)
    if o is not None and o.queue != queue:
        o = None  # an outcome of another queue's message: not this one
    if o is not None and o.state in FINAL:
        return {**base, "state": o.state, **o.data}
    q = core.queues.get(queue)
    found = _in_queue(core, q, mid) if q is not None else None
    if found is not None:
        if o is not None and o.state == "failed" and found["state"] != "dead":
            return {**base, **o.data, **found, "state": "failed"}
        return {**base, **found}
    if o is not None:
        return {**base, "state": o.state, **o.data}
    return {**base, "state": "unknown"}


def _running(core: BrokerCore, queue: str, mid: int) -> dict[str, Any] | None:
    for p in core.peers.values():
        m = p.held.get(mid)
        if m is not None and m.q.name == queue:
            return {"state": "running", "attempt": m.attempts, "worker": p.name,
                    "history": _history(m)}
    return None


def _in_queue(core: BrokerCore, q: Queue, mid: int) -> dict[str, Any] | None:
    """``mid`` where ``q`` keeps it: ready, delayed, on disk, or dead in its DLQ."""
    for pool in q.pools():
        for m in pool:
            if m.id == mid:
                return {"state": "ready", "attempt": m.attempts, "history": _history(m)}
    for due, _, m in core.delayed_entries():
        if m.id == mid and m.q is q:
            return {"state": "delayed", "attempt": m.attempts, "history": _history(m),
                    "due": round(due + core.wall_offset, 3)}
    if q.disk and mid > q.cursor:
        return {"state": "ready", "attempt": 0, "history": [], "on_disk": True}
    dlq = core.queues.get(q.dlq) if q.dlq else None
    for m in dlq.ready_msgs() if dlq is not None else []:
        if m.id == mid and (m.headers or {}).get(ORIGIN) == q.name:
            return {"state": "dead", "reason": (m.headers or {}).get(REASON),
                    "history": _history(m), "attempt": len(_history(m))}
    return None


def status(core: BrokerCore, args: dict[str, Any], now: float, peer: Peer
           ) -> dict[str, Any]:
    return status_of(core, _queue(args), _uint(args, "id"), now)


def wait(core: BrokerCore, args: dict[str, Any], now: float, peer: Peer,
         req: int = 0) -> dict[str, Any] | None:
    """The status once it is final (succeeded or dead) or ``timeout_ms`` has passed."""
    queue, mid = _queue(args), _uint(args, "id")
    timeout = _uint(args, "timeout_ms", 0)
    if timeout > MAX_WAIT_MS:
        raise InvalidArgument(f"timeout_ms must be at most {MAX_WAIT_MS}")
    st = status_of(core, queue, mid, now)
    if st["state"] in FINAL or st["state"] == "unknown" or not timeout:
        return st
    core.results.wait(mid, Waiter(peer.identity, req, queue, now + timeout / 1000.0))
    return None  # answered later, by the core


# ------------------------------------------------------------------ schedules


def schedule_add(core: BrokerCore, args: dict[str, Any], now: float, peer: Peer
                 ) -> dict[str, Any]:
    name = args.get("name")
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME:
        raise InvalidArgument(f"name must be a string of 1..{MAX_NAME} bytes")
    body = args.get("body", b"")
    if not isinstance(body, bytes) or len(body) > core.cfg.max_frame // 2:
        raise InvalidArgument("body must be bytes within half of max_frame")
    headers = args.get("headers")
    if headers is not None and (not isinstance(headers, dict)
                                or not all(isinstance(k, str) for k in headers)):
        raise InvalidArgument("headers must be a map with string keys")
    options = args.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidArgument("options must be a map")
    allowed = {"priority", "ttl_ms", "time_limit_ms", "max_attempts", "tenant"}
    unknown = set(options) - allowed
    if unknown:
        raise InvalidArgument(f"schedule options may be {', '.join(sorted(allowed))}; "
                              f"got {', '.join(sorted(map(str, unknown)))}")
    try:
        opts = codec.publish_options(options, 1, 0).to_map() if options else {}
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message.replace("PUBLISH: ", "schedule ")) from None
    wall = now + core.wall_offset
    every = args.get("every_ms") or 0
    cron = args.get("cron") or ""
    if not isinstance(cron, str):
        raise InvalidArgument("cron must be a string")
    s = Schedule(name, check_publishable(_queue(args)), body, headers, every, cron,
                 args.get("misfire", "once"), opts, anchor=wall)
    s.next_due = s.after(wall)
    core.schedules[name] = s
    core.stage_schedule(s)
    return {"name": name, "next_due": round(s.next_due, 3)}


def schedule_ls(core: BrokerCore, args: dict[str, Any], now: float, peer: Peer
                ) -> dict[str, Any]:
    return {"schedules": [s.to_map() for s in sorted(core.schedules.values(),
                                                     key=lambda s: s.name)]}


def schedule_rm(core: BrokerCore, args: dict[str, Any], now: float, peer: Peer
                ) -> dict[str, Any]:
    name = args.get("name")
    if not isinstance(name, str):
        raise InvalidArgument("name must be a string")
    removed = core.schedules.pop(name, None) is not None
    if removed:
        core.journal.schedule(name, None)
    return {"removed": removed}


PEER_OPERATIONS = {
    "complete": complete,
    "status": status,
    "schedule_add": schedule_add,
    "schedule_ls": schedule_ls,
    "schedule_rm": schedule_rm,
}
