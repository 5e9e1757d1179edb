"""``RouterConfig``: the settings of one ``zq router`` process, validated on construction.

The cluster itself (brokers, endpoints, pins, version) is not here: it lives in the
cluster file that ``cluster`` names, read by :func:`zq.cluster.load` and replaced on
SIGHUP. No I/O.
"""

from __future__ import annotations

import math
import os
import platform
import re
from dataclasses import dataclass

from zq.admin import settings as admin_settings
from zq.security import settings as security_settings

ROUTER_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def default_id() -> str:
    """``router-<hostname>-<pid>``, the hostname reduced to the characters an id may have."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", platform.node() or "localhost")[:96]
    return f"router-{host}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class RouterConfig:
    bind: str
    cluster: str  # path of the cluster file
    id: str = ""  # "": router-<hostname>-<pid>
    heartbeat: float = 1.0  # seconds between heartbeats, to clients and on links
    liveness: int = 3  # heartbeats a client or a broker may miss before it is lost
    max_frame: int = 16 * 1024 * 1024  # bytes per multipart message, all parts together
    send_hwm: int = 100_000  # queued outgoing messages per peer before sends to it fail
    drain_max: int = 2000  # frames read from one socket per loop pass
    placements: int = 100_000  # decoded queue-name placements kept (a bounded cache)
    shutdown_linger: float = 0.5  # seconds the final BYE frames may take to leave
    ha: str = ""  # etcd://HOST:PORT: link to each replicated broker id's primary (zq.ha)
    ha_cluster: str = "zq"  # the name under /zq/ whose broker ids' leaders it follows
    # Security (docs/SECURITY.md), as a broker's; its links to brokers use its own key
    # pair as a client's, and server_key as the brokers' public key.
    curve_secret: str = ""
    authorized_keys: str = ""
    permissions: str = ""
    server_key: str = ""  # the brokers' public key file ("": this router's own public key)
    insecure: bool = False
    max_sessions: int = 10_000
    max_sessions_per_key: int = 1_000
    hello_timeout: float = 10.0
    malformed_budget: int = 10
    admin_bind: str = ""  # the admin HTTP listener (docs/MANAGEMENT.md): HOST:PORT; "": off
    admin_token: str = ""  # a file holding the bearer token it asks for

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", default_id())
        if not isinstance(self.bind, str) or "://" not in self.bind:
            raise ValueError(f"bind must be a ZeroMQ endpoint like tcp://127.0.0.1:5600, "
                             f"got {self.bind!r}")
        if not isinstance(self.cluster, str) or not self.cluster:
            raise ValueError("cluster must name a cluster file")
        if not ROUTER_ID.fullmatch(self.id):
            raise ValueError(f"router id must be 1-128 characters of A-Z a-z 0-9 . _ -, "
                             f"got {self.id!r}")
        self._check_numbers()
        security_settings.check(self, [self.bind])
        admin_settings.check(self)
        if self.server_key and not self.curve_secret:
            raise ValueError("--server-key needs --curve-secret: it is the brokers' key for "
                             "the router's CURVE links")
        if self.ha:
            from zq.config import etcd_address

            etcd_address(self.ha)

    def _check_numbers(self) -> None:
        for name in ("heartbeat", "shutdown_linger"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number of seconds")
        if not 0.01 <= self.heartbeat <= 3600:
            raise ValueError("heartbeat must be between 0.01 and 3600 seconds")
        if not 1 <= self.liveness <= 100:
            raise ValueError("liveness must be between 1 and 100")
        if self.max_frame < 1024:
            raise ValueError("max_frame must be >= 1024 bytes")
        for name in ("send_hwm", "drain_max", "placements"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.shutdown_linger < 0:
            raise ValueError("shutdown_linger must be >= 0")
