"""Moving a queue to another broker of the cluster (PROTOCOL.md section 17.5). No I/O.

Both ends of a move live here. The source records the move with the queue's
settings ("prepare"), and once the target has made the queue ("ship") it answers
MOVED to new publishes and credit, tells routers where the queue went, and hands
its ready and delayed messages to the broker's shipper (``zq.shipping``) in
batches; it deletes only what the target stored. Messages held by consumers
finish here: an ack deletes them, anything else brings them back to be shipped.
When none is left, the queue's row becomes a record of where it went ("done").
The target stores each batch under the move's id, message by message, so a batch
sent again after a crash of either side stores nothing twice; it lists the queue
in its catalog once the source says the move is done.
"""

from __future__ import annotations

from typing import Any

from zq.core.backlog import MOVE_KEY
from zq.core.journal import PendingPublish
from zq.core.model import MoveIn, MoveOut, Msg, Queue
from zq.core.sessions import Sessions
from zq.core.state import _packb, unpack_opts
from zq.errors import InvalidArgument, QueueConflict, UnknownQueue
from zq.persistence.base import WAITING
from zq.protocol import frames as f
from zq.settings import check_policies, from_map

MOVE_KEEP = 7 * 86400.0  # seconds a target remembers a moved message's source id


class Moves(Sessions):
    """Queues moved out of and into this broker."""

    # ------------------------------------------------------------ source side

    def start_move(self, name: str, to: str, now: float) -> dict[str, Any]:
        """MANAGE ``move``: record that ``name`` goes to broker ``to`` (stored with the
        queue's settings, so a restart resumes it); the shipper does the rest."""
        m = self.membership
        if m is None:
            raise InvalidArgument("moving a queue needs a cluster (zq broker --cluster)")
        q = self.queues.get(name)
        if q is None:
            done = self.moved_out.get(name)
            if done is not None and done.to == to:
                return self.move_status(name)
            raise UnknownQueue(f"no queue named {name!r} on broker {m.node}", queue=name)
        entry = m.cfg.broker(to)
        if to == m.node:
            raise InvalidArgument(f"queue {name!r} is on broker {to} already")
        if entry is None:
            raise InvalidArgument(f"no broker {to!r} in cluster file version {m.cfg.version} "
                                  f"(brokers: {', '.join(m.cfg.ids)})")
        if q.incoming is not None:
            raise InvalidArgument(f"queue {name!r} is still being moved here from "
                                  f"{q.incoming.source}: move it once that is done")
        if q.moving is not None:
            if q.moving.to != to:
                raise InvalidArgument(f"queue {name!r} is being moved to {q.moving.to}")
            return self.move_status(name)
        origins = sorted(o.name for o in self.queues.values() if o.dlq == name and o is not q)
        if origins:
            raise InvalidArgument(f"queue {name!r} is the dead-letter queue of "
                                  f"{', '.join(origins[:5])} on this broker: move those")
        q.moving = MoveOut(name, to, entry.endpoint, f"{self.broker_id}.{self.next_id}",
                           "prepare", round(now + self.wall_offset, 3))
        self.stage_settings(q)
        self.moves_started = True
        return self.move_status(name)

    def move_status(self, name: str) -> dict[str, Any]:
        """Where a move of ``name`` stands (``left``: messages still on this broker)."""
        q = self.queues.get(name)
        mv = q.moving if q is not None else self.moved_out.get(name)
        if mv is None:
            raise InvalidArgument(f"queue {name!r} is not being moved from this broker")
        out = {"queue": name, **mv.to_map(), "shipped": mv.shipped, "error": mv.error,
               "left": self._left(q) if q is not None else 0}
        return out

    def outgoing_moves(self) -> list[MoveOut]:
        """Moves that need the shipper: under way, or done but not yet told to the target."""
        out = [q.moving for q in self.queues.values() if q.moving is not None]
        return out + [mv for mv in self.moved_out.values() if not mv.announced]

    def move_prepared(self, name: str) -> None:
        """The target has made the queue: from now on it takes new publishes and credit.
        Consumers here are told MOVED (what they hold still settles here)."""
        q = self.queues[name]
        mv = q.moving
        assert mv is not None
        if mv.phase != "prepare":
            return
        mv.phase = "ship"
        self.stage_settings(q)
        self.catalog_changes.append(("moved", name))
        moved = self.moved_away(name, name)
        assert moved is not None
        for sub in list(q.subs):
            sub.window.void()
            sub.active = False
            q.subs.remove(sub)
            self._fail(sub.peer.identity, moved, f.CREDIT, name)

    def move_keys(self, name: str) -> list[list[Any]]:
        """Every dedup key of ``name`` within its window, ``[key, id, until (wall)]``;
        from now on each also goes with its message (once more after a restart)."""
        q = self.queues[name]
        mv = q.moving
        assert mv is not None
        mv.keys = {}
        for (queue, key), (mid, until) in self._dedup.items():
            if queue == name:
                mv.keys.setdefault(mid, []).append((key, until + self.wall_offset))
        return [[k, mid, until] for mid, keys in mv.keys.items() for k, until in keys]

    def move_take(self, name: str, max_n: int, max_bytes: int) -> list[Msg]:
        """Up to ``max_n`` ready or delayed messages of ``name`` (at least one, at most
        ``max_bytes`` of bodies and headers otherwise), taken out of the queue to ship.
        With none in memory and some on disk, the backlog is paged in for the next call."""
        q = self.queues[name]
        mv = q.moving
        assert mv is not None
        if q.delayed:
            mv.due.update((m.id, due) for due, _, m in self.delayed_entries() if m.q is q)
            mv.spare.extend(self.remove_delayed(q))
        out: list[Msg] = []
        size = 0
        for pool in (*q.pools(), mv.spare):
            while pool and len(out) < max_n:
                cost = len(pool[0].body) + pool[0].hsize
                if out and size + cost > max_bytes:
                    break
                out.append(pool.popleft())
                size += cost
        q.mem_bytes -= sum(len(m.body) for m in out)
        if q.disk and not out:
            self.draining.add(q)  # paged in without consumers
        mv.shipping += len(out)
        return out

    def move_shipped(self, name: str, msgs: list[Msg]) -> None:
        """The target stored ``msgs``: they are deleted here."""
        q = self.queues.get(name)
        mv = q.moving if q is not None else None
        if mv is None:
            return
        mv.shipping -= len(msgs)
        mv.shipped += len(msgs)
        mv.error = ""
        self.journal.forget(msgs)

    def move_finish(self, name: str) -> bool:
        """If nothing of ``name`` is left here, it is gone from this broker and a record of
        where it went replaces it; whether it is."""
        q = self.queues.get(name)
        if q is None or q.moving is None or self._left(q) or q.moving.shipping:
            return False
        mv = q.moving
        mv.phase = "done"
        del self.queues[name]
        self._dirty.discard(q)
        self._spilled.discard(q)
        self.draining.discard(q)
        for key in [k for k in self._dedup if k[0] == name]:
            del self._dedup[key]
        self.moved_out[name] = mv
        self.journal.settings(name, _packb({"moved": mv.to_map()}))
        return True

    def move_announced(self, name: str) -> None:
        """The target lists the queue now: nothing is left to do for this move."""
        mv = self.moved_out.get(name)
        if mv is not None and not mv.announced:
            mv.announced = True
            self.journal.settings(name, _packb({"moved": mv.to_map()}))

    def _left(self, q: Queue) -> int:
        """Messages of ``q`` still on this broker, shipped or not (in flight included)."""
        held = sum(1 for p in self.peers.values() for m in p.held.values() if m.q is q)
        spare = len(q.moving.spare) if q.moving is not None else 0
        return q.ready_count() + q.delayed + q.disk + q.staged + spare + held

    # ------------------------------------------------------------ target side

    def move_in_begin(self, name: str, source: str, move: str, settings: dict[str, Any],
                      paused: bool) -> dict[str, Any]:
        """Make queue ``name``, to be filled by broker ``source`` (not listed to routers
        until the move is done)."""
        q = self.queues.get(name)
        if q is not None:
            inc = q.incoming
            if inc is None or inc.source != source or inc.id != move:
                raise QueueConflict(f"queue {name!r} exists on this broker already",
                                    queue=name)
            return {"queue": name, "created": False}
        s = from_map(settings)
        check_policies(s)
        if self.moved_out.pop(name, None) is not None and self.links:
            self.catalog_changes.append(("remove", name))  # it comes back: no longer moved
        q = self._queue(name)
        if ("add", name) in self.catalog_changes:
            self.catalog_changes.remove(("add", name))
        self.configure(q, s)
        q.paused = paused
        q.incoming = MoveIn(source, move)
        self.stage_settings(q)
        return {"queue": name, "created": True}

    def move_in_ship(self, name: str, move: str, entries: list[Any], bodies: list[bytes],
                     now: float) -> dict[str, Any]:
        """Store the messages of one batch not stored already; the reply goes once they are."""
        q = self.queues.get(name)
        inc = q.incoming if q is not None else None
        if q is None or inc is None or inc.id != move:
            raise InvalidArgument(f"no move {move!r} of queue {name!r} into this broker")
        if len(entries) != len(bodies):
            raise InvalidArgument("move_in: messages and body parts differ in count")
        stored = 0
        wall = now + self.wall_offset
        for entry, body in zip(entries, bodies, strict=True):
            src, attempts, due_wall, exp_wall, headers, opts, keys = _entry(entry)
            if src in inc.seen:
                continue
            mid = self.next_id
            self.next_id = mid + 1
            due = due_wall - self.wall_offset if due_wall else 0.0
            exp = exp_wall - self.wall_offset if exp_wall else 0.0
            extra = (unpack_opts(opts) or f.Options(), due, exp)
            self.journal.publish(PendingPublish(None, q, 0, mid, [body],
                                                [headers] if headers else None, extra,
                                                src=src, attempts=attempts))
            q.staged += 1
            self._stage_placed(q, mid, 1, extra)
            if attempts:
                self.journal.attempts([mid], [attempts], due_wall, WAITING)
            inc.seen[src] = mid
            self.journal.dedup(name, f"{MOVE_KEY}{move}\x00{src}", mid, wall + MOVE_KEEP)
            self.remember_keys(name, keys, mid, wall)
            stored += 1
        return {"queue": name, "stored": stored, "known": len(entries) - stored}

    def remember_keys(self, name: str, keys: list[Any], mid: int, wall: float) -> None:
        """Dedup keys ``[[key, until (wall)], ...]`` of message ``mid`` of queue ``name``."""
        for key, until in keys:
            if until > wall:
                self._remember(name, key, mid, until - self.wall_offset)
                self.journal.dedup(name, key, mid, until)

    def move_in_keys(self, name: str, move: str, keys: list[Any], now: float) -> None:
        """Dedup keys ``[[key, id at the source, until], ...]`` shipped on their own (their
        messages may be gone): a publish with one is a duplicate here too. A key this
        broker knows already (its message arrived) stays as it is."""
        q = self.queues.get(name)
        if q is None or q.incoming is None or q.incoming.id != move:
            raise InvalidArgument(f"no move {move!r} of queue {name!r} into this broker")
        wall = now + self.wall_offset
        for k in keys:
            if not (type(k) is list and len(k) == 3 and type(k[0]) is str
                    and type(k[1]) is int and isinstance(k[2], int | float)):
                raise InvalidArgument("keys must be [[dedup id, message id, until], ...]")
            if (name, k[0]) not in self._dedup:
                self.remember_keys(name, [[k[0], k[2]]], k[1], wall)

    def move_in_done(self, name: str, move: str) -> dict[str, Any]:
        """The source has nothing of the queue left: it is this broker's, listed to routers."""
        q = self.queues.get(name)
        if q is not None and q.incoming is not None and q.incoming.id == move:
            q.incoming = None
            self.stage_settings(q)
            if self.links:
                self.catalog_changes.append(("add", name))
        return {"queue": name, "done": True}


def _entry(e: Any) -> tuple[int, int, float, float, dict[str, Any] | None,
                             dict[str, Any] | None, list[Any]]:
    """One shipped message's ``[id, attempts, due, expires, headers, options, keys]``."""
    if type(e) is not list or len(e) != 7:
        raise InvalidArgument("move_in: each message is [id, attempts, due, expires, "
                              "headers, options, keys]")
    src, attempts, due, exp, headers, opts, keys = e
    if type(src) is not int or src <= 0 or type(attempts) is not int or attempts < 0:
        raise InvalidArgument("move_in: id and attempts must be non-negative integers")
    if not isinstance(due, int | float) or not isinstance(exp, int | float):
        raise InvalidArgument("move_in: due and expires must be wall-clock seconds")
    if (headers is not None and type(headers) is not dict) or (
            opts is not None and type(opts) is not dict):
        raise InvalidArgument("move_in: headers and options must be maps")
    if type(keys) is not list or not all(
            type(k) is list and len(k) == 2 and type(k[0]) is str
            and isinstance(k[1], int | float) for k in keys):
        raise InvalidArgument("move_in: keys must be [[dedup id, until], ...]")
    return src, attempts, float(due), float(exp), headers, opts, keys
