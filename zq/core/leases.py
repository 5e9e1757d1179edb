"""Sessions that end: what a lost, departing or unreachable consumer held, and what it
costs each message (PROTOCOL.md 12.5). No I/O.
"""

from __future__ import annotations

from zq.core.delivery import Delivery
from zq.core.model import Msg, Peer
from zq.core.state import (
    log,
)
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


class Leases(Delivery):
    """Ending sessions and their leases."""

    def _drop_link(self, link: Peer, reason: str) -> None:
        self.links.pop(link.identity, None)
        for inner in link.inner or ():
            self.routes.pop(inner, None)
            p = self.peers.get(inner)
            if p is not None:
                self.drop_peer(p, f"its router's link ended ({reason})")

    def drop_peer(self, peer: Peer, reason: str, suspect: bool = True,
                  charge: bool = True) -> None:
        """Forget a session; every message it held has lost its lease.

        Those it had started are failed attempts (``consumer lost``), retried or
        dead; those it had not go back as if released (see :func:`charged`).
        ``suspect``: the peer vanished without a word (silence, a fatal error,
        unroutable), so what it held becomes suspect. ``charge``: False when the
        broker itself is stopping (no message is to blame).
        """
        if self.peers.get(peer.identity) is not peer:
            return
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
        log.info("peer %s (%s) dropped: %s; %d message(s) back to their queues, %d of them "
                 "as failed attempts", peer.identity.hex(), peer.name or "?", reason, len(held),
                 len(failed))

    def close_sessions(self, reason: str) -> None:
        """Say BYE to every peer and end its session (a clean shutdown). The broker
        stopping is no message's fault: what they held goes back unattempted, stored
        with the next commit."""
        bye = codec.encode(f.Bye(reason))
        for peer in list(self.peers.values()):
            self._send(peer.identity, bye)
            self.drop_peer(peer, reason, suspect=False, charge=False)

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
