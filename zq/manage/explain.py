"""MANAGE ``explain``: why a message is where it is, in words a person can act on. No I/O.

Given a message id (unique per broker), it looks where a message can be, cheapest
first, and stops at the first hit: held by a consumer, waiting for a commit or the
HA standby, delayed, ready in memory (a dead letter, in a dead-letter queue), its
kept outcome, on disk. Ready ones cost one pass over the ready deques, allocating
nothing per message. The reply: ``id``, ``state``, for ready ones ``why``, the facts
(times in wall-clock epoch seconds), and ``reason``, a sentence or two for people.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from zq import history
from zq.core.results import FINAL
from zq.errors import InvalidArgument
from zq.protocol import codec

if TYPE_CHECKING:
    from zq.core.api import QueueOps as BrokerCore
    from zq.core.model import Msg, Peer, Queue

Reply = dict[str, Any]
MAX_LISTED = 20  # consumers or queues named in one reply


def explain_op(core: BrokerCore, args: dict[str, Any], now: float) -> Reply:
    """The MANAGE operation: ``args`` is ``{"id": uint}``."""
    mid = args.get("id")
    if type(mid) is not int or not 0 <= mid < 1 << 63:
        raise InvalidArgument("id must be an unsigned integer")
    return explain(core, mid, now)


def explain(core: BrokerCore, mid: int, now: float) -> Reply:
    """Where message ``mid`` is and why, as a JSON-able map (see the module docstring)."""
    if not 1 <= mid < core.next_id:
        given = f"1 to {core.next_id - 1}" if core.next_id > 1 else "none"
        return {"id": mid, "state": "not_found", "never_issued": True, "reason": (
            f"No message {mid} was ever published to this broker (the ids it has given "
            f"so far: {given}). In a cluster each broker numbers its own messages: ask "
            f"the broker of its queue.")}
    for look in (_held, _unstored, _delayed, _ready):
        found = look(core, mid, now)
        if found is not None:
            return {"id": mid, **found}
    return {"id": mid, **_gone(core, mid, now)}


def _wall(core: BrokerCore, t: float) -> float:
    return round(t + core.wall_offset, 3)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _text(v: Any) -> str | None:
    return history.cap(v, history.MAX_REASON) if isinstance(v, str) else None


def _last_failure(m: Msg) -> tuple[str | None, int]:
    """The last failed attempt in ``m``'s history: its reason (or outcome), its number."""
    entries = history.entries(m.headers)
    last = entries[-1] if entries and isinstance(entries[-1], dict) else {}
    n = last.get("attempt")
    return (_text(last.get("reason")) or _text(last.get("outcome")),
            n if type(n) is int else len(entries))


def _failure(m: Msg) -> Reply:
    error = _last_failure(m)[0]
    return {"last_error": error} if error else {}


def _pools(q: Queue) -> Iterator[tuple[deque[Msg], bool]]:
    """Where ``q`` keeps ready messages in memory, each with whether it is the suspects."""
    yield q.suspects, True
    for lane in q.order:
        yield lane.msgs, False
    if q.moving is not None:
        yield q.moving.spare, False


def _held(core: BrokerCore, mid: int, now: float) -> Reply | None:
    for p in core.peers.values():
        m = p.held.get(mid)
        if m is not None:
            return _in_flight(core, m, p, now)
    return None


def _in_flight(core: BrokerCore, m: Msg, p: Peer, now: float) -> Reply:
    name = history.cap(p.name, history.MAX_NAME) or p.identity.hex()
    silent = now - p.last_seen
    beats = math.isfinite(p.liveness_s)
    alive = silent <= p.liveness_s
    d: Reply = {"state": "in_flight", "queue": m.q.name, "attempt": m.attempts,
                "consumer": name, "since": _wall(core, getattr(m, "start", now)),
                "alive": alive, "heartbeats": beats, "silent_s": round(silent, 3),
                "started": p.marks and m.started == m.attempts, **_dead_facts(m)}
    text = f"In flight at consumer {name!r}, attempt {m.attempts}"
    if beats:
        d["liveness_s"] = p.liveness_s
    if beats and not alive:
        text += (f"; {name} has been silent for {silent:.1f} s, past its liveness of "
                 f"{p.liveness_s:.1f} s, so the broker drops its session and takes the "
                 f"message back at its next heartbeat check.")
    elif beats:
        text += (f", held while {name} heartbeats (last heard {silent:.1f} s ago; "
                 f"{p.liveness_s:.1f} s of silence ends the lease).")
    else:
        text += f", held as long as {name}'s session lasts (it is not held by heartbeats)."
    if m.deadline:
        d["deadline"] = _wall(core, m.deadline)
        text += (f" Its time limit runs out at {_clock(d['deadline'])} (in "
                 f"{max(0.0, m.deadline - now):.1f} s); then it is retried or dead-lettered.")
    else:
        text += " It has no time limit: only an ack, nack or release ends the attempt."
    return {**d, "reason": text}


