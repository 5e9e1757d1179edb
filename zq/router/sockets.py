"""The router's sockets: how they are opened, and how the core's frames go out on them.

Used by :mod:`zq.router.process`; the core (:class:`~zq.router.core.RouterCore`) hears
of every send that fails, so that it can answer for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

import zmq

from zq.protocol.limits import PART_SLACK
from zq.security.curve import ClientKeys
from zq.security.guard import Guard
from zq.transport import readable, send_parts, serve_options

if TYPE_CHECKING:
    from zq.router.config import RouterConfig
    from zq.router.core import RouterCore

log = logging.getLogger("zq.router")

_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_NOBLOCK = int(zmq.NOBLOCK)
Socket = zmq.Socket[bytes]


def client_socket(ctx: zmq.Context[Socket], cfg: RouterConfig, guard: Guard,
                  loop: asyncio.AbstractEventLoop) -> Socket:
    """The ROUTER socket clients connect to, bound to ``cfg.bind`` once its guard (the
    authenticator, the doorman) is running."""
    sock = ctx.socket(zmq.ROUTER)
    try:
        serve_options(sock, hwm=cfg.send_hwm, max_frame=cfg.max_frame, backlog=1024)
        guard.protect(sock)
        guard.start(ctx, loop, sock)
        sock.bind(cfg.bind)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return sock


def link_socket(ctx: zmq.Context[Socket], cfg: RouterConfig, endpoint: str,
                keys: ClientKeys | None = None) -> Socket:
    """A DEALER connecting to a broker, for its link (with ``keys``, over CURVE)."""
    link = ctx.socket(zmq.DEALER)
    try:
        if keys is not None:
            keys.apply(link)
        link.setsockopt(zmq.ROUTING_ID, f"zqr-{cfg.id}-{os.urandom(4).hex()}".encode())
        link.setsockopt(zmq.LINGER, 0)
        # Queue only on a live connection: a HELLO sent while the broker is down fails
        # now (and is tried again) instead of piling up and arriving as a burst of
        # HELLOs, each but the first a protocol violation, when the broker is back.
        link.setsockopt(zmq.IMMEDIATE, 1)
        link.setsockopt(zmq.SNDHWM, cfg.send_hwm)
        link.setsockopt(zmq.RCVHWM, cfg.send_hwm)
        link.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame + PART_SLACK)
        link.connect(endpoint)
    except zmq.ZMQError:
        link.close(linger=0)
        raise
    return link


def send_clients(sock: Socket, out: list[tuple[bytes, list[bytes]]], core: RouterCore) -> bool:
    """Send each ``(identity, parts)``; True if ``sock`` is readable after (a send can
    swallow its descriptor's edge)."""
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
    return readable(sock)


def send_brokers(links: dict[str, Socket], out: list[tuple[str, list[bytes]]],
                 core: RouterCore) -> list[str]:
    """Send each ``(broker id, parts)`` on its link; the links readable after."""
    now = time.monotonic()
    written: set[str] = set()
    for bid, parts in out:
        link = links.get(bid)
        if link is None:  # closed, or never opened
            core.counters["dropped"] += 1
            continue
        written.add(bid)
        try:
            send_parts(link, parts, _NOBLOCK)
        except zmq.Again:  # no connection (IMMEDIATE), or its queue is full
            core.link_send_failed(bid, parts, now)
        except zmq.ZMQError as exc:
            log.error("send to broker %s failed: %s", bid, exc)
            core.link_send_failed(bid, parts, now)
    return [bid for bid in written if readable(links[bid])]
