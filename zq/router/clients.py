"""The router's client side: each frame a client sends, as PROTOCOL.md section 17.3 says.

No I/O. A PUBLISH from a READY client is routed by its queue name (frame 1) alone and
forwarded as it came: its header and bodies are never decoded on that path, only when
it must be refused (to find the ``seq`` its ERROR names). Every other frame is small
and decoded in full, checked as in section 4.2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zq.cluster.config import ClusterConfig
from zq.errors import (
    Forbidden,
    FrameTooLarge,
    InternalError,
    InvalidArgument,
    Moved,
    ProtocolViolation,
    QueueConflict,
    Unavailable,
    ZqError,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.limits import FATAL_NAMES, MAX_HEARTBEAT, MAX_QUEUE_NAME
from zq.protocol.names import manage_target
from zq.protocol.session import State, next_state
from zq.router.access import RouterAccess
from zq.router.state import CMD, CONFLICT, ClientSession
from zq.router.stats import router_stats

_PUBLISH = CMD[f.PUBLISH]
_HEARTBEAT_NIL = b"\xc0"  # msgpack nil: the whole header of a HEARTBEAT


class ClientSide(RouterAccess):
    """Frames from clients (the ROUTER socket they connect to)."""

    def from_client(self, identity: bytes, parts: list[bytes], now: float,
                    user: str | None = None) -> None:
        """One multipart message from client ``identity`` (the envelope split off);
        ``user``: the key its connection proved (with CURVE)."""
        self.counters["frames_in"] += 1
        cmd = parts[0] if parts else b""
        client = self.clients.get(identity)
        if self.secure and user is None:  # no proven key (cannot be, with ZAP running)
            self.counters["frames_refused"] += 1
            self.error(identity, Forbidden("no proven key"), 0)
            return
        if client is not None:
            if self.secure and client.user != user:
                self.counters["frames_refused"] += 1
                self.error(identity, Forbidden("this session belongs to another key"), 0)
                return
            if cmd == _PUBLISH:
                self._publish(client, parts, now)
                return
            if cmd == CMD[f.HEARTBEAT] and len(parts) == 2 and parts[1] == _HEARTBEAT_NIL:
                client.last_seen = now
                return
        self._frame(identity, client, parts, now, user)

    # ---------------------------------------------------------------- PUBLISH

    def _publish(self, client: ClientSession, parts: list[bytes], now: float) -> None:
        """Route by frame 1 only; anything odd is left to the full decode of _refuse."""
        if len(parts) < 4 or not 0 < len(parts[1]) <= MAX_QUEUE_NAME:
            self._refuse(client, parts, None)
            return
        size = 0
        for p in parts:
            size += len(p)
        if size > self.cfg.max_frame:
            self._refuse(client, parts, None)
            return
        try:
            bid = self.owner(parts[1])
        except UnicodeDecodeError:
            self._refuse(client, parts, None)  # MALFORMED_FRAME, from the decoder
            return
        exc: ZqError | None = (self.may_publish(client, parts[1])
                               if self.rights is not None else None)
        if exc is None:
            exc = self._to_owner(client, parts[1], bid, parts)
        if exc is None:
            client.last_seen = now
            self.counters["forwarded_publishes"] += 1
            self.links[bid].publishes += 1
        else:
            self._refuse(client, parts, exc)

    def _refuse(self, client: ClientSession, parts: list[bytes], exc: ZqError | None) -> None:
        """Answer a PUBLISH with ``exc`` (op PUBLISH, ref its seq); decoding it here finds
        the seq, and the error of a frame that is broken besides."""
        try:
            frame = codec.decode(parts, self.limits)
        except ZqError as bad:
            self._failed(client.identity, bad, f.PUBLISH)
            return
        seq = frame.seq if isinstance(frame, f.Publish) else None
        if exc is None:  # unreachable: every check of the hot path is also the decoder's
            exc = InternalError("the router refused a PUBLISH it could decode")
        self.error(client.identity, exc, f.PUBLISH, seq)

    def _to_owner(self, client: ClientSession, name: bytes, bid: str, parts: list[bytes]
                  ) -> ZqError | None:
        """Forward ``parts`` to broker ``bid``, first opening the client's inner session
        there with its own HELLO; or the error that refuses it."""
        if bid == CONFLICT:
            self.counters["conflicts"] += 1
            holders = sorted(b for b, link in self.links.items() if name in link.catalog)
            return QueueConflict(
                f"queue {name.decode(errors='replace')!r} is on brokers {', '.join(holders)}; "
                f"it is refused until an operator deletes one",
                info={"queue": name.decode(errors="replace"), "brokers": holders})
        link = self.links.get(bid)
        if link is None or not link.accepting:
            self.counters["unavailable"] += 1
            return Unavailable(f"broker {bid}, which holds the queue, cannot be reached now",
                               info={"broker": bid})
        limit = link.max_frame
        if limit and limit < self.cfg.max_frame and sum(map(len, parts)) > limit:
            # Forwarded, it would be refused there, or cut the link (a part past the
            # broker's MAXMSGSIZE closes the connection, with every frame on it).
            return FrameTooLarge(f"message exceeds {limit} bytes, the max_frame of broker "
                                 f"{bid}, which holds the queue", limit=limit)
        if bid not in client.inner:
            client.inner[bid] = False
            self.forward(link, client.identity, client.hello)
        self.forward(link, client.identity, parts)
        self.counters["forwarded"] += 1
        return None

    # ---------------------------------------------------------------- the others

    def _frame(self, identity: bytes, client: ClientSession | None, parts: list[bytes],
               now: float, user: str | None = None) -> None:
        """Any frame but a READY client's PUBLISH: decoded and checked in full."""
        try:
            frame = codec.decode(parts, self.limits)
        except ZqError as exc:
            self._failed(identity, exc, _opcode(parts))
            return
        op = f.OPCODES[type(frame)]
        if type(frame) is f.Hello:
            self.on_hello(identity, client, frame, now, user)
            return
        if client is None:
            if op != f.BYE:  # a BYE from a client without a session is ignored
                try:
                    next_state(State.NEW, op)
                except ZqError as exc:
                    self.error(identity, exc, op)
            return
        handler = _HANDLERS.get(type(frame))
        if handler is None:  # a frame only brokers send, or a FORWARD
            self._failed(identity, ProtocolViolation(
                f"{f.NAMES[op]} is not allowed from a client of a router"), op)
            return
        client.last_seen = now
        try:
            if self.rights is not None:
                self.authorize(client, frame)
            handler(self, client, frame, parts, now)
        except ZqError as exc:
            self._failed(identity, exc, op)

    def _failed(self, identity: bytes, exc: ZqError, op: int) -> None:
        """ERROR for a refused frame (``ref`` from ``exc``); a fatal one ends the session,
        and past the sender's budget of them, it gets no ERROR: its connection is closed."""
        fatal = exc.name in FATAL_NAMES
        if fatal and not self.strike(identity):
            client = self.clients.get(identity)
            if client is not None:
                self.end_client(client, f"protocol error at the router: {exc.name}")
            return
        self.error(identity, exc, exc.attrs.get("op", op) or op, exc.attrs.get("ref"))
        client = self.clients.get(identity)
        if client is not None and exc.name in FATAL_NAMES:
            self.end_client(client, f"protocol error at the router: {exc.name}")

    def welcome(self) -> f.Welcome:
        cfg = self.cfg
        return f.Welcome(f"router:{cfg.id}", int(cfg.heartbeat * 1000), cfg.liveness,
                         1000, 100_000, cfg.max_frame,
                         cluster={"id": self.cluster.cluster_id,
                                  "version": self.cluster.version, "node": cfg.id,
                                  "role": "router"})

    def on_hello(self, identity: bytes, client: ClientSession | None, frame: f.Hello,
                 now: float, user: str | None = None) -> None:
        if frame.link is not None:
            self._failed(identity, ProtocolViolation(
                "a link HELLO to a router: routers link only to brokers"), f.HELLO)
            return
        if client is not None:  # a new session replaces the open one
            self.end_client(client, "the client said HELLO again")
        beat = min(max(self.cfg.heartbeat, frame.heartbeat_ms / 1000.0), MAX_HEARTBEAT)
        try:
            self.new_client(identity, frame, now, beat * self.cfg.liveness, user)
        except ZqError as exc:
            self.error(identity, exc, f.HELLO)
            return
        self.send_client(identity, codec.encode(self.welcome()))

    def on_bye(self, client: ClientSession, frame: f.Bye, parts: list[bytes],
               now: float) -> None:
        self.end_client(client, frame.reason, bye=parts)

    def on_manage(self, client: ClientSession, frame: f.Manage, parts: list[bytes],
                  now: float) -> None:
        if frame.op == "cluster_config":  # zq cluster reload: the router's own file
            self._take_config(client, frame, now)
            return
        if frame.op == "reload":  # zq admin reload: keys, permissions, cluster file
            self.send_client(client.identity, codec.encode(f.ManageReply(
                frame.req, self.reload_hook())))
            return
        queue = manage_target(frame.op, frame.args)
        if frame.op == "explain":
            raise InvalidArgument("explain goes to the broker that numbered the message (each "
                                  "broker numbers its own), not through a router: use "
                                  "--endpoint with that broker's address", ref=frame.req)
        if queue is None:
            raise InvalidArgument(f"MANAGE {frame.op!r} through a router must name a queue "
                                  f"(args.queue; a stream's args.stream, a topic's "
                                  f"args.topic); send it to a broker directly", ref=frame.req)
        name = queue.encode()
        exc = self._to_owner(client, name, self.owner(name), parts)
        if exc is not None:
            exc.attrs["ref"] = frame.req
            raise exc

    def _take_config(self, client: ClientSession, frame: f.Manage, now: float) -> None:
        raw = frame.args.get("config")
        try:
            if not isinstance(raw, dict):
                raise ValueError("cluster_config needs 'config', the cluster file as a map")
            new = ClusterConfig.from_dict(raw)
        except ValueError as exc:
            raise InvalidArgument(f"cluster file not valid: {exc}", ref=frame.req) from None
        _, outcome = self.offer(new, now)
        self.send_client(client.identity, codec.encode(f.ManageReply(
            frame.req, {"node": self.cfg.id, "version": self.cluster.version,
                        "outcome": outcome})))

    def on_locate(self, client: ClientSession, frame: f.Locate, parts: list[bytes],
                  now: float) -> None:
        bid, exists = self._where(frame.queue, frame.req, f.LOCATE)
        loc = {"queue": frame.queue, "broker": bid, "endpoint": self._endpoint(bid),
               "version": self.cluster.version, "exists": exists}
        self.send_client(client.identity, codec.encode(f.Location(frame.req, loc)))

    def on_credit(self, client: ClientSession, frame: f.Credit, parts: list[bytes],
                  now: float) -> None:
        bid, _ = self._where(frame.queue, frame.queue, f.CREDIT)
        info = {"queue": frame.queue, "broker": bid, "endpoint": self._endpoint(bid),
                "version": self.cluster.version}
        raise Moved(f"consume {frame.queue!r} from broker {bid} at {info['endpoint']} "
                    f"directly, not through a router", ref=frame.queue, info=info)

    def on_delivery_frame(self, client: ClientSession, frame: Any, parts: list[bytes],
                          now: float) -> None:
        """ACK, NACK, RELEASE, EXTEND, START, CANCEL: deliveries come from brokers."""
        ref = frame.ids if type(frame) in (f.Ack, f.Nack, f.Release, f.Extend) else None
        raise InvalidArgument("deliveries come from brokers, not routers: settle and "
                              "cancel on the broker that delivered", ref=ref)

    def on_stats(self, client: ClientSession, frame: f.Stats, parts: list[bytes],
                 now: float) -> None:
        self.send_client(client.identity,
                         codec.encode(f.StatsReply(frame.req, router_stats(self, now))))

    def _where(self, queue: str, ref: Any, op: int) -> tuple[str, bool]:
        """The broker that has ``queue`` (True) or would get it (False)."""
        name = queue.encode()
        found = self.catalogued(name)
        if found == CONFLICT:
            self.counters["conflicts"] += 1
            raise QueueConflict(f"queue {queue!r} is on two brokers", ref=ref)
        if found is not None:
            return found, True
        moved = self.moved_to(name)  # being moved there: it exists, not listed yet
        return (moved, True) if moved is not None else (self.owner(name), False)

    def _endpoint(self, bid: str) -> str:
        entry = self.cluster.broker(bid)
        return entry.endpoint if entry is not None else ""


def _opcode(parts: list[bytes]) -> int:
    cmd = parts[0] if parts else b""
    return cmd[3] if len(cmd) == 4 and cmd[:2] == f.SIGNATURE else 0


_Handler = Callable[[ClientSide, ClientSession, Any, list[bytes], float], None]

# What a READY client may send to a router; any other frame is PROTOCOL_VIOLATION.
_HANDLERS: dict[type[Any], _Handler] = {
    f.Heartbeat: lambda r, c, fr, parts, now: None,
    f.Bye: ClientSide.on_bye,
    f.Publish: lambda r, c, fr, parts, now: r._publish(c, parts, now),
    f.Manage: ClientSide.on_manage,
    f.Locate: ClientSide.on_locate,
    f.Credit: ClientSide.on_credit,
    f.Stats: ClientSide.on_stats,
    **dict.fromkeys((f.Ack, f.Nack, f.Release, f.Extend, f.Start, f.Cancel),
                    ClientSide.on_delivery_frame),
}