def _unstored(core: BrokerCore, mid: int, now: float) -> Reply | None:
    j = core.journal
    for state, pubs, note in (
            ("replicating", j.awaiting, "stored here, waiting for the HA standby to "
                                        "acknowledge it"),
            ("committing", j.inflight, "waiting for the commit under way"),
            ("committing", j.pending, "waiting for the next commit")):
        for p in pubs:
            if p.bodies and p.first <= mid < p.first + len(p.bodies):
                return {"state": state, "queue": p.q.name, "attempt": 0, "reason": (
                    f"Published to queue {p.q.name!r} and {note}: it is queued, and its "
                    f"publish confirmed, once that is done.")}
    return None


def _delayed(core: BrokerCore, mid: int, now: float) -> Reply | None:
    if not any(q.delayed for q in core.queues.values()):
        return None
    for due, i, m in core.delayed_entries():
        if i == mid:
            if core.queues.get(m.q.name) is not m.q:
                return None  # its queue was deleted: the message with it
            return _delayed_reply(core, m, due, now)
    return None


def _delayed_reply(core: BrokerCore, m: Msg, due: float, now: float) -> Reply:
    q = m.q.name
    wall = _wall(core, due)
    d: Reply = {"state": "delayed", "queue": q, "attempt": m.attempts, "due": wall,
                **_failure(m)}
    when = f"{_clock(wall)} (in {max(0.0, due - now):.1f} s)"
    if m.attempts and "last_error" in d:
        text = (f"Delayed until {when}: attempt {m.attempts} failed ({d['last_error']}) "
                f"and queue {q!r} retries it after a backoff.")
    else:
        text = f"Delayed until {when}, as published; then it joins the ready ones of queue {q!r}."
    return {**d, "reason": text}


def _ready(core: BrokerCore, mid: int, now: float) -> Reply | None:
    for q in core.queues.values():
        for pool, suspect in _pools(q):
            for ahead, m in enumerate(pool):
                if m.id == mid:
                    if history.ORIGIN in (m.headers or {}):
                        return _dead_letter(m)
                    return _ready_reply(core, m, suspect, ahead, now)
    return None


def _ready_reply(core: BrokerCore, m: Msg, suspect: bool, ahead: int, now: float) -> Reply:
    q = m.q
    if not suspect:
        ahead += len(q.suspects) + sum(len(ln.msgs) for ln in q.order
                                       if ln.priority > m.lane.priority)
    d: Reply = {"state": "ready", "queue": q.name, "attempt": m.attempts, "ahead": ahead,
                **_failure(m)}
    if m.t:
        d["published_at"] = _wall(core, m.t)
    if m.lane.tenant:
        d["tenant"] = m.lane.tenant
    if m.lane.priority:
        d["priority"] = m.lane.priority
    if suspect:
        d["suspect"] = True
    stop = _stopped(core, m, now) or _waiting(m, suspect)
    if stop is None:
        return {**d, "why": "dispatching", "reason": (
            f"Ready in queue {q.name!r} and a consumer has credit: it goes out on the "
            f"broker's next delivery pass ({ahead} ahead of it).")}
    why, facts, text = stop
    return {**d, "why": why, **facts, "reason": f"Ready in queue {q.name!r}, but {text}."}


Why = tuple[str, Reply, str]


def _stopped(core: BrokerCore, m: Msg, now: float) -> Why | None:
    """What keeps ``m`` from going out whoever consumes: a move, its size, expiry, a pause."""
    q = m.q
    mv = q.moving
    if mv is not None and mv.phase != "prepare":
        return ("moving", {"to": mv.to, "endpoint": mv.endpoint},
                f"the queue is being moved to broker {mv.to} ({mv.endpoint}): its messages "
                f"are shipped there, not delivered here; ask that broker from now on")
    size = codec.ENVELOPE + len(q.name_b) + codec.PER_MESSAGE + m.hsize + len(m.body)
    if size > core.cfg.max_frame or codec.ENVELOPE + codec.PER_MESSAGE + m.hsize \
            > core.limits.max_header:
        return ("too_large", {"size": size, "max_frame": core.cfg.max_frame},
                f"it is too large to deliver ({len(m.body)} body + {m.hsize} header bytes "
                f"over max_frame = {core.cfg.max_frame}): the next pass dead-letters it, or "
                f"parks it until a restart with a larger --max-frame")
    if m.exp and m.exp <= now:
        return ("expired", {"expires": _wall(core, m.exp)},
                "its time to live ran out: the next sweep dead-letters it as expired")
    if q.paused:
        return ("paused", {}, f"the queue is paused: nothing is delivered from it until "
                              f"`zq queue resume {q.name}`")
    return None


