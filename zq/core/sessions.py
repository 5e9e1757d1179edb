"""Frames in: decoding, the session table, and the handler for each frame. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zq import history
from zq.core.access import Access
from zq.core.model import Peer
from zq.core.state import (
    _FATAL,
    MAX_HEARTBEAT,
    log,
)
from zq.errors import (
    ClusterMismatch,
    Forbidden,
    InternalError,
    InvalidArgument,
    ProtocolViolation,
    SessionUnknown,
    StaleDelivery,
    UnknownDelivery,
    ZqError,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.session import State, next_state


class Sessions(Access):
    """One multipart message at a time, from any peer."""

    def receive(self, identity: bytes, parts: list[bytes], now: float,
                user: str | None = None, inner: bool = False) -> None:
        """Handle one multipart message (the ROUTER envelope already split off); ``user``
        is the key its connection proved (with CURVE). ``inner``: a frame a router
        forwarded for its client ``identity`` (``on_forward``)."""
        self.counters["frames_in"] += 1
        self.now = now
        peer = self.peers.get(identity)
        if not inner and ((self.routes and identity in self.routes)
                          or (self.secure and (user is None or (peer is not None
                                                                and peer.user != user)))):
            self.counters["frames_refused"] += 1
            self._fail(identity, Forbidden("this session belongs to another key, or to a "
                                           "client behind a router"), 0, None)
            return
        cmd = parts[0] if parts else b""
        op = cmd[3] if len(cmd) == 4 and cmd[:2] == f.SIGNATURE else 0
        try:
            frame = codec.decode(parts, self.limits)
            state = peer.state if peer is not None else State.NEW
            new_state = next_state(state, op)
        except ZqError as exc:
            self._refused(identity, peer, exc, op, parts)
            return
        if peer is None:
            if new_state is not State.READY:
                return  # BYE from a stranger: nothing to do
            try:
                peer = self._open_session(identity, user, frame, now, inner)
            except ZqError as exc:
                self._fail(identity, exc, op, None)
                return
            created = peer
        else:
            created = None
        peer.last_seen = now
        peer.state = new_state
        try:
            if self.rights is not None:
                self.authorize(peer, frame)
            self._handle(peer, frame, now)
        except ZqError as exc:
            self._fail(identity, exc, op, self._ref(exc))
            if type(frame) is f.Hello and isinstance(exc, Forbidden):
                self.drop_peer(peer, f"HELLO refused: {exc.message}", suspect=False)
        except Exception as exc:  # a bug: answer it, and keep serving everybody else
            log.exception("handling %s from %s", f.NAMES.get(op, hex(op)), identity.hex())
            self._fail(identity, InternalError(f"the broker failed: {exc!r}"), op,
                       getattr(frame, "seq", getattr(frame, "req", None)))
        if created is not None and self.peers.get(identity) is not created \
                and "session" in self.noted:
            self.noted.remove("session")  # its HELLO was refused after all

    def _refused(self, identity: bytes, peer: Peer | None, exc: ZqError, op: int,
                 parts: list[bytes]) -> None:
        """A frame that could not be decoded, or came out of order."""
        fatal = exc.name in _FATAL
        if fatal and not self._strike(identity):
            if peer is not None:
                self.drop_peer(peer, f"protocol error: {exc.message}")
            return  # past its budget: no more ERROR frames, its connection is closed
        if isinstance(exc, SessionUnknown) and op in (f.ACK, f.NACK, f.EXTEND):
            # A consumer whose session was dropped settles what it held: those
            # leases are gone, and the answer must say so, not only "say HELLO".
            frame = codec.decode(parts, self.limits)
            self._fence_unknown(identity, frame, op)  # type: ignore[arg-type]
        self._fail(identity, exc, op, self._ref(exc))
        if peer is not None and fatal:
            self.drop_peer(peer, f"protocol error: {exc.message}")

    def _fence_unknown(self, identity: bytes, frame: f.Ack | f.Nack | f.Extend, op: int) -> None:
        stale = [i for i in frame.ids if i < self.next_id]
        unknown = [i for i in frame.ids if i >= self.next_id]
        if stale:
            self._fail(identity, StaleDelivery(
                f"{len(stale)} delivery(ies) belonged to a session that has ended"), op, stale)
        if unknown:
            self._fail(identity, UnknownDelivery(f"{len(unknown)} id(s) never delivered"),
                       op, unknown)

    @staticmethod
    def _ref(exc: ZqError) -> Any:
        return exc.attrs.get("ref")

    def _handle(self, peer: Peer, frame: f.Frame, now: float) -> None:
        _HANDLERS[type(frame)](self, peer, frame, now)

    def on_bye(self, peer: Peer, frame: f.Bye) -> None:
        """The client leaves: a departing session is alive, so its marks are complete."""
        self.drop_peer(peer, f"BYE {frame.reason}".strip(), suspect=False)

    def on_stats(self, peer: Peer, frame: f.Stats) -> None:
        self._send(peer.identity, codec.encode(f.StatsReply(frame.req, self.stats())))

    def on_hello(self, peer: Peer, frame: f.Hello) -> None:
        # Capped where it enters: the name goes into every history entry of this consumer.
        peer.name = history.cap(frame.name, history.MAX_NAME)
        peer.marks = frame.starts
        peer.producer = frame.producer
        # A client may ask for slower heartbeats than the broker's, within reason.
        beat = min(max(self.cfg.heartbeat, frame.heartbeat_ms / 1000.0), MAX_HEARTBEAT)
        peer.liveness_s = beat * self.cfg.liveness
        route = self.routes.get(peer.identity)
        if route is not None:  # a client behind a router: it lives as long as its link
            peer.via = route[0]
            peer.liveness_s = float("inf")
        if frame.link is not None and not self._open_link(peer, frame.link):
            return
        cfg = self.cfg
        m = self.membership
        self._send(peer.identity, codec.encode(f.Welcome(
            self.broker_id, int(cfg.heartbeat * 1000), cfg.liveness, cfg.max_batch,
            cfg.max_credit, cfg.max_frame, starts=True,
            cluster=None if m is None else m.welcome())))
        if peer.inner is not None:  # a new link: the queue names it routes by
            peer.catalog_seq = 1
            self._send(peer.identity, codec.encode(self.catalog_snapshot()))

    def _open_link(self, peer: Peer, link: dict[str, Any]) -> bool:
        """A router's HELLO: refused (and the session ended) unless this broker is in
        the same cluster (PROTOCOL.md section 17.2)."""
        m = self.membership
        exc = (ClusterMismatch("this broker is not in a cluster (no --cluster)")
               if m is None else m.check_link(link))
        if exc is None and peer.via is not None:
            exc = ProtocolViolation("a link inside a link")
        if exc is not None:
            self._fail(peer.identity, exc, f.HELLO, None)
            self.drop_peer(peer, f"link refused: {exc.message}", suspect=False)
            return False
        version = link.get("version")
        peer.link_version = version if type(version) is int else None
        peer.inner = set()
        peer.name = history.cap(f"router {link.get('router', '')}", history.MAX_NAME)
        self.links[peer.identity] = peer
        return True

    def catalog_snapshot(self) -> f.Catalog:
        """A new link's CATALOG: the queues this broker lists (not those being moved in
        or out), and where those it moved away went."""
        names = sorted(n for n, q in self.queues.items()
                       if q.moving is None and q.incoming is None)
        moved = {n: mv.to for n, mv in self.moved_out.items()}
        moved.update((n, q.moving.to) for n, q in self.queues.items()
                     if q.moving is not None and q.moving.phase != "prepare")
        return f.Catalog(1, "snapshot", names, moved or None)

    def on_locate(self, peer: Peer, frame: f.Locate) -> None:
        m = self.membership
        if m is None:
            raise InvalidArgument("LOCATE: this broker is not in a cluster", ref=frame.req)
        moved = self.moved_away(frame.queue, frame.req)
        if moved is not None:  # it is (being) moved: where it is now
            loc = {**moved.attrs["info"], "exists": True}
        else:
            loc = m.location(frame.queue, frame.queue in self.queues)
        self._send(peer.identity, codec.encode(f.Location(frame.req, loc)))

    def on_forward(self, peer: Peer, frame: f.Forward, now: float) -> None:
        """A frame of a client behind a router: handled as that client's own session."""
        if peer.inner is None:
            raise ProtocolViolation("FORWARD from a session that is not a router's link")
        peer.forwards_in += 1
        self.counters["forwards_in"] += 1
        inner = peer.identity + b"\x00" + frame.key
        if inner not in self.routes:
            squatter = self.peers.get(inner)
            if squatter is not None:  # a direct client took that routing id first
                self.drop_peer(squatter, "its routing id is a router's client's",
                               suspect=False)
            self.routes[inner] = (peer.identity, frame.key)
            peer.inner.add(inner)
        if frame.parts[0][-1:] == bytes((f.FORWARD,)):
            self._fail(inner, ProtocolViolation("FORWARD inside FORWARD"), f.FORWARD, None)
            return
        self.receive(inner, frame.parts, now, inner=True)

    def on_manage(self, peer: Peer, frame: f.Manage, now: float) -> None:
        """A queue or task operation, from the table handed in (zq.manage)."""
        ops = self.operations
        handler = ops.handlers.get(frame.op)
        try:
            if handler is None:
                raise InvalidArgument(f"unknown operation {frame.op!r}; known: "
                                      f"{', '.join(ops.handlers)}")
            queue = frame.args.get("queue")
            if type(queue) is str and frame.op not in ops.read_only \
                    and not frame.op.startswith("move"):
                moved = self.moved_away(queue, frame.req)  # changed at its new broker
                if moved is not None:
                    raise moved
            if frame.op == "declare" and type(queue) is str:
                self.may_create(queue, peer, frame.req)
            if frame.bodies and frame.op != "move_in":
                raise InvalidArgument(f"MANAGE {frame.op!r} takes no body parts")
            if frame.op == "move_in":
                frame.args["bodies"] = frame.bodies
            result = handler(self, frame.args, now, peer, frame.req)
        except ZqError as exc:
            exc.attrs["ref"] = frame.req
            raise
        if result is None:  # answered later (a ``wait``)
            return
        reply = codec.encode(f.ManageReply(frame.req, result))
        if frame.op in ops.at_once:
            self._send(peer.identity, reply)
        else:
            self._after_commit(peer.identity, reply, readonly=frame.op in ops.read_only)


