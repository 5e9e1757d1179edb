"""Who may do what at a router: the key each client proved, its rights, and the bounds
on sessions and malformed frames, as a broker has them (``zq.core.access``). No I/O.

The router checks rights before it forwards a frame, and its brokers check again: in
the HELLO it forwards for a client, it names the key that client proved (``user``),
which a broker believes because the router's own key may relay (PROTOCOL.md 19).
"""

from __future__ import annotations

import dataclasses

from zq.errors import Forbidden
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.names import manage_target
from zq.router.state import ClientSession, RouterState
from zq.security.bounds import admit, strike
from zq.security.permissions import NONE, SERVER, check, manage_right


class RouterAccess(RouterState):
    """Clients' keys and rights (see the module docstring)."""

    def new_client(self, identity: bytes, frame: f.Hello, now: float, liveness_s: float,
                   user: str | None) -> ClientSession:
        """A session for a client's HELLO, within the bounds (raises TooManySessions).
        Its HELLO, forwarded to open each inner session, names its key and only that."""
        admit(self.cfg, len(self.clients), self.per_key, user, self.secure, "router")
        hello = codec.encode(dataclasses.replace(frame, user=user if self.secure else None))
        client = ClientSession(identity, hello, now, liveness_s, user=user)
        self.clients[identity] = client
        self.per_key[user] += 1
        self.noted.append("session")
        return client

    def may_publish(self, client: ClientSession, queue: bytes) -> Forbidden | None:
        """None if ``client`` may publish to ``queue`` (with rights), else the refusal."""
        rights = self.rights
        if rights is None or client.user == SERVER:
            return None
        name = queue.decode()
        if rights.may(client.user, "publish", name):
            return None
        try:
            check(rights, client.user, "publish", name)
        except Forbidden as exc:
            return exc
        return None

    def authorize(self, client: ClientSession, frame: f.Frame) -> None:
        """Raise Forbidden unless ``client`` may send ``frame`` (a MANAGE or STATS)."""
        rights = self.rights
        if rights is None or client.user == SERVER:
            return
        try:
            if isinstance(frame, f.Stats):
                check(rights, client.user, "admin")
            elif isinstance(frame, f.Manage):
                right = manage_right(frame.op)
                if right in ("admin", NONE):
                    check(rights, client.user, right)
                else:
                    check(rights, client.user, right, manage_target(frame.op, frame.args) or "")
        except Forbidden as exc:
            exc.attrs["ref"] = getattr(frame, "req", None)
            raise

    def end_sessions_of(self, names: set[str], reason: str) -> list[int]:
        """End the sessions of these keys; their connections, to be closed."""
        gone = [c for c in self.clients.values() if c.user in names]
        for client in gone:
            self.end_client(client, reason)
        return [c.conn for c in gone]

    def strike(self, identity: bytes) -> bool:
        """A malformed frame from ``identity``: True if it gets its ERROR, False once it
        used its budget (no more ERROR frames; the shell closes its connection)."""
        return strike(self.strikes, identity, self.cfg.malformed_budget, self.counters,
                      self.noted)