def _waiting(m: Msg, suspect: bool) -> Why | None:
    """What ``m`` waits for among the queue's consumers: any, credit, its tenant's cap,
    the suspects ahead of it."""
    q = m.q
    if not q.subs:
        return ("no_consumers", {}, "no consumer is subscribed to the queue: it goes out "
                                    "when one grants credit")
    full = [s for s in q.subs if s.window.available <= 0 or s.probe is not None]
    if len(full) == len(q.subs):
        listed = [{"consumer": history.cap(s.peer.name, history.MAX_NAME),
                   "in_flight": s.window.in_flight, "available": max(0, s.window.available),
                   "probe": s.probe is not None} for s in full[:MAX_LISTED]]
        names = ", ".join(f"{c['consumer']!r} ({c['in_flight']} in flight)" for c in listed)
        more = f" and {len(full) - MAX_LISTED} more" if len(full) > MAX_LISTED else ""
        return ("consumers_at_credit_limit", {"consumers": listed, "consumers_total": len(full)},
                f"every consumer is at its credit limit: {names}{more}; it goes out when "
                f"one of them settles a message or grants more credit")
    acct = m.lane.acct
    if not suspect and acct.cap and acct.in_flight >= acct.cap:
        return ("tenant_at_cap", {"tenant": acct.name, "cap": acct.cap,
                                  "in_flight": acct.in_flight},
                f"tenant {acct.name!r} is at its in-flight cap ({acct.in_flight} of "
                f"{acct.cap}): it goes out when one of the tenant's messages is settled "
                f"(or raise it: zq queue declare {q.name} --cap {acct.name}=N)")
    if not suspect and q.suspects:
        return ("behind_suspects", {"suspects": len(q.suspects)},
                f"{len(q.suspects)} message(s) held by a consumer that vanished go out "
                f"first, one at a time, so that a crash names the one that caused it")
    return None


def _dead_facts(m: Msg) -> Reply:
    """A dead letter's origin, reason and time, from its headers ({} for others)."""
    h = m.headers or {}
    origin, at = _text(h.get(history.ORIGIN)), h.get(history.DEAD_AT)
    if origin is None:
        return {}
    return {"origin": origin, "dead_reason": _text(h.get(history.REASON)) or "",
            **({"dead_at": at} if isinstance(at, int | float) else {})}


def _dead_letter(m: Msg) -> Reply:
    facts = _dead_facts(m)
    error, attempts = _last_failure(m)
    if error:
        facts["last_error"] = error
    dlq, why = m.q.name, facts["dead_reason"] or error or "?"
    if attempts and "attempt(s) failed" not in why:  # (the words for max_attempts say it)
        why = f"after {attempts} attempt(s), {why}"
    return {"state": "dead", "queue": dlq, "attempts": attempts, **facts, "reason": (
        f"Dead-lettered from queue {facts['origin']!r}: {why}. It waits in {dlq!r}; "
        f"`zq dlq redrive {dlq}` sends it back.")}


def _gone(core: BrokerCore, mid: int, now: float) -> Reply:
    o = core.results.get(mid, now)
    if o is not None and o.state in FINAL:
        return _outcome(o.state, o.queue, o.data)
    spilled = [q for q in core.queues.values()
               if q.disk and mid > q.cursor and mid not in q.moved_in]
    if spilled:
        return _on_disk(spilled)
    return {"state": "not_found", "never_issued": False, "reason": (
        f"Message {mid} is not on this broker any more: it was acked, expired or died "
        f"without a dead-letter queue, or was purged or deleted with its queue (a queue "
        f"keeps outcomes only with a result_ttl).")}


def _outcome(state: str, queue: str, data: dict[str, Any]) -> Reply:
    attempt = data.get("attempt")
    if state == "succeeded":
        worker = _text(data.get("worker")) or "?"
        return {"state": "not_found", "never_issued": False, "outcome": "succeeded",
                "queue": queue, "attempt": attempt, "consumer": worker, "reason": (
                    f"It succeeded: acked by {worker!r} at attempt {attempt} in queue "
                    f"{queue!r}; only its outcome is kept (the queue's result_ttl).")}
    why = _text(data.get("reason")) or ""
    return {"state": "dead", "queue": queue, "attempts": attempt, "dead_reason": why,
            "reason": f"Dead in queue {queue!r} after {attempt} attempt(s): {why}. Only its "
                      f"outcome is kept (no dead-letter queue, or its dead letter left it)."}


def _on_disk(spilled: list[Queue]) -> Reply:
    if len(spilled) == 1:
        q = spilled[0]
        where: Reply = {"queue": q.name, "ahead_at_least": q.ready_count()}
        text = (f"queue {q.name!r} keeps {q.disk} message(s) past its in-memory window on "
                f"disk, ids above {q.cursor}, behind at least {q.ready_count()} ready in "
                f"memory; it is paged in as the queue drains")
    else:
        names = sorted(q.name for q in spilled)[:MAX_LISTED]
        where = {"queues": names}
        text = (f"queues {', '.join(map(repr, names))} keep messages with ids like it past "
                f"their in-memory windows on disk; it is paged in as its queue drains")
    return {"state": "ready", "why": "on_disk", **where, "reason": (
        f"Not in memory, so it is most likely stored on disk: {text}. (If it was acked, "
        f"expired or deleted already, it is gone.)")}
