"""Who may do what, and how much: the key a session proved, its rights, and the bounds
on sessions and on malformed frames. No I/O.

With CURVE (``secure``) the shell hands every frame in with the name of the key its
connection proved at the handshake (ZeroMQ's ``User-Id``); a session belongs to the
key that opened it, and a frame of another key on its routing id is refused. A client
behind a router has the key the router vouches for in its HELLO, believed only if the
router's own key may relay (else it has the router's key). ``rights`` (the
``--permissions`` file) then says what each key may do; PROTOCOL.md section 19.
"""

from __future__ import annotations

from zq.core.model import Peer
from zq.core.state import log
from zq.core.stats import Stats
from zq.errors import Forbidden
from zq.protocol import frames as f
from zq.protocol.names import manage_target
from zq.security.bounds import admit, strike
from zq.security.permissions import NONE, SERVER, check, manage_right


class Access(Stats):
    """Sessions' keys and rights (see the module docstring)."""

    def _open_session(self, identity: bytes, user: str | None, frame: f.Frame,
                      now: float, inner: bool = False) -> Peer:
        """A new session for a HELLO, within the bounds (raises TooManySessions);
        ``inner``: of a client behind a router."""
        cfg = self.cfg
        route = self.routes.get(identity) if inner else None
        if route is not None and self.secure:
            link = self.peers.get(route[0])
            user = self._vouched(link.user if link is not None else None, frame)
        admit(cfg, len(self.peers), self.per_key, user, self.secure, "broker")
        peer = self.peers[identity] = Peer(identity, now)
        peer.user = user
        self.per_key[user] += 1
        if route is None:
            self.noted.append("session")
        return peer

    def _vouched(self, link_user: str | None, frame: f.Frame) -> str | None:
        """The key of a client behind a router: the one its router vouches for, if the
        router's key may relay; else the router's own."""
        claimed = frame.user if isinstance(frame, f.Hello) else None
        if claimed is None or link_user is None:
            return link_user
        rights = self.rights
        if link_user == SERVER or rights is None or rights.relay(link_user):
            return claimed
        return link_user

    def end_sessions_of(self, names: set[str], reason: str) -> list[int]:
        """End every session of these keys (a link's takes the sessions behind it along);
        the connections (``Peer.conn``) of those that have their own, to be closed."""
        ending = [p for p in self.peers.values() if p.user in names]
        conns = [p.conn for p in ending if p.identity not in self.routes]
        for peer in ending:  # (a link's end takes its clients along: skip those gone)
            if self.peers.get(peer.identity) is peer:
                log.warning("ending the session of %s (key %r): %s",
                            peer.name or "a client", peer.user, reason,
                            extra={"event": "session_ended", "peer": peer.name,
                                   "key": peer.user, "reason": reason})
                # The broker ends it, not a failure of the consumer: nothing is charged.
                self.drop_peer(peer, reason, suspect=False, charge=False)
        return conns

    def _strike(self, identity: bytes) -> bool:
        """A malformed or out-of-order frame from ``identity``: True if it gets its
        ERROR, False once it has used its budget (the shell closes its connection)."""
        if identity in self.routes:  # its router answers for its clients
            return True
        return strike(self.strikes, identity, self.cfg.malformed_budget, self.counters,
                      self.noted)

    def authorize(self, peer: Peer, frame: f.Frame) -> None:
        """Raise Forbidden unless ``peer``'s key may send ``frame`` (with ``rights``)."""
        rights = self.rights
        user = peer.user
        if rights is None or user == SERVER:
            return
        queue: str | None = None
        ref: object = None
        if isinstance(frame, f.Publish):
            right, queue, ref = "publish", frame.queue, frame.seq
        elif isinstance(frame, f.Credit):
            right, queue, ref = "consume", frame.queue, frame.queue
        elif isinstance(frame, f.Manage):
            self._may_manage(user, frame)
            return
        elif isinstance(frame, f.Stats):
            right, ref = "admin", frame.req
        else:  # (a link's HELLO needs no right: its clients get its key's rights
            return  # unless the key may relay, see _vouched)
        if queue is not None and rights.may(user, right, queue):
            return
        try:
            check(rights, user, right, queue)
        except Forbidden as exc:
            exc.attrs["ref"] = ref
            raise

    def _may_manage(self, user: str | None, frame: f.Manage) -> None:
        rights = self.rights
        assert rights is not None
        right = manage_right(frame.op)
        name = manage_target(frame.op, frame.args) or ""  # (what the operation acts on)
        try:
            if right in ("admin", NONE):
                check(rights, user, right)
            else:
                check(rights, user, right, name)
            to = frame.args.get("to")
            if frame.op == "redrive" and type(to) is str:
                check(rights, user, "publish", to)
        except Forbidden as exc:
            exc.attrs["ref"] = frame.req
            raise
