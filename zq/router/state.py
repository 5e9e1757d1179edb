"""What a router knows, and the few rules both of its sides use. No I/O.

The state lives here, below the rules: each broker's :class:`Link`, each client's
:class:`ClientSession`, the frames waiting to go out, the counters. The client side
(:mod:`zq.router.clients`) and the broker side (:mod:`zq.router.links`) build on
:class:`RouterState`; :mod:`zq.router.core` joins them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zq.cluster.config import ClusterConfig
from zq.cluster.placement import place
from zq.errors import SessionUnknown, ZqError
from zq.logs import Throttle
from zq.protocol import codec
from zq.protocol import frames as f
from zq.router.config import RouterConfig
from zq.security.bounds import forget
from zq.security.permissions import Permissions

log = logging.getLogger("zq.router")

DOWN = "down"  # no link session: waiting to say HELLO
HELLO_SENT = "hello-sent"  # HELLO out, no WELCOME yet
UP = "up"  # WELCOME received: frames for the broker are forwarded

CONFLICT = ""  # the owner of a name two catalogs list (broker ids are never empty)

# Command parts, compared by identity of value on the hot paths.
CMD = {op: codec.command(op) for op in f.NAMES}

COUNTERS = ("frames_in", "frames_out", "forwarded", "forwarded_publishes", "relayed",
            "errors_sent", "unavailable", "conflicts", "clients_expired",
            "clients_unreachable", "send_failed", "links_lost", "links_renewed",
            "catalog_resets", "configs_adopted", "hello_retries", "dropped",
            "frames_refused", "peers_cut")


@dataclass(slots=True)
class Link:
    """The router's session with one broker of the cluster file."""

    broker_id: str
    endpoint: str
    state: str = DOWN
    connected: bool = False  # the shell has a socket for it (link_connected)
    dialed_at: float = 0.0  # when the shell's socket for it was opened
    renewals: int = 0  # new sockets opened since its last WELCOME (unanswered HELLOs)
    process: str = ""  # WELCOME's ``broker``: a new value after a restart
    max_frame: int = 0  # WELCOME's: the largest message it takes (0: not heard yet)
    announced: int = 0  # the cluster version our latest HELLO said
    session_kept: bool = False  # the broker may hold a link session for us (BYE it first)
    next_hello: float = 0.0
    last_heard: float | None = None
    up_since: float | None = None
    silence_limit: float = 3.0  # seconds without a frame before the link is lost
    catalog: set[bytes] = field(default_factory=set)  # queue names, UTF-8
    moved: dict[bytes, str] = field(default_factory=dict)  # queues it moved away -> to
    # Client frames waiting for the link's WELCOME (it is being opened or reopened).
    held: list[tuple[bytes, list[bytes]]] = field(default_factory=list)
    catalog_seq: int = 0
    # FORWARD frames read from the link (whatever became of them: relayed, an inner
    # WELCOME swallowed, dropped for a client gone), and FORWARD frames handed to its
    # socket (counted when queued for the shell; one the shell fails to send is taken
    # back by link_send_failed): what the broker counts as forwards_out and forwards_in.
    forwarded_in: int = 0
    forwarded_out: int = 0
    errors: int = 0  # ERROR frames and undecodable frames from the broker
    # PUBLISH frames forwarded on the link, and those answered (a CONFIRM entry or an
    # ERROR for a PUBLISH): both start again when the link is lost (clients resend).
    publishes: int = 0
    settled: int = 0
    refused: bool = False  # logged a refusal (CLUSTER_MISMATCH) since the last WELCOME
    # Set when a link to a broker that answers is opened again (a new cluster version,
    # a CATALOG gap, a restart): frames may be forwarded before its WELCOME, since the
    # socket keeps order (BYE, HELLO, then they). None once WELCOME or silence ends it.
    reopened_at: float | None = None

    @property
    def in_flight_publishes(self) -> int:
        return max(0, self.publishes - self.settled)

    @property
    def accepting(self) -> bool:
        """Whether frames for this broker are forwarded (else UNAVAILABLE)."""
        return self.state == UP or self.reopened_at is not None


@dataclass(slots=True)
class ClientSession:
    """A client's READY session at the router (NEW clients have none)."""

    identity: bytes
    hello: list[bytes]  # its HELLO, forwarded verbatim to open each inner session
    last_seen: float
    liveness_s: float
    inner: dict[str, bool] = field(default_factory=dict)  # broker id -> WELCOME seen
    user: str | None = None  # the key it proved at the handshake (CURVE)
    conn: int = -1  # its connection, as the shell knows it (a descriptor)


