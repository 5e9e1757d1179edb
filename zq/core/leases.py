"""Sessions that end: what a lost, departing or unreachable consumer held, and what it
costs each message (PROTOCOL.md 12.5). No I/O.
"""

from __future__ import annotations

import logging
import re

from zq.core.delivery import Delivery
from zq.core.model import Msg, Peer
from zq.core.state import (
    log,
)
from zq.logs import Throttle
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.session import State
from zq.security.bounds import forget


def charged(held: list[Msg], marks: bool, probes: set[Msg]) -> set[Msg]:
    """Which of a lost session's deliveries were failed attempts.

    A session that does not send START: all of them. One that does: those it
    marked started, and a suspect it held alone (a probe, see :meth:`_probe`). The
    others go back as if released, so a message that kills its consumer does not
    take the ones prefetched beside it along. When the session vanished without a
    word, its last START and acks may have died with it, so what it held becomes
    *suspect*: suspects are then handed out one at a time, alone, and the next crash
    names the one that causes it.
    """
    if not marks:
        return set(held)
    failed = {m for m in held if m.started == m.attempts}
    for p in probes:  # a probe held beside started work may be innocent: only if alone
        if all(m is p for m in held if m.q is p.q):
            failed.add(p)
    return failed


_NUMBER = re.compile(r"\d+(\.\d+)?")


def drop_kind(reason: str) -> str:
    """What a flood of drops is counted by: the reason up to its first colon, numbers
    left out ("no sign of life for N s")."""
    return _NUMBER.sub("N", reason.partition(":")[0])


class Leases(Delivery):
    """Ending sessions and their leases."""

    _drops: Throttle | None = None

    @property
    def drop_log(self) -> Throttle:
        """The warnings about peers dropped: one line each, a flood summed up (the
        clock is the core's ``now``)."""
        if self._drops is None:
            self._drops = Throttle(log, "peer_dropped", "%d more peer(s) dropped: %s")
        return self._drops

    def _drop_link(self, link: Peer, reason: str) -> None:
        self.links.pop(link.identity, None)
        for inner in link.inner or ():
            self.routes.pop(inner, None)
            p = self.peers.get(inner)
            if p is not None:  # its link's warning counts it: one line for the link
                self.drop_peer(p, f"its router's link ended ({reason})", level=logging.INFO)

    def drop_peer(self, peer: Peer, reason: str, suspect: bool = True,
                  charge: bool = True, *, level: int | None = None) -> None:
        """Forget a session; every message it held has lost its lease.

        Those it had started are failed attempts (``consumer lost``), retried or
        dead; those it had not go back as if released (see :func:`charged`).
        ``suspect``: the peer vanished without a word (silence, a fatal error,
        unroutable), so what it held becomes suspect. ``charge``: False when the
        broker itself ends the session (stopping, a key removed: no message is to
        blame). ``level``: how it is logged, if not by :meth:`_drop_level`.
        """
        if self.peers.get(peer.identity) is not peer:
            return
        departed = peer.state is State.CLOSED  # its BYE closed the session
        if level is None:
            level = self._drop_level(departed, charge)
        behind = sum(1 for i in peer.inner if i in self.peers) if peer.inner else 0
        del self.peers[peer.identity]
        peer.state = State.CLOSED
        forget(self.per_key, peer.user)
        if peer.inner is not None:  # a router's link: the clients behind it go with it
            self._drop_link(peer, reason)
        if self.results.waiters:
            self.results.drop_peer(peer.identity)
        self.counters["peers_dropped"] += 1
        probes: set[Msg] = set()
        for sub in peer.subs.values():
            if sub in sub.q.subs:
                sub.q.subs.remove(sub)
            if sub.probe is not None:
                probes.add(sub.probe)
                sub.probe = None
        held = sorted(peer.held.values(), key=lambda m: m.id)
        peer.held.clear()
        failed = charged(held, peer.marks, probes if suspect else set()) if charge else set()
        now = self.now
        back: list[Msg] = []
        for m in held:
            self.untrack(m)
            if suspect:
                m.suspect = True
            if m in failed:
                self._record(m, "consumer lost", reason, peer.name, now)
                self._retry(m, "consumer lost", now, 0.0, back)
            else:
                self._undeliver(m)
                back.append(m)
        self._requeue_front(back)
        self.counters["released"] += len(held) - len(failed)
        self._log_drop(peer, reason, level, "peer_left" if departed else "peer_dropped",
                       (len(held), len(failed), behind))

    @staticmethod
    def _drop_level(departed: bool, charge: bool) -> int:
        """A peer that left (said BYE) or that the broker itself sent away (``charge``
        False: stopping, its key removed, logged by who did it) is news (INFO); one
        lost, refused or cut off is a warning an operator must see."""
        return logging.INFO if departed or not charge else logging.WARNING

    def _log_drop(self, peer: Peer, reason: str, level: int, event: str,
                  counts: tuple[int, int, int]) -> None:
        """Warnings through :attr:`drop_log` (a flood is summed up); news as it is."""
        held, failed, behind = counts
        args = (peer.identity.hex(), peer.name or "?", reason,
                f" with the {behind} client session(s) behind it" if behind else "",
                held, failed)
        msg = ("peer %s (%s) dropped: %s%s; %d message(s) back to their queues, %d of them "
               "as failed attempts")
        fields = {"peer": peer.name, "identity": peer.identity.hex(), "key": peer.user,
                  "held": held, "failed": failed}
        if behind:
            fields["clients"] = behind
        if level >= logging.WARNING:
            self.drop_log.say(msg, *args, reason=reason, kind=drop_kind(reason),
                              now=self.now, level=level, **fields)
        elif log.isEnabledFor(level):
            log.log(level, msg, *args, extra={"event": event, "reason": reason, **fields})

    def flush_logs(self) -> None:
        """Sum up the drops not logged one by one (at least once a second while
        peers are being dropped, and at the end)."""
        self.drop_log.flush()

    def close_sessions(self, reason: str) -> None:
        """Say BYE to every peer and end its session (a clean shutdown). The broker
        stopping is no message's fault: what they held goes back unattempted, stored
        with the next commit. One line says so, not one per peer."""
        bye = codec.encode(f.Bye(reason))
        peers = list(self.peers.values())
        for peer in peers:
            self._send(peer.identity, bye)
            self.drop_peer(peer, reason, suspect=False, charge=False, level=logging.DEBUG)
        self.flush_logs()
        if peers:
            log.info("%d session(s) dropped: %s", len(peers), reason,
                     extra={"event": "sessions_closed", "count": len(peers), "reason": reason})

    def send_failed(self, identity: bytes, msgs: list[Msg] | None, unroutable: bool) -> None:
        """The shell could not send to ``identity``; undo a delivery if it was one."""
        self.counters["unroutable" if unroutable else "send_dropped"] += 1
        peer = self.peers.get(identity)
        if peer is None:
            return  # already dropped: drop_peer requeued everything it held
        if msgs:
            back: list[Msg] = []
            for m in msgs:
                if peer.held.pop(m.id, None) is not None:
                    sub = peer.subs[m.q.name]
                    sub.window.settle(1)
                    if sub.probe is m:
                        self._unprobe(sub)
                    if sub.active:
                        sub.window.available += 1  # the consumer never saw it: its credit stands
                    self.untrack(m)
                    self._undeliver(m)  # never reached the consumer
                    back.append(m)
            self._requeue_front(back)
        if unroutable:
            self.drop_peer(peer, "unroutable")
