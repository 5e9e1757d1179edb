"""The router's broker side: its links, what brokers send on them, and the cluster file.

No I/O. A FORWARD from a broker carries a frame for one client; it is relayed as it
came, after a look at the inner command part only: an inner WELCOME is swallowed (the
router welcomed the client itself) and an inner ERROR is decoded, because
SESSION_UNKNOWN and STALE_CONFIG change what the router knows. The link's own frames
(WELCOME, CATALOG, HEARTBEAT, BYE, ERROR) are small and decoded in full.
"""

from __future__ import annotations

from typing import Any

from zq.cluster.config import ClusterConfig
from zq.errors import ClusterMismatch, SessionUnknown, StaleConfig, Unavailable, ZqError
from zq.logs import Throttle
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.limits import FATAL_CODES
from zq.router.state import CMD, DOWN, UP, Link, RouterState, log

_FORWARD = CMD[f.FORWARD]
_WELCOME = CMD[f.WELCOME]
_ERROR = CMD[f.ERROR]
_HELLO = CMD[f.HELLO]
_CONFIRM = CMD[f.CONFIRM]


def entries_of(header: bytes) -> int:
    """How many entries a CONFIRM's msgpack array holds, read from its first bytes
    (the router counts confirmed publishes without decoding what it relays)."""
    if not header:
        return 0
    b = header[0]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F
    if b == 0xDC:
        return int.from_bytes(header[1:3], "big")
    if b == 0xDD:
        return int.from_bytes(header[1:5], "big")
    return 0
_ANSWERED = (CMD[f.PUBLISH], CMD[f.MANAGE])