class RouterState:
    """The state of a router and the rules both sides share."""

    _client_log: Throttle | None = None

    def __init__(self, cfg: RouterConfig, cluster: ClusterConfig, now: float) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.limits = codec.Limits(max_frame=cfg.max_frame)
        self.links: dict[str, Link] = {}
        self.clients: dict[bytes, ClientSession] = {}
        # What the shell sends and does after each event, in order.
        self.to_clients: list[tuple[bytes, list[bytes]]] = []
        self.to_brokers: list[tuple[str, list[bytes]]] = []
        self.link_actions: list[tuple[str, str, str]] = []  # (open|close, broker id, endpoint)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        # Security (zq.router.access): as a broker's core has it.
        self.secure = False
        self.rights: Permissions | None = None
        self.per_key: Counter[str | None] = Counter()
        self.strikes: dict[bytes, int] = {}
        self.noted: list[str] = []
        self.reload_hook: Callable[[], dict[str, Any]] = dict  # the shell's (SIGHUP's)
        self.security_stats: Callable[[], dict[str, Any]] = dict  # the shell's guard
        self._placed: dict[bytes, str] = {}
        self.started = now
        self.next_tick = now + cfg.heartbeat
        for b in cluster.brokers:
            self.add_link(b.id, b.endpoint, now)

    def offer(self, new: ClusterConfig, now: float) -> tuple[bool, str]:
        """Take a newer cluster file (the links' side implements it)."""
        raise NotImplementedError

    # ------------------------------------------------------------ output

    def send_client(self, identity: bytes, parts: list[bytes]) -> None:
        self.to_clients.append((identity, parts))

    def error(self, identity: bytes, exc: ZqError, op: int, ref: Any = None) -> None:
        """An ERROR frame to a client for the request ``op``/``ref``; ``info`` from ``exc``."""
        self.counters["errors_sent"] += 1
        self.to_clients.append((identity, codec.encode(f.Error(
            exc.code, exc.name, exc.message, op, ref, exc.attrs.get("info")))))

    def forward(self, link: Link, key: bytes, parts: list[bytes]) -> None:
        """A client's frame to a broker, undecoded, in a FORWARD; held until the link's
        WELCOME while it is being opened (a frame that reached the broker before the
        link's HELLO would be refused, and a HELLO cannot be queued before the
        connection is made)."""
        if link.state != UP:
            link.held.append((key, parts))
            return
        link.forwarded_out += 1
        self.to_brokers.append((link.broker_id, codec.forward(key, parts)))

    def release_held(self, link: Link) -> None:
        """The link is up: what waited for it goes, in order."""
        held, link.held = link.held, []
        link.forwarded_out += len(held)
        self.to_brokers.extend((link.broker_id, codec.forward(k, p)) for k, p in held)

    # ------------------------------------------------------------ routing

    def catalogued(self, name: bytes) -> str | None:
        """The broker whose catalog lists ``name``, CONFLICT if two do, None if none."""
        found = None
        for bid, link in self.links.items():
            if name in link.catalog:
                if found is not None:
                    return CONFLICT
                found = bid
        return found

    def owner(self, name: bytes) -> str:
        """Where frames for queue ``name`` go: the broker that has it, else where the
        cluster file places it (CONFLICT if two have it). Raises UnicodeDecodeError for
        a name that is not UTF-8 and not in any catalog."""
        found = self.catalogued(name)
        if found is not None:
            return found
        found = self.moved_to(name)
        if found is not None:
            return found
        placed = self._placed.get(name)
        if placed is None:
            placed = place(name.decode(), self.cluster)
            if len(self._placed) >= self.cfg.placements:
                del self._placed[next(iter(self._placed))]  # the oldest goes
            self._placed[name] = placed
        return placed

    def moved_to(self, name: bytes) -> str | None:
        """Where queue ``name`` went, if a broker moved it away and no broker lists it
        (a move under way: its target does not list it until the move is done). Moves
        are followed from broker to broker; a loop means none (placement decides)."""
        links = self.links
        hop = next((ln.moved[name] for ln in links.values() if name in ln.moved), None)
        seen: set[str] = set()
        while hop is not None and hop not in seen:
            seen.add(hop)
            link = links.get(hop)
            if link is None or name not in link.moved:
                return hop
            hop = link.moved[name]
        return None

    def forget_placements(self) -> None:
        self._placed.clear()

    # ------------------------------------------------------------ sessions

    def end_client(self, client: ClientSession, reason: str, skip: str | None = None,
                   bye: list[bytes] | None = None) -> None:
        """Forget a client's session; each broker where it had an inner session (but
        ``skip``) gets a BYE for it: the client's own ``bye``, else one with ``reason``."""
        if self.clients.get(client.identity) is client:
            del self.clients[client.identity]
            forget(self.per_key, client.user)
            self._log_end(client, reason, said_bye=bye is not None)
        if not client.inner:
            return
        if bye is None:
            bye = codec.encode(f.Bye(reason[:200]))
        for bid in client.inner:
            link = self.links.get(bid)
            if bid != skip and link is not None and link.accepting:
                self.forward(link, client.identity, bye)
        client.inner.clear()

    @property
    def client_log(self) -> Throttle:
        """Warnings about clients whose session ended badly: one line each, a flood
        summed up."""
        if self._client_log is None:
            self._client_log = Throttle(log, "client_dropped",
                                        "%d more client session(s) ended: %s")
        return self._client_log

    def _log_end(self, client: ClientSession, reason: str, said_bye: bool) -> None:
        fields: dict[str, Any] = {"identity": client.identity.hex(), "key": client.user}
        if said_bye or reason == "the client said HELLO again":
            log.info("client %s left: %s", client.identity.hex(), reason,
                     extra={"event": "client_left", "reason": reason, **fields})
        else:
            self.client_log.say("client %s dropped: %s", client.identity.hex(), reason,
                                reason=reason, **fields)

    def lose_clients(self, link: Link, reason: str) -> None:
        """Every client with an inner session at ``link``'s broker gets SESSION_UNKNOWN
        and its session ends: it says HELLO again and resends what has no answer (what
        waited for the link is dropped: those clients resend it)."""
        link.held.clear()
        exc = SessionUnknown(f"broker {link.broker_id} was lost ({reason}): say HELLO again")
        for client in [c for c in self.clients.values() if link.broker_id in c.inner]:
            self.error(client.identity, exc, 0, None)
            self.end_client(client, f"broker {link.broker_id} lost", skip=link.broker_id)

    def add_link(self, broker_id: str, endpoint: str, now: float) -> Link:
        link = self.links[broker_id] = Link(broker_id, endpoint, next_hello=now,
                                            silence_limit=self.cfg.heartbeat * self.cfg.liveness)
        # Frames go behind its first HELLO (the socket keeps order), as for a reopened
        # link: clients that reconnect to a restarted router before its links are up get
        # their frames through, not UNAVAILABLE; no WELCOME within the silence limit and
        # they are told their session is lost (and resend).
        link.reopened_at = now
        self.link_actions.append(("open", broker_id, endpoint))
        return link

    def say_hello(self, link: Link, now: float) -> None:
        """Open the link session: BYE first if the broker may still hold an old one (a
        second HELLO in one session would be a protocol violation), then HELLO."""
        if link.session_kept:
            self.to_brokers.append((link.broker_id, codec.encode(f.Bye("link reopened"))))
        cfg = self.cfg
        link.announced = self.cluster.version
        self.to_brokers.append((link.broker_id, codec.encode(f.Hello(
            name=f"router {cfg.id}", heartbeat_ms=int(cfg.heartbeat * 1000),
            link={"cluster": self.cluster.cluster_id, "version": self.cluster.version,
                  "router": cfg.id}))))
        link.session_kept = True
        link.state = HELLO_SENT
        link.next_hello = now + cfg.heartbeat

    def reset_link(self, link: Link, reason: str, now: float, hello_now: bool = True,
                   answering: bool = True) -> None:
        """The link session is over (or must be): its clients are lost, and a new one is
        opened now (``hello_now``) or at the next heartbeat. If the broker is
        ``answering``, frames for it are forwarded at once, behind the new HELLO."""
        was_up, was_answering = link.state == UP, link.reopened_at is not None
        if was_up:
            self.counters["links_lost"] += 1
            log.warning("link to broker %s lost: %s", link.broker_id, reason,
                        extra={"event": "link_down", "broker": link.broker_id,
                               "reason": reason})
        self.lose_clients(link, reason)
        link.state = DOWN
        link.publishes = link.settled = 0  # their clients resend them, or were told
        link.up_since = None
        link.reopened_at = None
        link.next_hello = now if hello_now else now + self.cfg.heartbeat
        if link.connected and hello_now:
            self.say_hello(link, now)
            if answering and (was_up or was_answering):
                link.reopened_at = now
