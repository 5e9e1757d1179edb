"""``zq router``: the asyncio shell around :class:`zq.router.core.RouterCore`.

One ROUTER socket for clients and one DEALER socket per broker of the cluster file.
Each socket's file descriptor has a reader callback of its own that drains that socket
(and only it) without awaiting each message, lets the core decide, and sends what the
core produced before it returns: a frame is forwarded in the loop turn it was read in.
Timers (heartbeats, HELLOs due) ring from an :class:`~zq.transport.Alarm`. The
descriptors are edge-triggered: after sending on a socket, it is asked whether it is
readable, and read in the next turn if so.

Why callbacks, and not one task woken by an event as in the broker (which has commits
to wait for): each pass of that task cost a future, a task switch, an empty read of
every socket that had not woken and a readability check of each, 10 system calls per
message more than now; the router then added 0.2 ms at p50 to publish->deliver with
a memory broker, now 0.15, where the thinnest Python hop adds 0.12 (perf/hop.py;
perf/RESULTS.md, "Federation").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import zmq

from zq.broker import run_loop
from zq.cluster.config import ClusterConfig, load
from zq.router.config import RouterConfig
from zq.router.core import RouterCore
from zq.router.sockets import Socket, client_socket, link_socket, send_brokers, send_clients
from zq.router.state import UP
from zq.security.curve import ClientKeys
from zq.security.guard import Guard, raise_fd_limit
from zq.security.keys import server_key
from zq.transport import Alarm, fd, recv_frames, user_of

if TYPE_CHECKING:
    from zq.admin.http import AdminServer

log = logging.getLogger("zq.router")

_CLIENTS = ""  # the key of the clients' socket among the links' broker ids (never empty)


class Router:
    """The router's event loop. ``context``: the ZeroMQ context to open sockets in (by
    default one of its own, terminated when :meth:`run` returns)."""

    def __init__(self, cfg: RouterConfig, cluster: ClusterConfig, *,
                 context: zmq.Context[Socket] | None = None) -> None:
        self.cfg = cfg
        self.core = RouterCore(cfg, cluster, time.monotonic())
        self.guard = Guard(cfg, "router")
        self.core.secure, self.core.rights = self.guard.secure, self.guard.rights
        self.core.reload_hook = self._reload
        self.core.security_stats = self.guard.stats
        own = self.guard.keys  # the links authenticate with the router's own key pair
        self._link_keys = None if own is None else ClientKeys(
            own.public, own.secret, server_key(cfg.server_key) if cfg.server_key else own.public)
        self.endpoint = ""
        self._given_ctx = context
        self._ctx: zmq.Context[Socket] | None = None
        self._sock: Socket | None = None
        self._links: dict[str, Socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None  # set when serving must end
        self._stop_requested = False
        self._linger_ms = 0
        self._alarm = Alarm(lambda: self._event(None))
        self.admin: AdminServer | None = None  # the admin listener (--admin-bind), if any
        self._soon: set[str] = set()  # sockets to read in the next turn (_CLIENTS, ids)
        self._on_ready: Callable[[str], None] | None = None
        self._ready_by: float | None = None  # None once ready was announced
        self._leaders: dict[str, str] = {}  # --ha: replicated broker ids' primaries

    def request_stop(self) -> None:
        """Begin a graceful shutdown (SIGTERM, SIGINT)."""
        self._stop_requested = True
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def request_reload(self) -> None:
        """Read the cluster file again (SIGHUP)."""
        if self._loop is not None:
            self._loop.call_soon(self._event, None, self._reload)

    async def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Bind, open the links, announce readiness, and serve until stopped."""
        loop = self._loop = asyncio.get_running_loop()
        cfg = self.cfg
        ctx: zmq.Context[Socket] = zmq.Context() if self._given_ctx is None else self._given_ctx
        try:
            sock = client_socket(ctx, cfg, self.guard, loop)
        except zmq.ZMQError:
            self.guard.close()
            if ctx is not self._given_ctx:
                ctx.term()
            raise
        self._ctx, self._sock = ctx, sock
        self._done = loop.create_future()
        try:
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            on_ready = await self._start_admin(on_ready)
            loop.add_reader(fd(sock), self._event, _CLIENTS)
            try:
                self._on_ready = on_ready
                self._ready_by = time.monotonic() + cfg.heartbeat
                self._event(_CLIENTS)  # opens the links: each says HELLO
                if self._stop_requested and not self._done.done():
                    self._done.set_result(None)
                async with self._primaries():
                    await self._done
                self.core.close("router shutting down")
                self._flush()
                self._linger_ms = int(cfg.shutdown_linger * 1000)
                log.info("stopped: %s", self.core.counters)
            finally:
                loop.remove_reader(fd(sock))
                for bid in list(self._links):
                    self._close_link(bid)
        finally:
            self._alarm.cancel()
            if self.admin is not None:
                await self.admin.close()
            self.guard.close()
            sock.close(linger=self._linger_ms)
            if ctx is not self._given_ctx:
                ctx.term()

    async def _start_admin(self, on_ready: Callable[[str], None] | None
                           ) -> Callable[[str], None] | None:
        """The admin listener, if --admin-bind asks for one; the ready callback, which
        now also makes its /health say ok."""
        if not self.cfg.admin_bind:
            return on_ready
        from zq.admin.listener import router_listener

        self.admin, views = await router_listener(self)

        def ready(endpoint: str) -> None:
            views.ready = True
            if on_ready is not None:
                on_ready(endpoint)

        return ready

    @contextlib.asynccontextmanager
    async def _primaries(self) -> AsyncIterator[None]:
        """With ``--ha``: follow each replicated broker id's primary in etcd, and link
        to it (zq.ha.directory); otherwise nothing."""
        if not self.cfg.ha:
            yield
            return
        try:
            import aetcd

            from zq.ha.directory import Directory
        except ImportError as exc:
            raise ValueError(f"--ha needs the HA extra: pip install 'zq[ha]' ({exc})") from None
        from zq.config import etcd_address

        host, port = etcd_address(self.cfg.ha)
        client = aetcd.Client(host=host, port=port, timeout=2)
        task = asyncio.create_task(Directory(client, self.cfg.ha_cluster, self.point_at).run(),
                                   name="zq router primaries")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await client.close()

    def point_at(self, leaders: dict[str, str]) -> None:
        """Replicated broker ids' primaries now (etcd): links go to them."""
        self._leaders = leaders
        if self._loop is not None:
            self._loop.call_soon(self._event, None, self._repoint)

    def _repoint(self) -> None:
        from zq.ha.directory import with_leaders

        cur = self.core.cluster
        try:
            new = with_leaders(cur, self._leaders)
        except ValueError as exc:
            log.error("primaries from etcd not used: %s", exc)
            return
        if new is not cur:
            log.info("primaries from etcd: %s", ", ".join(
                f"{b.id} at {b.endpoint}" for b in new.brokers if b not in cur.brokers))
            self.core.reload(new, time.monotonic())

    # ------------------------------------------------------------ events

    def _event(self, key: str | None, work: Callable[[], object] | None = None) -> None:
        """One event from the loop: socket ``key`` is readable (None: the alarm rang, or
        ``work`` is to be done). Read it, then do what is due and send what the core
        produced. Nothing runs once a stop was asked for. An exception here is a bug of
        the shell: serving ends with it (``run`` raises it) instead of the loop logging
        it and going on half broken."""
        done = self._done
        if done is None or done.done():
            return
        try:
            if key is not None:
                self._read(key)
            if work is not None:
                work()
            self._after()
        except Exception as exc:
            done.set_exception(exc)

    def _read(self, key: str) -> None:
        """Every message waiting on socket ``key`` (up to ``drain_max``; if there were as
        many, it is read again next turn, after the others)."""
        sock = self._sock if key == _CLIENTS else self._links.get(key)
        if sock is None:  # a link closed since the event was queued
            return
        core = self.core
        now = time.monotonic()
        secure = core.secure
        for _ in range(self.cfg.drain_max):
            try:
                first, msg = recv_frames(sock)
            except zmq.Again:
                return
            try:
                if key:
                    core.from_broker(key, msg, now)
                else:
                    core.from_client(msg[0], msg[1:], now, user_of(first) if secure else None)
                    if core.noted:
                        self.guard.note(first, core.noted, core.clients.get(msg[0]))
            except Exception:  # a bug of the core: log it, and keep serving everybody else
                log.exception("handling a %d-part message from %s failed", len(msg),
                              f"broker {key}" if key else "a client")
        self._soon.add(key)

    def _after(self) -> None:
        """After an event: timers that are due, every frame out, a look at each socket
        written to (a send can swallow its descriptor's edge), the next alarm."""
        core = self.core
        loop = self._loop
        assert loop is not None
        now = time.monotonic()
        if now >= core.next_deadline():
            core.tick(now)
        self._flush()
        if self._soon:
            for key in self._soon:
                loop.call_soon(self._event, key)
            self._soon.clear()
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

    # ------------------------------------------------------------ sending

    def _flush(self) -> None:
        """Send what the core produced and open or close the links it asks for; sends
        may produce more (a failed send is answered), so until nothing is left. Each
        socket written to is marked to be read next turn if it has input waiting."""
        core = self.core
        sock = self._sock
        assert sock is not None
        while True:
            clients, brokers = core.take()
            actions, core.link_actions = core.link_actions, []
            if not (clients or brokers or actions):
                return
            if clients and send_clients(sock, clients, core):
                self._soon.add(_CLIENTS)
            if brokers:
                self._soon.update(send_brokers(self._links, brokers, core))
            for kind, bid, endpoint in actions:
                if kind == "open":
                    self._open_link(bid, endpoint)
                else:
                    self._close_link(bid)

    # ------------------------------------------------------------ links

    def _open_link(self, bid: str, endpoint: str) -> None:
        assert self._ctx is not None
        assert self._loop is not None
        try:
            link = link_socket(self._ctx, self.cfg, endpoint, self._link_keys)
        except zmq.ZMQError as exc:
            log.error("cannot connect to broker %s at %s: %s", bid, endpoint, exc)
            return
        self._links[bid] = link
        self._loop.add_reader(fd(link), self._event, bid)
        self.core.link_connected(bid, time.monotonic())

    def _close_link(self, bid: str) -> None:
        link = self._links.pop(bid, None)
        if link is not None:
            assert self._loop is not None
            self._loop.remove_reader(fd(link))
            link.close(linger=self._linger_ms)

    def _reload(self) -> dict[str, Any]:
        """SIGHUP, ``zq admin reload``: keys, permissions and the cluster file again."""
        removed, changed, summary = self.guard.reload()
        self.core.rights = self.guard.rights
        if removed or changed:
            conns = self.core.end_sessions_of(removed, "its key was removed")
            self.guard.cut(conns, "key removed")
            kept = self.core.end_sessions_of(changed, "its key's rights changed")
            summary["sessions_ended"] = len(conns) + len(kept)
        path = self.cfg.cluster
        try:
            new = load(path)
        except ValueError as exc:
            log.error("SIGHUP: cluster file not reloaded: %s", exc)
            summary["cluster_error"] = str(exc)
            return summary
        taken, what = self.core.offer(new, time.monotonic())
        (log.info if taken else log.warning)("SIGHUP: cluster file %s %s", path, what)
        summary["cluster"] = what
        if taken and self._leaders:
            self._repoint()
        return summary


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
        raise_fd_limit()
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
    except (ValueError, OSError) as exc:  # a key or permissions file
        log.error("cannot start router: %s", exc)
        return 2
    return 0
