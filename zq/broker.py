"""``zq broker``: the asyncio shell around :class:`zq.core.BrokerCore`.

One ROUTER socket. The loop wakes on the socket's file descriptor (or a timer),
drains every queued message without awaiting each one, commits what the pass
must persist as one batch, sends confirms, dispatches deliveries, and flushes
all outgoing frames before it waits again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from zq import policies
from zq.cluster.config import load as load_cluster
from zq.committer import Committer
from zq.config import BrokerConfig
from zq.core.facade import Core
from zq.core.membership import Membership
from zq.core.outbox import Outgoing
from zq.manage import OPERATIONS
from zq.manage.queues import declare
from zq.persistence import make_store, replica
from zq.persistence.sqlite import SqliteStore
from zq.policies import make_dispatch
from zq.protocol.frames import CONFIRM, DELIVER, FORWARD
from zq.protocol.wire import command
from zq.security.curve import client_keys
from zq.security.guard import Guard
from zq.shipping import Shipper
from zq.transport import Alarm, fd, readable, recv_frames, send_parts, serve_options, user_of
from zq.uplink import settings as uplink_settings

if TYPE_CHECKING:
    from zq.admin.broker_views import BrokerViews
    from zq.admin.http import AdminServer
    from zq.uplink.link import Uplink

log = logging.getLogger("zq.broker")
_FORWARD = command(FORWARD)
_HELD = (command(CONFIRM), command(DELIVER))  # not sent while a replicated broker is fenced
ID_FILE = "broker-id"  # the broker id of a clustered broker's data folder


class Broker:
    """The broker's event loop around one ROUTER socket.

    ``context``: the ZeroMQ context to open the socket in; by default one of its
    own, terminated when :meth:`run` returns. Pass the clients' context (as
    ``zq.testing`` does) to serve ``inproc://`` endpoints in one process; a
    context given is left open.
    """

    def __init__(self, cfg: BrokerConfig, *,
                 context: zmq.Context[zmq.Socket[bytes]] | None = None,
                 socket: zmq.Socket[bytes] | None = None, guard: Guard | None = None) -> None:
        self.cfg = cfg
        self._given_ctx = context
        self._given_sock = socket  # bound already, left open (a replicated node's, zq.ha)
        # CURVE, the authenticator and the doorman: a replicated node's runs them for the
        # socket it gives; a broker of its own starts its own.
        self._own_guard = guard is None
        self.guard = Guard(cfg, "broker") if guard is None else guard
        self.store = make_store(cfg.storage, cfg.data, fsync=cfg.fsync,
                                max_bytes=cfg.max_db_bytes,
                                checkpoint_interval=cfg.checkpoint_interval,
                                reserve_bytes=cfg.reserve_bytes)
        self.core = Core(cfg, make_dispatch(cfg.dispatch), uuid.uuid4().hex[:12],
                         durable=self.store.durable, operations=OPERATIONS)
        self.core.store_stats = self.store.stats
        self.core.secure, self.core.rights = self.guard.secure, self.guard.rights
        self.core.reload_hook = self.reload
        self.core.security_stats = self.guard.stats
        if cfg.cluster:
            self.core.membership = Membership(load_cluster(cfg.cluster), cfg.id)
        self.endpoint = ""
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pass_due = False  # a pass is scheduled (call_soon) and has not run yet
        self._stopped: asyncio.Future[None] | None = None  # done: serving ends
        self._stop_requested = False
        self.demoted = ""  # why this broker stopped being primary (zq.ha), if it did
        self._held_out: list[Outgoing] = []  # CONFIRM and DELIVER frames held while fenced
        self._alarm = Alarm(self._poke)
        self.commits = Committer(self.core, self.store, self._poke)
        self._shipper: Shipper | None = None  # queues moved to other brokers
        self.uplink: Uplink | None = None  # forwarding queues to a centre (--uplink)
        self.admin: AdminServer | None = None  # the admin listener (--admin-bind), if any

    def reload(self) -> dict[str, Any]:
        """Read the cluster file, the authorized keys and the permissions again (what
        SIGHUP and ``zq admin reload`` do): a newer cluster file replaces the old; the
        sessions of keys removed, or whose rights changed, end and their connections
        are closed (clients reconnect and are checked anew). What changed, as a map."""
        summary: dict[str, Any] = {}
        m = self.core.membership
        if m is not None:
            try:
                summary["cluster"] = m.reload(load_cluster(self.cfg.cluster))
            except ValueError as exc:
                log.error("cluster file not reloaded: %s", exc)
                summary["cluster_error"] = str(exc)
            else:
                log.info("cluster file %s reloaded: %s", self.cfg.cluster, summary["cluster"])
        removed, changed, more = self.guard.reload()
        summary.update(more)
        self.core.rights = self.guard.rights
        if removed or changed:
            names = removed | changed
            summary["sessions_ended"] = sum(1 for p in self.core.peers.values()
                                            if p.user in names)
            if self._loop is not None:  # after this pass: its replies go out first
                self._loop.call_soon(self._end_sessions, removed, changed)
            else:
                self._end_sessions(removed, changed)
        return summary

    def _end_sessions(self, removed: set[str], changed: set[str]) -> None:
        """Keys removed: their sessions end and their connections close. Rights changed:
        the sessions end (what they held goes back, their subscriptions go) and the
        connections stay; the clients say HELLO again under the new rights."""
        core = self.core
        self.guard.cut(core.end_sessions_of(removed, "its key was removed"), "key removed")
        core.end_sessions_of(changed, "its key's rights changed")
        self._poke()

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM and SIGINT do)."""
        self._stop_requested = True
        self._poke()

    def wake(self) -> None:
        """Run a pass soon (what a replicated broker's link asks after an ack)."""
        self._poke()

    def demote(self, why: str) -> None:
        """Stop at once, confirming nothing more: another node is primary now (zq.ha)."""
        if not self.demoted:
            log.error("no longer the primary: %s", why)
            self.demoted = why
        self._poke()

    async def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Bind, recover the store, announce readiness, and serve until stopped."""
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        ctx: zmq.Context[zmq.Socket[bytes]] = (
            zmq.Context() if self._given_ctx is None else self._given_ctx)
        sock = ctx.socket(zmq.ROUTER) if self._given_sock is None else self._given_sock
        self._ctx, self._sock = ctx, sock
        try:
            if sock is not self._given_sock:
                serve_options(sock, hwm=cfg.send_hwm, max_frame=cfg.max_frame,
                              backlog=cfg.listen_backlog)
                self.guard.protect(sock)
                # The authenticator and the doorman first: a CURVE socket bound with no
                # ZAP handler yet would let any key in.
                self.guard.start(ctx, loop, sock)
                sock.bind(cfg.bind)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self.core.wall_offset = time.time() - time.monotonic()
            if (cfg.cluster or cfg.uplink) and cfg.id and cfg.storage == "sqlite":
                claim_identity(Path(cfg.data), cfg.id)
            views = await self._start_admin()
            found = policies.preload()  # so frame handling never scans installed packages
            if found:
                log.info("policy plugins: %s", ", ".join(found))
            self.core.recover(await self.store.open(cfg.window), time.monotonic())
            if (self.commits.replicator is None and isinstance(self.store, SqliteStore)
                    and await replica.forget(self.store)):
                log.warning("%s was a replicated broker's: served alone now, it will "
                                "count as never replicated", cfg.data)
            for name, settings in cfg.queues.items():  # the config file's [queues.NAME]
                declare(self.core, {"queue": name, "settings": settings}, time.monotonic())
            loop.add_reader(fd(sock), self._poke)
            self._shipper = Shipper(self.core, ctx, cfg.id or self.core.broker_id,
                                    self._poke, self.commits.stored, self.guard.client_keys)
            self._shipper.poll()  # moves under way when it stopped go on
            self._start_uplink(ctx)
            try:
                if views is not None:
                    views.ready = True  # /health says ok from now on
                if on_ready is not None:
                    on_ready(self.endpoint)
                log.info("broker %s ready on %s (storage=%s)", self.core.broker_id,
                         self.endpoint, cfg.storage)
                await self._serve(loop, sock)
            finally:
                loop.remove_reader(fd(sock))
        finally:
            await self._close(ctx, sock)

    async def _close(self, ctx: zmq.Context[zmq.Socket[bytes]], sock: zmq.Socket[bytes]
                     ) -> None:
        self._alarm.cancel()
        if self.admin is not None:
            await self.admin.close()
        if self._own_guard:
            self.guard.close()
        if self._shipper is not None:
            await self._shipper.close()
        if self.uplink is not None:
            await self.uplink.close()
        await self.commits.close()  # a commit left only if serving ended by an error
        await self.store.close()
        if sock is not self._given_sock:
            sock.close(linger=0)
        if ctx is not self._given_ctx:
            ctx.term()

    def _start_uplink(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        """The uplink (--uplink): its session with the centre starts now."""
        cfg = self.cfg
        if not cfg.uplink:
            return
        from zq.uplink.identity import Identity
        from zq.uplink.link import Uplink

        keys = client_keys(cfg.uplink_curve_secret or None, cfg.uplink_server_key or None,
                           env={})
        self.uplink = up = Uplink(self.core, ctx, uplink_settings.endpoints(cfg),
                                  Identity(cfg.data, cfg.id, self.core.next_id), self._poke,
                                  keys, cfg.uplink_timeout)
        self.core.uplink_stats = lambda: up.stats(time.monotonic())
        up.start()

    async def _start_admin(self) -> BrokerViews | None:
        """The admin listener, if --admin-bind asks for one: it answers /health (503)
        while the store recovers, and everything once ``views.ready`` is set."""
        if not self.cfg.admin_bind:
            return None
        from zq.admin.listener import broker_listener

        self.admin, views = await broker_listener(self)
        return views

    async def _serve(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes]) -> None:
        """Passes run as plain callbacks (no task step or event per wake-up) until a stop
        is asked for or a pass raises; then the shutdown, or the error, here."""
        self._loop, self._stopped = loop, loop.create_future()
        self._poke()
        try:
            await self._stopped
        finally:
            self._loop = None  # no more passes: the shutdown runs its own
        await self._shutdown(loop, sock)

    def _poke(self) -> None:
        """Run a pass soon: once, however often this is called before it runs."""
        if not self._pass_due and self._loop is not None:
            self._pass_due = True
            self._loop.call_soon(self._run_pass)

    def _run_pass(self) -> None:
        self._pass_due = False
        stopped, loop, sock = self._stopped, self._loop, self._sock
        if stopped is None or stopped.done() or loop is None or sock is None:
            return
        if self._stop_requested or self.demoted:
            stopped.set_result(None)
            return
        try:
            self._pass(loop, sock)
        except Exception as exc:  # serving ends with it (run() raises it)
            stopped.set_exception(exc)

    def _pass(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes]) -> None:
        """Drain the socket, act, and send; never awaits the store.

        With a durable store, what must be stored first (new messages, acks, the
        attempt numbers of deliveries) goes to the store as one batch when it is due
        (zq.committer): a small one in this pass, before dispatching, a bigger one in
        a commit task, at most one at a time, while passes go on draining and
        dispatching into the next batch. Confirms go out once their batch is stored;
        DELIVER frames go out in the pass that makes them.
        """
        core = self.core
        # time.monotonic, not loop.time: uvloop's clock has millisecond steps, and a
        # delay measured on it can end up to 1 ms before it was asked to.
        now = time.monotonic()
        n = 0
        monotonic = time.monotonic
        limit = self.cfg.drain_max
        commit_max = self.cfg.commit_max
        secure = core.secure
        noted = core.noted
        while n < limit and core.staged < commit_max:
            try:
                first, msg = recv_frames(sock)
            except zmq.Again:
                break
            n += 1
            # Each frame gets the time it was read, not the pass's start: a delayed
            # publish read late in a long drain must not count its delay from before
            # it was sent (perf delays caught messages delivered early that way).
            core.receive(msg[0], msg[1:], monotonic(), user_of(first) if secure else None)
            if noted:  # a new session, or a peer past its budget: look at its connection
                self.guard.note(first, noted, core.peers.get(msg[0]))
        if now >= core.next_deadline():
            core.tick(now)
        if not self.store.durable:
            core.committed()  # nothing to store: published means stored
        else:
            self.commits.start(loop, now)
        if not core.stopping and self._primary():
            core.dispatch(now)
            if self.uplink is not None:
                self.uplink.pump(now)
            if core.moves_started and self._shipper is not None:
                core.moves_started = False
                self._shipper.poll()
        self.commits.start_upkeep(loop, now)
        self._flush(sock)
        if n >= limit or (readable(sock) and core.staged < commit_max):
            self._poke()
        self._alarm.arm(loop, min(core.next_deadline(), self.commits.wake_at()))

    def _primary(self) -> bool:
        """Whether this broker may deliver: always, unless replicated and its lease is
        not confirmed now (etcd unreachable: zq.ha.primary)."""
        repl = self.commits.replicator
        return repl is None or repl.holds()

    def _flush(self, sock: zmq.Socket[bytes]) -> None:
        core = self.core
        out, core.out = core.out, []
        repl = self.commits.replicator
        if repl is not None:
            if not repl.holds():
                out = self._fenced(out)
            elif self._held_out:
                out, self._held_out = self._held_out + out, []
        send = sock.send
        more = int(zmq.SNDMORE | zmq.NOBLOCK)
        noblock = int(zmq.NOBLOCK)
        routes = core.routes
        forwarded: list[bytes] = []  # the link of each frame sent in a FORWARD
        for identity, parts, msgs in out:
            # ROUTER queues a message atomically, so Again or EHOSTUNREACH can only
            # come with the first part (the peer's identity), before anything was queued.
            try:
                route = routes.get(identity) if routes else None
                if route is None:
                    send(identity, more)
                else:  # a client behind a router: FORWARD on the router's link
                    send(route[0], more)
                    send(_FORWARD, more)
                    send(route[1], more)
                send_parts(sock, parts, noblock)
                if route is not None:
                    forwarded.append(route[0])
            except zmq.Again:
                core.send_failed(identity, msgs, unroutable=False)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                core.send_failed(identity, msgs, unroutable=True)
        core.counters["frames_out"] += len(out)
        if forwarded:
            self._count_forwards(forwarded)
        if core.out:  # send failures may have produced more (requeues are dispatched later)
            self._poke()

    def _fenced(self, out: list[Outgoing]) -> list[Outgoing]:
        """A replicated broker whose lease is not confirmed now: its CONFIRM and
        DELIVER frames wait (sent if the lease holds again, dropped if it is lost);
        the rest (errors, replies) goes."""
        go: list[Outgoing] = []
        held = self._held_out
        for o in out:
            (held if o.parts and o.parts[0] in _HELD else go).append(o)
        return go

    def _count_forwards(self, links: list[bytes]) -> None:
        """Frames sent in FORWARD, on these links (the routers' count of them, for STATS)."""
        core = self.core
        core.counters["forwards_out"] += len(links)
        for identity in links:
            link = core.links.get(identity)
            if link is not None:
                link.forwards_out += 1

    async def _shutdown(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes]) -> None:
        """Stop taking new work, finish frames already received, say BYE, and return."""
        core = self.core
        core.stopping = True
        if self.demoted:  # nothing more is confirmed or stored: clients go elsewhere
            core.out = [o for o in core.out if not (o.parts and o.parts[0] in _HELD)]
            self._held_out = []
            core.close_sessions("this broker is not the primary any more")
            self._flush(sock)
            return
        log.info("shutting down: finishing in-flight frames")
        deadline = loop.time() + self.cfg.shutdown_grace
        repl = self.commits.replicator
        while loop.time() < deadline:
            before = core.counters["frames_in"]
            self._pass(loop, sock)
            while self.commits.running is not None:
                await self.commits.running
            if core.counters["frames_in"] == before and not core.has_unstored():
                if repl is None or repl.idle:
                    break
                await asyncio.sleep(0.01)  # the standby's acks release the last confirms
        core.close_sessions("broker shutting down")
        self._flush(sock)
        if core.has_unstored():  # what ending the sessions changed (attempts, history)
            await self.commits.commit(core.take_commit())
        log.info("stopped: %s", core.counters)


def claim_identity(data: Path, broker_id: str) -> None:
    """Keep the broker id in the data folder; refuse to serve another id's data."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / ID_FILE
    if path.exists():
        held = path.read_text(encoding="utf-8").strip()
        if held != broker_id:
            raise ValueError(f"{data} holds the data of broker {held!r}, not {broker_id!r}: "
                             f"start it with --id {held} or give another --data")
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(broker_id + "\n", encoding="utf-8")
    tmp.replace(path)


def run_loop(coro: object) -> None:
    """Run ``coro`` on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)  # type: ignore[arg-type]
