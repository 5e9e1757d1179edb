"""The security settings brokers and routers share: checks and help lines. No I/O.

Both config classes (``zq.config.BrokerConfig``, ``zq.router.config.RouterConfig``)
have the fields named in :data:`HELP`; :func:`check` validates them the same way.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

HELP: dict[str, str] = {
    "curve_secret": "This server's CURVE secret key file (from 'zq keys generate'): "
                    "encrypt every connection and let in only --authorized-keys. "
                    "[default: no CURVE]",
    "authorized_keys": "With --curve-secret: the directory of public key files "
                       "(NAME.key) that may connect; NAME is the key's name in "
                       "--permissions. Re-read on SIGHUP.",
    "permissions": "With --curve-secret: a TOML file of what each key may do on which "
                   "queues (docs/SECURITY.md); re-read on SIGHUP. [default: every "
                   "authorized key may do everything]",
    "insecure": "Serve a non-loopback address without CURVE: anybody who reaches it "
                "may do anything.",
    "max_sessions": "Most sessions at once (a router's link counts as one, and each "
                    "client behind it as one more).",
    "max_sessions_per_key": "With --curve-secret: most sessions at once for one key.",
    "hello_timeout": "Seconds a connection may stay open without a session (no HELLO); "
                     "then it is closed. Also bounds the ZeroMQ handshake.",
    "malformed_budget": "Malformed or out-of-order frames one connection may send; the "
                        "next one closes it.",
}


def is_local(endpoint: str) -> bool:
    """Whether ``endpoint`` can be reached only from this host (loopback, ipc, inproc)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a wildcard, an interface name, a host name
        return False


def check(cfg: Any, endpoints: list[str]) -> None:
    """Validate the security fields of a broker's or a router's config; ``endpoints``
    are the ones it binds ("" for one not set)."""
    if bool(cfg.curve_secret) != bool(cfg.authorized_keys):
        raise ValueError("--curve-secret and --authorized-keys go together: CURVE needs "
                         "this server's secret key and the public keys it lets in")
    if cfg.permissions and not cfg.curve_secret:
        raise ValueError("--permissions needs --curve-secret and --authorized-keys: "
                         "without CURVE there is no proven key to give rights to")
    if not cfg.curve_secret and not cfg.insecure:
        for endpoint in endpoints:
            if endpoint and not is_local(endpoint):
                raise ValueError(
                    f"refusing to serve {endpoint} without CURVE: anybody who reaches it "
                    f"could publish, consume and delete queues. Give --curve-secret and "
                    f"--authorized-keys (docs/SECURITY.md), bind a loopback address, or "
                    f"give --insecure to serve it unauthenticated")
    if not (isinstance(cfg.hello_timeout, int | float) and math.isfinite(cfg.hello_timeout)
            and 0.1 <= cfg.hello_timeout <= 3600):
        raise ValueError("hello_timeout must be between 0.1 and 3600 seconds")
    for name in ("max_sessions", "max_sessions_per_key", "malformed_budget"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1")
