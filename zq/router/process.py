"""``zq router``: the asyncio shell around :class:`zq.router.core.RouterCore`.

One ROUTER socket for clients and one DEALER socket per broker of the cluster file.
The loop wakes on any socket's file descriptor (or a timer), drains every socket
without awaiting each message, lets the core decide, and sends everything before it
waits again. The descriptors are edge-triggered: after sending, each socket is asked
whether it is readable before the loop sleeps.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import zmq

from zq.broker import run_loop
from zq.cluster.config import ClusterConfig, load
from zq.router.config import RouterConfig
from zq.router.core import RouterCore
from zq.router.state import UP
from zq.transport import Alarm, fd, readable, recv_parts, send_parts

log = logging.getLogger("zq.router")

_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_NOBLOCK = int(zmq.NOBLOCK)
Socket = zmq.Socket[bytes]


class Router:
    """The router's event loop. ``context``: the ZeroMQ context to open sockets in (by
    default one of its own, terminated when :meth:`run` returns)."""

    def __init__(self, cfg: RouterConfig, cluster: ClusterConfig, *,
                 context: zmq.Context[Socket] | None = None) -> None:
        self.cfg = cfg
        self.core = RouterCore(cfg, cluster, time.monotonic())
        self.endpoint = ""
        self._given_ctx = context
        self._ctx: zmq.Context[Socket] | None = None
        self._sock: Socket | None = None
        self._links: dict[str, Socket] = {}
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._linger_ms = 0
        self._alarm = Alarm(self._wake)
        self._on_ready: Callable[[str], None] | None = None
        self._ready_by: float | None = None  # None once ready was announced

    def request_stop(self) -> None:
        """Begin a graceful shutdown (SIGTERM, SIGINT)."""
        self._stop_requested = True
        self._wake.set()

    def request_reload(self) -> None:
        """Read the cluster file again (SIGHUP)."""
        self._reload_requested = True
        self._wake.set()

    async def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Bind, open the links, announce readiness, and serve until stopped."""
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        ctx: zmq.Context[Socket] = zmq.Context() if self._given_ctx is None else self._given_ctx
        sock = ctx.socket(zmq.ROUTER)
        self._ctx, self._sock = ctx, sock
        try:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, cfg.send_hwm)
            sock.setsockopt(zmq.RCVHWM, cfg.send_hwm)
            sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame)
            sock.setsockopt(zmq.BACKLOG, 1024)
            sock.bind(cfg.bind)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            loop.add_reader(fd(sock), self._wake.set)
            try:
                self._flush(loop, sock)  # opens the links: each says HELLO
                self._on_ready = on_ready
                self._ready_by = time.monotonic() + cfg.heartbeat
                await self._serve(loop, sock)
            finally:
                loop.remove_reader(fd(sock))
                for bid in list(self._links):
                    self._close_link(loop, bid)
        finally:
            self._alarm.cancel()
            sock.close(linger=self._linger_ms)
            if ctx is not self._given_ctx:
                ctx.term()

    async def _serve(self, loop: asyncio.AbstractEventLoop, sock: Socket) -> None:
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stop_requested:
                self.core.close("router shutting down")
                self._flush(loop, sock)
                self._linger_ms = int(self.cfg.shutdown_linger * 1000)
                log.info("stopped: %s", self.core.counters)
                return
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            self._pass(loop, sock)

    def _pass(self, loop: asyncio.AbstractEventLoop, sock: Socket) -> None:
        core = self.core
        # time.monotonic, not loop.time: uvloop's clock moves in millisecond steps.
        now = time.monotonic()
        more = self._drain(sock, lambda m: core.from_client(m[0], m[1:], now))
        for bid, link in list(self._links.items()):
            more |= self._drain(link, functools.partial(core.from_broker, bid, now=now))
        now = time.monotonic()
        if now >= core.next_deadline():
            core.tick(now)
        self._flush(loop, sock)
        if more or readable(sock) or any(readable(s) for s in self._links.values()):
            self._wake.set()
        when = core.next_deadline()
        if self._ready_by is not None:
            self._announce(now)
            if self._ready_by is not None:
                when = min(when, self._ready_by)
        self._alarm.arm(loop, when)

    def _announce(self, now: float) -> None:
        """Say ready once every link is up, or after one heartbeat if some broker does
        not answer (the router serves the others meanwhile): so that a client that
        starts on the ready line does not find the links still opening."""
        assert self._ready_by is not None
        links = self.core.links.values()
        if now < self._ready_by and not all(link.state == UP for link in links):
            return
        self._ready_by = None
        if self._on_ready is not None:
            self._on_ready(self.endpoint)
        core = self.core
        log.info("router %s ready on %s (cluster %s version %d; links up: %s)", self.cfg.id,
                 self.endpoint, core.cluster.cluster_id, core.cluster.version,
                 ", ".join(b for b, link in core.links.items() if link.state == UP) or "none")

    def _drain(self, sock: Socket, handle: Callable[[list[bytes]], None]) -> bool:
        """Read up to ``drain_max`` messages without waiting; True if more may wait."""
        limit = self.cfg.drain_max
        for _ in range(limit):
            try:
                msg = recv_parts(sock)
            except zmq.Again:
                return False
            try:
                handle(msg)
            except Exception:  # a bug: log it, and keep serving everybody else
                log.exception("handling a %d-part message failed", len(msg))
        return True

    def _flush(self, loop: asyncio.AbstractEventLoop, sock: Socket) -> None:
        """Send what the core produced and open or close the links it asks for; sends
        may produce more (a failed send is answered), so until nothing is left."""
        core = self.core
        while True:
            clients, brokers = core.take()
            actions, core.link_actions = core.link_actions, []
            if not (clients or brokers or actions):
                return
            self._send_clients(sock, clients)
            self._send_brokers(brokers)
            for kind, bid, endpoint in actions:
                if kind == "open":
                    self._open_link(loop, bid, endpoint)
                else:
                    self._close_link(loop, bid)

    def _send_clients(self, sock: Socket, out: list[tuple[bytes, list[bytes]]]) -> None:
        core = self.core
        send = sock.send
        for identity, parts in out:
            # ROUTER queues a message whole, so Again or EHOSTUNREACH can only come with
            # the first part (the peer's identity), before anything was queued.
            try:
                send(identity, _MORE)
                send_parts(sock, parts, _NOBLOCK)
            except zmq.Again:
                core.client_send_failed(identity)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    core.client_unreachable(identity)
                else:
                    log.error("send to client %s failed: %s", identity.hex(), exc)
                    core.client_send_failed(identity)

    def _send_brokers(self, out: list[tuple[str, list[bytes]]]) -> None:
        core = self.core
        links = self._links
        now = time.monotonic()
        for bid, parts in out:
            link = links.get(bid)
            if link is None:  # closed, or never opened
                core.counters["dropped"] += 1
                continue
            try:
                send_parts(link, parts, _NOBLOCK)
            except zmq.Again:  # no connection (IMMEDIATE), or its queue is full
                core.link_send_failed(bid, parts, now)
            except zmq.ZMQError as exc:
                log.error("send to broker %s failed: %s", bid, exc)
                core.link_send_failed(bid, parts, now)

    def _open_link(self, loop: asyncio.AbstractEventLoop, bid: str, endpoint: str) -> None:
        assert self._ctx is not None
        cfg = self.cfg
        link = self._ctx.socket(zmq.DEALER)
        link.setsockopt(zmq.ROUTING_ID, f"zqr-{cfg.id}-{os.urandom(4).hex()}".encode())
        link.setsockopt(zmq.LINGER, 0)
        # Queue only on a live connection: a HELLO sent while the broker is down fails
        # now (and is tried again) instead of piling up and arriving as a burst of
        # HELLOs, each but the first a protocol violation, when the broker is back.
        link.setsockopt(zmq.IMMEDIATE, 1)
        link.setsockopt(zmq.SNDHWM, cfg.send_hwm)
        link.setsockopt(zmq.RCVHWM, cfg.send_hwm)
        link.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame)
        try:
            link.connect(endpoint)
        except zmq.ZMQError as exc:
            log.error("cannot connect to broker %s at %s: %s", bid, endpoint, exc)
            link.close(linger=0)
            return
        self._links[bid] = link
        loop.add_reader(fd(link), self._wake.set)
        self.core.link_connected(bid, time.monotonic())

    def _close_link(self, loop: asyncio.AbstractEventLoop, bid: str) -> None:
        link = self._links.pop(bid, None)
        if link is not None:
            loop.remove_reader(fd(link))
            link.close(linger=self._linger_ms)

    def _reload(self) -> None:
        path = self.cfg.cluster
        try:
            new = load(path)
        except ValueError as exc:
            log.error("SIGHUP: cluster file not reloaded: %s", exc)
            return
        taken, what = self.core.offer(new, time.monotonic())
        (log.info if taken else log.warning)("SIGHUP: cluster file %s %s", path, what)


def serve(cfg: RouterConfig, cluster: ClusterConfig | None = None, *,
          print_ready: bool = True) -> int:
    """Run a router until SIGTERM or SIGINT; return the process exit code."""
    if cluster is None:
        try:
            cluster = load(cfg.cluster)
        except ValueError as exc:
            log.error("cannot start router: %s", exc)
            return 2
    ready_cluster = cluster

    async def main() -> None:
        router = Router(cfg, ready_cluster)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, router.request_stop)
        loop.add_signal_handler(signal.SIGHUP, router.request_reload)

        def ready(endpoint: str) -> None:
            if print_ready:
                sys.stdout.write(f"ZQ READY {endpoint}\n")
                sys.stdout.flush()

        await router.run(ready)

    try:
        run_loop(main())
    except zmq.ZMQError as exc:
        log.error("cannot start router on %s: %s", cfg.bind, exc)
        return 2
    return 0
