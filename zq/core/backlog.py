"""Recovery and the backlog on disk: what the store gives back at start and page by
page. No I/O.
"""

from __future__ import annotations

from typing import Any

from zq.core.model import MoveIn, MoveOut, Msg, Queue
from zq.core.results import Outcome
from zq.core.state import (
    log,
    unpack_opts,
)
from zq.core.streams import GROUP_PREFIX, STREAM_PREFIX, Group, Stream
from zq.core.timers import Timers
from zq.core.topics import TOPIC_PREFIX, Topic
from zq.errors import (
    ZqError,
)
from zq.persistence.base import (
    WAITING,
    Recovered,
    StoredMessage,
)
from zq.protocol import codec
from zq.settings import from_map

MOVE_KEY = "\x00move\x00"  # dedup key a target keeps per moved message: + move id + \0 + id


def _recover_move(q: Queue, state: dict[str, Any]) -> None:
    """A queue's stored move, either way, after a restart."""
    if state.get("moving"):
        q.moving = MoveOut.from_map(q.name, state["moving"])
    if state.get("incoming"):
        d = state["incoming"]
        q.incoming = MoveIn(str(d.get("from", "")), str(d.get("id", "")))


class Backlog(Timers):
    """Stored messages into memory."""

    def recover(self, rec: Recovered, now: float) -> None:
        """Load what the store holds; messages that were in flight count that attempt."""
        self.now = now
        self._recover_settings(rec)
        for name, n in rec.backlog.items():
            q = self._queue(name)
            q.disk = n
            self._spilled.add(q)
        self._admit(rec.messages, now)
        self.next_id = max(self.next_id, rec.next_id)
        wall = now + self.wall_offset
        for queue, key, mid, until in rec.dedups:
            if key.startswith(MOVE_KEY):  # a message moved here: its id at the source
                self._recover_moved(queue, key, mid)
            elif until > wall:
                self._remember(queue, key, mid, now + until - wall)
        for pid, seen, entries in rec.producers:
            self.producers.load(pid, entries, now - (wall - seen))
        for mid, queue, outcome, data, until in rec.results:
            if until > wall:
                self.results.put(mid, Outcome(outcome, queue, data, now + until - wall))
        for sched in rec.schedules:
            if sched.next_due <= wall and sched.misfire == "skip":
                sched.next_due = sched.after(wall)  # missed while down: go on from now
            self.schedules[sched.name] = sched

    def _recover_settings(self, rec: Recovered) -> None:
        """Queues' stored settings, and the moves under way or done."""
        groups: list[tuple[str, dict[str, Any]]] = []
        for name, state in rec.settings.items():
            if name.startswith(TOPIC_PREFIX):  # a topic's bindings (zq.core.topics)
                self._recover_topic(name[len(TOPIC_PREFIX):], state)
                continue
            if name.startswith(STREAM_PREFIX):  # a stream (zq.core.streams)
                self._recover_stream(name[len(STREAM_PREFIX):], state, rec)
                continue
            if name.startswith(GROUP_PREFIX):  # its groups, once the streams are known
                groups.append((name[len(GROUP_PREFIX):], state))
                continue
            if state.get("moved"):  # moved to another broker (section 17.5)
                self.moved_out[name] = MoveOut.from_map(name, state["moved"])
                continue
            try:
                q = self._queue(name)
                self.configure(q, from_map(state.get("settings", {})))
                q.paused = bool(state.get("paused", False))
                _recover_move(q, state)
            except (ZqError, ValueError, KeyError, TypeError) as exc:
                log.error("queue %s: stored settings not usable (%s); using defaults", name, exc)

        for name, state in groups:
            self._recover_group(name, state)

    def _recover_stream(self, name: str, state: dict[str, Any], rec: Recovered) -> None:
        try:
            d = state["stream"]
            s = Stream(name, float(d.get("max_age", 0.0)), int(d.get("max_bytes", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            log.error("stream %s: stored settings not usable (%s); ignored", name, exc)
            return
        count, first, last, size, created = rec.streams.get(s.key, (0, 0, 0, 0, 0.0))
        s.count, s.first, s.bytes, s.first_created = count, first, size, created
        s.last = last if count else rec.next_id - 1
        s.floor = first - 1 if count else s.last
        self.streams[name] = s
        self.queues[name] = s.q

    def _recover_group(self, name: str, state: dict[str, Any]) -> None:
        stream, _, group = name.partition("\x00")
        s = self.streams.get(stream)
        if s is None:
            log.error("group %s of stream %s: no such stream; ignored", group, stream)
            return
        g = s.groups[group] = Group(s, group)
        d = state.get("group") if isinstance(state, dict) else None
        seek = d.get("seek") if isinstance(d, dict) else None
        start: tuple[object, ...]
        try:
            if seek is not None:  # reset to a place not looked up before the stop
                start = (str(seek[0]), float(seek[1]) if seek[0] == "time" else int(seek[1]))
            else:
                start = ("offset", int(d["committed"]) + 1)  # type: ignore[index]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            log.error("group %s of stream %s: stored offset not usable (%s); reading from "
                      "its first entry", group, stream, exc)
            start = ("first",)
        self.place_group(g, start)
        g.dirty = False

    def _recover_topic(self, name: str, state: dict[str, Any]) -> None:
        try:
            self.topics[name] = Topic.from_map(name, state["topic"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("topic %s: stored bindings not usable (%s); dropped", name, exc)

    def _recover_moved(self, queue: str, key: str, mid: int) -> None:
        q = self.queues.get(queue)
        inc = q.incoming if q is not None else None
        move, _, src = key[len(MOVE_KEY):].rpartition("\x00")
        if inc is not None and move == inc.id and src.isdigit():
            inc.seen[int(src)] = mid

    def _admit(self, stored: list[StoredMessage], now: float) -> None:
        """Stored messages into memory: ready, or delayed until their due time.

        A broker that stops, cleanly or not, never costs a message an attempt: a
        delivery in flight when it stopped (DELIVERED) comes back as if released, and
        one whose next attempt number was stored ahead of its due time (AHEAD) gets
        its count back too. Either way the next delivery repeats that number.
        """
        wall = now + self.wall_offset
        for sm in stored:
            q = self._queue(sm.queue)
            attempts = sm.attempts - 1 if sm.state != WAITING and sm.attempts else sm.attempts
            m = Msg(sm.id, q, sm.body, sm.headers, attempts, codec.header_size(sm.headers),
                    now - (wall - sm.created) if sm.created else now)
            o = sm.opts
            if o:
                m.opts = unpack_opts(o)
                m.lane = q.lane_for(m.opts)
                exp = o.get("expires_at")
                if exp:
                    m.exp = now + exp - wall
                    q.ttl_seen = True
                if m.opts is not None and m.opts.time_limit_ms:
                    q.limited = True
            elif q.settings.ttl and sm.created:
                m.exp = m.t + q.settings.ttl
            q.mem_bytes += len(sm.body)
            if sm.id > q.cursor:
                q.cursor = sm.id
            if q.forward and self._continues_spare(q, m):
                m.due = now + sm.ready_at - wall if sm.ready_at > wall else 0.0
            elif sm.ready_at > wall:
                self._delay(m, now + sm.ready_at - wall)
            else:
                m.lane.msgs.append(m)
                self._dirty.add(q)

    def _continues_spare(self, q: Queue, m: Msg) -> bool:
        """A forwarded queue's delayed run was split by a page and its first part was
        taken off the timers (``uplink_spare``): the rest joins it there, whatever its
        due time is by now, so that the run goes whole (zq.core.uplink)."""
        spare = self.uplink_spare.get(q)
        if spare and spare[-1].id == m.id - 1:
            spare.append(m)
            return True
        return False

    def wanted_pages(self) -> list[tuple[str, int, int]]:
        """(queue, after_id, limit) for queues whose backlog on disk should page in now."""
        cfg = self.cfg
        out: list[tuple[str, int, int]] = []
        for q in self._spilled:
            ready = q.ready_count()
            if q in self.uplink_waiting:  # a run goes on on disk: its rest, whatever it takes
                out.append((q.name, q.cursor, max(cfg.window - ready, cfg.max_publish_batch)))
                continue
            # A forwarded queue reads ahead: its uplink takes many at once (zq.core.uplink).
            part = 4 if q.forward else 2
            if (ready < cfg.window * (part - 1) // part
                    and q.mem_bytes < cfg.window_bytes * (part - 1) // part
                    and (q in self.draining or any(s.window.available > 0 for s in q.subs))):
                out.append((q.name if q.group is None else q.group.read_key(), q.cursor,
                            max(1, min(q.disk, cfg.window - ready))))
        return out

    def wants_pages(self) -> bool:
        return bool(self._seeking) or (bool(self._spilled) and bool(self.wanted_pages()))

    def paged_in(self, queue: str, limit: int, stored: list[StoredMessage], now: float) -> None:
        """Messages read from disk for ``queue`` (after its cursor, in id order)."""
        if queue.startswith(GROUP_PREFIX):  # a stream's entries, for one of its groups
            g = self.group_by_key(queue)
            if g is not None:
                self.group_paged(g, limit, stored, now)
            return
        q = self._queue(queue)
        n = len(stored)
        if q.moved_in and stored:  # moved here while the backlog was on disk: in memory
            last = stored[-1].id
            stored = [sm for sm in stored if sm.id not in q.moved_in]
            q.cursor = max(q.cursor, last)
            q.moved_in = {i for i in q.moved_in if i > last}
        self._admit(stored, now)
        self.uplink_waiting.discard(q)
        q.disk -= len(stored)
        if n < limit or q.disk < 0:
            if q.disk:
                log.warning("queue %s: %d message(s) counted on disk were not there",
                            q.name, q.disk)
            q.disk = 0
        if not q.disk:
            self._spilled.discard(q)
            self.draining.discard(q)