class LinkSide(RouterState):
    """Frames from brokers (one DEALER socket per broker) and the cluster file.

    A link going down (:meth:`reset_link`) or refused is logged once per event; what a
    broker sends that the router cannot use, per frame, goes through :attr:`link_log`
    (a flood of it is summed up)."""

    _link_log: Throttle | None = None

    @property
    def link_log(self) -> Throttle:
        """Warnings about frames on links: one line each, a flood summed up."""
        if self._link_log is None:
            self._link_log = Throttle(log, "link_frame", "%d more warning(s) about frames "
                                                         "from brokers: %s")
        return self._link_log

    def flush_logs(self) -> None:
        """Sum up the warnings not logged one by one (at least once a second while
        there are any, and at the end)."""
        self.link_log.flush()
        self.client_log.flush()

    def link_connected(self, broker_id: str, now: float) -> None:
        """The shell has a socket connecting to ``broker_id``: say HELLO on it."""
        link = self.links.get(broker_id)
        if link is not None:
            link.connected = True
            link.dialed_at = now
            self.say_hello(link, now)

    def from_broker(self, broker_id: str, parts: list[bytes], now: float) -> None:
        """One multipart message from broker ``broker_id``'s link."""
        link = self.links.get(broker_id)
        if link is None:  # a broker removed from the cluster file: its last words
            self.counters["dropped"] += 1
            return
        link.last_heard = now
        if parts[0] == _FORWARD and len(parts) >= 3:
            link.forwarded_in += 1
            inner = parts[2]
            if inner == _WELCOME:
                client = self.clients.get(parts[1])
                if client is not None and broker_id in client.inner:
                    client.inner[broker_id] = True
            elif inner == _ERROR:
                self._inner_error(link, parts[1], parts[2:], now)
            else:
                if inner == _CONFIRM and len(parts) > 3:
                    link.settled += entries_of(parts[3])
                self._relay(link, parts[1], parts[2:])
            return
        self._link_frame(link, parts, now)

    def _relay(self, link: Link, key: bytes, parts: list[bytes]) -> None:
        if key in self.clients:
            self.to_clients.append((key, parts))
            self.counters["relayed"] += 1
        else:  # the client's session ended at the router: the broker's answer is void
            self.counters["dropped"] += 1

    def _inner_error(self, link: Link, key: bytes, parts: list[bytes], now: float) -> None:
        """An ERROR for a client: relayed; some of them also end its inner session.

        A STALE_CONFIG whose newer file the router takes is not relayed: taking it opens
        this link again, which ends the client's session with SESSION_UNKNOWN, and the
        client then sends the refused frame once more, with the same seq, to be placed
        with the new file."""
        try:
            err = codec.decode(parts, self.limits)
        except ZqError:
            self._relay(link, key, parts)
            return
        if not isinstance(err, f.Error):
            self._relay(link, key, parts)
            return
        if err.op == f.PUBLISH:
            link.settled += 1
        if err.code == StaleConfig.code and (self.adopt(err.info, link, now)
                                             or self._taken_already(err.info, key)):
            return
        self._relay(link, key, parts)
        client = self.clients.get(key)
        if client is not None and (err.code in FATAL_CODES or err.op == f.HELLO
                                   or err.code == SessionUnknown.code):
            client.inner.pop(link.broker_id, None)  # the broker ended the inner session
            if err.code == SessionUnknown.code:
                self.end_client(client, f"session unknown at broker {link.broker_id}")

    def _taken_already(self, info: dict[str, Any] | None, key: bytes) -> bool:
        """A STALE_CONFIG naming the version the router has now (one that was on its way
        when the router took the file from another): the frame was placed with the old
        file, so the client's session ends and it sends the frame again, to be placed
        with the new one, instead of getting the error."""
        if (info or {}).get("version") != self.cluster.version:
            return False
        client = self.clients.get(key)
        if client is not None:
            self.error(key, SessionUnknown("the router took a newer cluster file: say HELLO "
                                           "again and resend"), 0, None)
            self.end_client(client, "placed with an older cluster file")
        return True

    def _link_frame(self, link: Link, parts: list[bytes], now: float) -> None:
        try:
            frame = codec.decode(parts, self.limits)
        except ZqError as exc:
            link.errors += 1
            self.link_log.say("undecodable frame from broker %s: %s", link.broker_id, exc,
                              reason=str(exc), kind="undecodable frame", now=now,
                              broker=link.broker_id)
            return
        match frame:
            case f.Heartbeat():
                pass
            case f.Welcome():
                self.on_welcome(link, frame, now)
            case f.Catalog():
                self.on_catalog(link, frame, now)
            case f.Error():
                self.on_link_error(link, frame, now)
            case f.Bye():
                link.session_kept = False
                self.reset_link(link, f"the broker said BYE ({frame.reason})", now,
                                hello_now=False)
            case _:
                link.errors += 1
                what = type(frame).__name__.upper()
                self.link_log.say("unexpected %s from broker %s", what, link.broker_id,
                                  reason=f"unexpected {what}", now=now,
                                  broker=link.broker_id)

    def on_welcome(self, link: Link, w: f.Welcome, now: float) -> None:
        """The link is up, unless the broker is in another cluster (or none)."""
        theirs = (w.cluster or {}).get("id")
        if theirs != self.cluster.cluster_id:
            self._refused(link, f"its WELCOME names cluster {theirs!r}", now)
            self.to_brokers.append((link.broker_id, codec.encode(f.Bye("another cluster"))))
            return
        if link.state == UP and link.process and w.broker != link.process:
            self.counters["links_lost"] += 1
            log.warning("broker %s restarted (%s, was %s)", link.broker_id, w.broker,
                        link.process, extra={"event": "link_down", "broker": link.broker_id,
                                             "reason": "the broker restarted"})
            self.lose_clients(link, "the broker restarted")
        if link.state != UP:
            link.up_since = now
            version = (w.cluster or {}).get("version")
            log.info("link to broker %s up (%s, cluster version %s)", link.broker_id, w.broker,
                     version, extra={"event": "link_up", "broker": link.broker_id,
                                     "broker_process": w.broker})
        link.process = w.broker
        link.max_frame = w.max_frame
        link.state = UP
        link.renewals = 0
        link.reopened_at = None
        self.release_held(link)
        link.catalog_seq = 0  # each link session numbers its CATALOG frames from 1
        link.refused = False
        link.silence_limit = max(self.cfg.heartbeat, w.heartbeat_ms / 1000.0) * self.cfg.liveness

    def on_catalog(self, link: Link, c: f.Catalog, now: float) -> None:
        if link.state != UP:
            return  # from a link session already given up
        if c.seq != link.catalog_seq + 1:
            self.counters["catalog_resets"] += 1
            self.reset_link(link, f"CATALOG seq {c.seq} after {link.catalog_seq}: a gap", now)
            return
        link.catalog_seq = c.seq
        names = {q.encode() for q in c.queues}
        if c.kind == "snapshot":
            link.catalog = names
            link.moved = {}
        elif c.kind == "add":
            link.catalog |= names
        else:
            link.catalog -= names
        for name in names:  # a name listed again here is no longer moved from here
            link.moved.pop(name, None)
        if c.moved:  # queues this broker moved away, and where to (section 17.5)
            link.moved.update((q.encode(), b) for q, b in c.moved.items())
            self.forget_placements()

    def on_link_error(self, link: Link, e: f.Error, now: float) -> None:
        link.errors += 1
        if e.code == ClusterMismatch.code:
            self._refused(link, e.text, now)
        elif e.code == StaleConfig.code:
            log.info("broker %s has a newer cluster file: %s", link.broker_id, e.text)
            self.adopt(e.info, link, now)
        elif e.code == SessionUnknown.code:
            if link.state == UP:  # it lost our link session: it restarted
                link.session_kept = False
                self.reset_link(link, "the broker does not know the link", now)
            else:  # frames forwarded behind a HELLO that did not get there first
                self.lose_clients(link, "the broker refused frames sent before the "
                                        "link's HELLO")
        elif e.code in FATAL_CODES:
            reason = f"{e.name} from the broker ({e.text[:200]})"
            if link.state != UP:  # else reset_link says it: one line for one event
                log.error("broker %s ended the link: %s", link.broker_id, reason,
                          extra={"event": "link_down", "broker": link.broker_id,
                                 "reason": reason})
            link.session_kept = False
            self.reset_link(link, reason, now, hello_now=False)
        else:
            self.link_log.say("broker %s: %s %s (op %s)", link.broker_id, e.name, e.text,
                              e.op, reason=f"{e.name} {e.text}", kind=e.name, now=now,
                              event="link_error", broker=link.broker_id)

    def _refused(self, link: Link, why: str, now: float) -> None:
        """Not in our cluster: the link stays down and is tried again after a while."""
        if not link.refused:
            log.error("broker %s refused the link of cluster %r: %s", link.broker_id,
                      self.cluster.cluster_id, why, extra={
                          "event": "link_refused", "broker": link.broker_id, "reason": why})
            link.refused = True
        link.session_kept = False
        self.reset_link(link, "cluster mismatch", now, hello_now=False)
        link.next_hello = now + self.cfg.heartbeat * self.cfg.liveness

    def link_send_failed(self, broker_id: str, parts: list[bytes], now: float) -> None:
        """A frame could not be queued for ``broker_id`` (no connection, or its queue is
        full). A HELLO is tried again soon; a client's PUBLISH or MANAGE is answered
        UNAVAILABLE, since no answer would come; the rest is dropped."""
        link = self.links.get(broker_id)
        if link is None:
            return
        if parts[0] == _HELLO:  # no connection yet (the socket queues on live ones only)
            self.counters["hello_retries"] += 1
            link.next_hello = min(link.next_hello, now + min(0.05, self.cfg.heartbeat))
            return
        if parts[0] != _FORWARD or len(parts) < 3:
            return  # the link's own BYE or HEARTBEAT: its liveness covers them
        link.forwarded_out -= 1  # counted when it was queued: it never left
        self.counters["send_failed"] += 1
        client = self.clients.get(parts[1])
        if client is None:
            return
        inner = parts[2:]
        if inner[0] == _HELLO:
            client.inner.pop(broker_id, None)
        elif inner[0] in _ANSWERED:
            self._unavailable(parts[1], inner, broker_id)

    def _unavailable(self, key: bytes, inner: list[bytes], broker_id: str) -> None:
        try:
            frame = codec.decode(inner, self.limits)
        except ZqError:
            return
        ref = frame.seq if isinstance(frame, f.Publish) else getattr(frame, "req", None)
        self.counters["unavailable"] += 1
        self.error(key, Unavailable(f"broker {broker_id} cannot take frames now",
                                    info={"broker": broker_id}),
                   f.PUBLISH if isinstance(frame, f.Publish) else f.MANAGE, ref)

    # ------------------------------------------------------------ the cluster file

    def adopt(self, info: dict[str, Any] | None, link: Link, now: float) -> bool:
        """STALE_CONFIG's ``info.config``: taken (True) if it is this cluster's, and newer."""
        raw = (info or {}).get("config")
        try:
            new = ClusterConfig.from_dict(raw)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            self.link_log.say("broker %s sent an unusable cluster file: %s", link.broker_id,
                              exc, reason=str(exc), kind="unusable cluster file", now=now,
                              broker=link.broker_id)
            return False
        if new.cluster_id != self.cluster.cluster_id or new.version <= self.cluster.version:
            return False
        log.warning("taking cluster file version %d from broker %s (had version %d)",
                    new.version, link.broker_id, self.cluster.version,
                    extra={"event": "cluster_file_taken", "broker": link.broker_id,
                           "version": new.version})
        self.counters["configs_adopted"] += 1
        self.reload(new, now)
        return True

    def offer(self, new: ClusterConfig, now: float) -> tuple[bool, str]:
        """A cluster file read again (SIGHUP): whether it was taken, and what became of
        it, for the log. Only a newer version of this cluster's file replaces it."""
        old = self.cluster
        if new.cluster_id != old.cluster_id:
            return False, f"ignored: cluster_id {new.cluster_id!r} is not {old.cluster_id!r}"
        if new.version <= old.version:
            return False, f"ignored: version {new.version} is not newer than {old.version}"
        self.reload(new, now)
        return True, f"taken: now on version {new.version} (was {old.version})"

    def reload(self, new: ClusterConfig, now: float) -> None:
        """Run on ``new``: links to new brokers, none to removed ones, and each link
        that announced another version opened again, so brokers see the new one."""
        self.cluster = new
        self.forget_placements()
        for bid, link in list(self.links.items()):
            entry = new.broker(bid)
            if entry is None or entry.endpoint != link.endpoint:
                self.close_link(link, "removed from the cluster file" if entry is None
                                else f"its endpoint is now {entry.endpoint}")
        for b in new.brokers:
            kept = self.links.get(b.id)
            if kept is None:
                self.add_link(b.id, b.endpoint, now)
            elif kept.state != DOWN and kept.announced != new.version:
                self.reset_link(kept, f"cluster file version {new.version}", now)

    def close_link(self, link: Link, reason: str) -> None:
        self.lose_clients(link, reason)
        if link.session_kept and link.connected:
            self.to_brokers.append((link.broker_id, codec.encode(f.Bye(reason[:200]))))
        del self.links[link.broker_id]
        self.link_actions.append(("close", link.broker_id, ""))
        log.info("link to broker %s closed: %s", link.broker_id, reason,
                 extra={"event": "link_closed", "broker": link.broker_id, "reason": reason})