# One handler per frame a client may send in a READY session (the session table admits
# no other): a table rather than a match, one lookup per frame.
_HANDLERS: dict[type[Any], Callable[[Sessions, Peer, Any, float], None]] = {
    f.Publish: lambda c, p, fr, now: (
        c.on_publish(p, fr, now) if fr.opts is None or fr.opts.key is None
        else c.on_topic_publish(p, fr, now)),
    f.Ack: lambda c, p, fr, now: c.on_ack(p, fr),
    f.Credit: lambda c, p, fr, now: c.on_credit(p, fr),
    f.Heartbeat: lambda c, p, fr, now: None,
    f.Nack: lambda c, p, fr, now: c.on_nack(p, fr, now),
    f.Release: lambda c, p, fr, now: c.on_release(p, fr),
    f.Extend: lambda c, p, fr, now: c.on_extend(p, fr, now),
    f.Start: lambda c, p, fr, now: c.on_start(p, fr),
    f.Cancel: lambda c, p, fr, now: c.on_cancel(p, fr),
    f.Hello: lambda c, p, fr, now: c.on_hello(p, fr),
    f.Bye: lambda c, p, fr, now: c.on_bye(p, fr),
    f.Stats: lambda c, p, fr, now: c.on_stats(p, fr),
    f.Manage: lambda c, p, fr, now: c.on_manage(p, fr, now),
    f.Locate: lambda c, p, fr, now: c.on_locate(p, fr),
    f.Forward: lambda c, p, fr, now: c.on_forward(p, fr, now),
}
