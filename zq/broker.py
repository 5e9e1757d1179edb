"""``zq broker``: the asyncio shell around :class:`zq.core.BrokerCore`.

One ROUTER socket. The loop wakes on the socket's file descriptor (or a timer),
drains every queued message without awaiting each one, commits what the pass
must persist as one batch, sends confirms, dispatches deliveries, and flushes
all outgoing frames before it waits again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
import uuid
from collections.abc import Callable

import zmq

from zq.config import BrokerConfig
from zq.core import BrokerCore
from zq.errors import ZqError
from zq.persistence import make_store
from zq.policies.dispatch import make_dispatch
from zq.transport import fd, readable

log = logging.getLogger("zq.broker")


class Broker:
    def __init__(self, cfg: BrokerConfig) -> None:
        self.cfg = cfg
        self.store = make_store(cfg.storage, cfg.data)
        self.core = BrokerCore(cfg, make_dispatch(cfg.dispatch), uuid.uuid4().hex[:12],
                               durable=self.store.durable)
        self.endpoint = ""
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM and SIGINT do)."""
        self._stop_requested = True
        self._wake.set()

    async def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Bind, recover the store, announce readiness, and serve until stopped."""
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        self._ctx, self._sock = ctx, sock
        try:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, cfg.send_hwm)
            sock.setsockopt(zmq.RCVHWM, cfg.send_hwm)
            sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame)
            sock.bind(cfg.bind)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self.core.recover(await self.store.open())
            loop.add_reader(fd(sock), self._wake.set)
            try:
                if on_ready is not None:
                    on_ready(self.endpoint)
                log.info("broker %s ready on %s (storage=%s)", self.core.broker_id,
                         self.endpoint, cfg.storage)
                await self._serve(loop, sock)
            finally:
                loop.remove_reader(fd(sock))
        finally:
            if self._timer is not None:
                self._timer.cancel()
            await self.store.close()
            sock.close(linger=0)
            ctx.term()

    async def _serve(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes]) -> None:
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stop_requested:
                await self._shutdown(loop, sock)
                return
            await self._pass(loop, sock)

    async def _pass(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes]) -> None:
        core = self.core
        # time.monotonic, not loop.time: uvloop's clock has millisecond steps, and a
        # delay measured on it can end up to 1 ms before it was asked to.
        now = time.monotonic()
        recv = sock.recv_multipart
        n = 0
        limit = self.cfg.drain_max
        while n < limit:
            try:
                msg = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
            core.receive(msg[0], msg[1:], now)
        if now >= core.next_deadline():
            core.tick(now)
        await self._commit()
        if not core.stopping:
            core.dispatch()
        self._flush(sock)
        if n >= limit or readable(sock):
            self._wake.set()
        self._arm_timer(loop, core.next_deadline())

    async def _commit(self) -> None:
        core = self.core
        batch = core.take_batch()
        if batch:
            try:
                await self.store.commit(batch)
            except ZqError as exc:
                log.error("commit failed: %s", exc)
                core.commit_failed(exc)
                return
        core.committed()

    def _flush(self, sock: zmq.Socket[bytes]) -> None:
        core = self.core
        out, core.out = core.out, []
        send = sock.send
        more = zmq.SNDMORE | zmq.NOBLOCK
        last = zmq.NOBLOCK
        for identity, parts, msgs in out:
            # Part by part rather than send_multipart: a third less time per part,
            # which counts when a DELIVER carries a hundred bodies. ROUTER queues a
            # message atomically, so Again or EHOSTUNREACH can only come with the
            # first part, before anything was queued.
            try:
                send(identity, more)
                for p in parts[:-1]:
                    send(p, more)
                send(parts[-1], last)
            except zmq.Again:
                core.send_failed(identity, msgs, unroutable=False)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                core.send_failed(identity, msgs, unroutable=True)
        core.counters["frames_out"] += len(out)
        if core.out:  # send failures may have produced more (requeues are dispatched later)
            self._wake.set()

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None and when >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        # The loop's timers may fire up to a clock step early; the margin makes the
        # pass that runs find its deadline due instead of spinning until it is.
        self._timer = loop.call_later(max(0.0, when - time.monotonic()) + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._wake.set()

    async def _shutdown(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes]) -> None:
        """Stop taking new work, finish frames already received, say BYE, and return."""
        core = self.core
        core.stopping = True
        log.info("shutting down: finishing in-flight frames")
        deadline = loop.time() + self.cfg.shutdown_grace
        while loop.time() < deadline:
            before = core.counters["frames_in"]
            await self._pass(loop, sock)
            if core.counters["frames_in"] == before:
                break
        core.goodbye("broker shutting down")
        self._flush(sock)
        log.info("stopped: %s", core.counters)


def serve(cfg: BrokerConfig, *, print_ready: bool = True) -> int:
    """Run a broker until SIGTERM or SIGINT; return the process exit code."""

    async def main() -> None:
        broker = Broker(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, broker.request_stop)

        def ready(endpoint: str) -> None:
            if print_ready:
                sys.stdout.write(f"ZQ READY {endpoint}\n")
                sys.stdout.flush()

        await broker.run(ready)

    try:
        run_loop(main())
    except zmq.ZMQError as exc:
        log.error("cannot start broker on %s: %s", cfg.bind, exc)
        return 2
    return 0


def run_loop(coro: object) -> None:
    """Run ``coro`` on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)  # type: ignore[arg-type]
