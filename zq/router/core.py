"""``RouterCore``: a router of PROTOCOL.md section 17 with no I/O and no clock.

The shell (:mod:`zq.router.process`) feeds it events, each with the time ``now``:

* :meth:`~zq.router.clients.ClientSide.from_client` ``(identity, parts, now)``: a
  message from a client, the ROUTER envelope split off;
* :meth:`~zq.router.links.LinkSide.from_broker` ``(broker_id, parts, now)``: a message
  from a broker's link;
* :meth:`~zq.router.links.LinkSide.link_connected` ``(broker_id, now)``: the shell
  opened the socket of a link it was asked to open;
* :meth:`tick` ``(now)``, once :meth:`next_deadline` has come: heartbeats, silent
  clients and brokers, links to open again (a link whose HELLO goes unanswered for its
  silence limit is closed and opened again: a new connection);
* :meth:`~zq.router.links.LinkSide.offer` ``(cluster, now)``: the cluster file, read again;
* send failures: :meth:`client_unreachable`, :meth:`client_send_failed`,
  :meth:`~zq.router.links.LinkSide.link_send_failed`.

After each event the shell sends, in order, ``to_clients`` (``(identity, parts)``)
and ``to_brokers`` (``(broker_id, parts)``), and carries out ``link_actions``
(``("open", broker_id, endpoint)``, ``("close", broker_id, "")``); :meth:`take`
hands the two frame lists over.
"""

from __future__ import annotations

from zq.cluster.config import ClusterConfig
from zq.protocol import codec
from zq.protocol import frames as f
from zq.router.clients import ClientSide
from zq.router.config import RouterConfig
from zq.router.links import LinkSide
from zq.router.state import CMD, DOWN, HELLO_SENT, UP, Link, log

_HEARTBEAT = CMD[f.HEARTBEAT]
_NIL = b"\xc0"


class RouterCore(ClientSide, LinkSide):
    """The router's state and rules; see the module docstring for its events."""

    def __init__(self, cfg: RouterConfig, cluster: ClusterConfig, now: float) -> None:
        super().__init__(cfg, cluster, now)

    def take(self) -> tuple[list[tuple[bytes, list[bytes]]], list[tuple[str, list[bytes]]]]:
        """The frames to send now: to clients, to brokers."""
        clients, brokers = self.to_clients, self.to_brokers
        self.to_clients, self.to_brokers = [], []
        self.counters["frames_out"] += len(clients)
        return clients, brokers

    def next_deadline(self) -> float:
        """When :meth:`tick` has work: the next heartbeat, or a link's next HELLO."""
        when = self.next_tick
        for link in self.links.values():
            if link.connected and link.state != UP and link.next_hello < when:
                when = link.next_hello
        return when

    def tick(self, now: float) -> None:
        """Heartbeats and silence (once per interval), and HELLOs that are due."""
        if now >= self.next_tick:
            self.next_tick = now + self.cfg.heartbeat
            self.flush_logs()
            self._beat_clients(now)
            self._beat_links(now)
        for link in list(self.links.values()):
            if link.connected and link.state != UP and now >= link.next_hello:
                self.say_hello(link, now)

    def _beat_clients(self, now: float) -> None:
        """A HEARTBEAT to every client; a client silent past its liveness is forgotten
        and its BYE goes on to the brokers of its inner sessions."""
        beat = [_HEARTBEAT, _NIL]
        for client in list(self.clients.values()):
            if now - client.last_seen > client.liveness_s:
                self.counters["clients_expired"] += 1
                self.end_client(client, "the client fell silent")
            else:
                self.to_clients.append((client.identity, beat))

    def _beat_links(self, now: float) -> None:
        beat = [_HEARTBEAT, _NIL]
        for link in list(self.links.values()):
            if link.reopened_at is not None and now - link.reopened_at > link.silence_limit:
                # No WELCOME: what was forwarded behind the HELLO has no answer coming.
                link.reopened_at = None
                self.lose_clients(link, "it did not answer the link's new HELLO")
            if link.state == HELLO_SENT and link.connected and now - max(
                    link.last_heard or 0.0, link.dialed_at) > link.silence_limit:
                self._renew(link, now)
            if link.state != UP:
                continue
            heard = link.last_heard if link.last_heard is not None else now
            if now - heard > link.silence_limit:
                self.reset_link(link, f"silent for {now - heard:.1f} s", now, answering=False)
            else:
                self.to_brokers.append((link.broker_id, beat))

    def _renew(self, link: Link, now: float) -> None:
        """A new socket, so a new connection, for a link whose HELLO had no answer and
        that heard nothing for its silence limit. The connection may be dead without
        either side knowing (a half-open TCP connection: a firewall or NAT that forgot
        it drops its packets, and TCP gives up only after many minutes), or its stream
        broken: HELLOs said on it again and again would never get there. A broker that
        is merely down costs a socket per silence limit. The new socket has a new
        routing id: no BYE is owed, the broker's old link session ends by its liveness."""
        link.renewals += 1
        (log.warning if link.renewals == 1 else log.debug)(
            "link to broker %s: no answer for %.1f s, opening a new connection (%d)",
            link.broker_id, now - max(link.last_heard or 0.0, link.dialed_at), link.renewals)
        self.counters["links_renewed"] += 1
        link.state = DOWN
        link.publishes = link.settled = 0
        link.connected = False
        link.session_kept = False
        link.dialed_at = now
        self.link_actions += [("close", link.broker_id, ""), ("open", link.broker_id,
                                                              link.endpoint)]

    def client_unreachable(self, identity: bytes) -> None:
        """A send to ``identity`` found no connection: the client is gone."""
        self.counters["clients_unreachable"] += 1
        client = self.clients.get(identity)
        if client is not None:
            self.end_client(client, "the client is unreachable")

    def client_send_failed(self, identity: bytes) -> None:
        """A frame for ``identity`` was dropped: its send queue is full."""
        self.counters["send_failed"] += 1

    def close(self, reason: str) -> None:
        """Shut down: BYE to every client and on every link (which ends the inner
        sessions with it); nothing is known after."""
        bye = codec.encode(f.Bye(reason))
        for identity in self.clients:
            self.to_clients.append((identity, bye))
        self.clients.clear()
        for link in self.links.values():
            if link.session_kept and link.connected:
                self.to_brokers.append((link.broker_id, bye))
            link.session_kept = False
            link.state = DOWN
        self.flush_logs()
        log.info("router %s closed: %s", self.cfg.id, reason)
