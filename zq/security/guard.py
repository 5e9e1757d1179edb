"""A server's security, for its shell (broker, replicated node, router): the CURVE keys,
the ZAP authenticator, the doorman of its client socket, and reloading keys and
permissions (SIGHUP, ``zq admin reload``).

Built from the process config before anything binds, so that a missing or unsafe key
file stops the start with a clear error (exit 2) instead of serving without it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import zmq

from zq.security.auth import CLIENTS, KeyGate
from zq.security.curve import ClientKeys, ServerKeys
from zq.security.doorman import Doorman, srcfd
from zq.security.permissions import Permissions

log = logging.getLogger("zq.security")

FD_LIMIT = 1 << 20  # the soft descriptor limit is raised to the hard one, at most this


class Guard:
    """The security of one server process (see the module docstring)."""

    def __init__(self, cfg: Any, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self.keys: ServerKeys | None = (
            ServerKeys.load(cfg.curve_secret) if cfg.curve_secret else None)
        self.rights: Permissions | None = (
            Permissions.load(cfg.permissions) if cfg.permissions else None)
        self.gate: KeyGate | None = None
        self.doorman: Doorman | None = None

    @property
    def secure(self) -> bool:
        return self.keys is not None

    @property
    def client_keys(self) -> ClientKeys | None:
        """This server's key pair as a client of its own kind (shipping, replication)."""
        return self.keys.as_client() if self.keys is not None else None

    def protect(self, sock: zmq.Socket[Any], domain: str = CLIENTS) -> None:
        """Set ``sock``'s options before it binds: CURVE (if on), ZeroMQ heartbeats that
        drop silent connections, and a handshake time limit."""
        cfg = self.cfg
        if self.keys is not None:
            self.keys.apply(sock, domain.encode())
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(cfg.hello_timeout * 1000))
        beat = int(cfg.heartbeat * 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, beat)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, beat * cfg.liveness)
        sock.setsockopt(zmq.HEARTBEAT_TTL, beat * cfg.liveness)

    def start(self, ctx: zmq.Context[Any], loop: asyncio.AbstractEventLoop,
              sock: zmq.Socket[Any]) -> None:
        """Start the authenticator (with CURVE) and the doorman of client socket ``sock``."""
        if self.keys is not None and self.gate is None:
            self.gate = KeyGate(ctx, self.cfg.authorized_keys, self.keys.public, self.name)
            self.gate.start()
        self.doorman = Doorman(sock, hello_timeout=self.cfg.hello_timeout, name=self.name)
        if self.gate is not None:  # its refusals are summed up on the doorman's clock
            door = self.doorman
            self.gate.refusals.pending = lambda: door._arm(1.0)
            door.others.append(self.gate.refusals)
        self.doorman.start(loop)

    def stats(self) -> dict[str, Any]:
        """For STATS: CURVE on or off, the keys, and what the doorman saw."""
        out: dict[str, Any] = {"curve": self.keys is not None,
                               "permissions": bool(self.cfg.permissions)}
        if self.gate is not None:
            out["keys"] = len(self.gate.names) - 1
            out["keys_allowed"] = self.gate.allowed
            out["keys_refused"] = dict(self.gate.refused)
        if self.doorman is not None:
            out.update(self.doorman.stats())
        return out

    def close(self) -> None:
        if self.doorman is not None:
            self.doorman.close()
            self.doorman = None
        if self.gate is not None:
            self.gate.stop()
            self.gate = None

    def reload(self) -> tuple[set[str], set[str], dict[str, Any]]:
        """Read the key directory and the permissions file again: the names of the keys
        removed (their sessions end, their connections close), of those whose rights
        changed (their sessions end: they say HELLO again under the new rights), and a
        summary. A file that cannot be read leaves what it held as it was (reported)."""
        removed: set[str] = set()
        changed: set[str] = set()
        summary: dict[str, Any] = {}
        if self.gate is not None:
            try:
                removed = self.gate.reload()
            except ValueError as exc:
                log.error("authorized keys not reloaded: %s", exc,
                          extra={"event": "keys_not_reloaded", "reason": str(exc)})
                summary["keys_error"] = str(exc)
            else:
                summary["keys"] = len(self.gate.names) - 1
                summary["keys_removed"] = sorted(removed)
        if self.cfg.permissions and self.rights is not None:
            try:
                new = Permissions.load(self.cfg.permissions)
            except (ValueError, OSError) as exc:
                log.error("permissions not reloaded: %s", exc,
                          extra={"event": "permissions_not_reloaded", "reason": str(exc)})
                summary["permissions_error"] = str(exc)
            else:
                changed = self.rights.changed(new) - removed
                self.rights = new
                summary["permissions_changed"] = sorted(changed)
                log.info("permissions reloaded from %s: %s", self.cfg.permissions,
                         f"changed for {sorted(changed)}" if changed else "unchanged")
        return removed, changed, summary

    def note(self, first: zmq.Frame, noted: list[str], session: Any) -> None:
        """After a frame the core noted something about: a new session (``session``, the
        core's, gets the frame's connection; it spoke in time), or a peer past its
        malformed budget (its connection is closed)."""
        doorman = self.doorman
        conn = srcfd(first)
        for what in noted:
            if what == "session":
                if session is not None:
                    session.conn = conn
                if doorman is not None:
                    doorman.spoke(first)
            elif doorman is not None:  # "cut"
                doorman.cut(conn, "too many malformed frames")
        noted.clear()

    def cut(self, conns: list[int], why: str) -> int:
        """Close these connections (descriptors the shell noted); how many were."""
        doorman = self.doorman
        if doorman is None:
            return 0
        return sum(1 for c in conns if c >= 0 and doorman.cut(c, why))


def raise_fd_limit() -> int:
    """Raise the soft limit of open descriptors to the hard limit (each connection holds
    one); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the descriptor limit from %d: %s", soft, exc)
    return soft
