"""The uplink's settings, ``uplink`` and ``uplink_queues``: checks and help. No I/O.

Both are comma-separated lists in a flag or an environment variable; a config file
may give a TOML list instead (``zq.config`` joins it).
"""

from __future__ import annotations

import math
from typing import Any

from zq.protocol.names import DLQ_SUFFIX
from zq.security.permissions import Pattern

HELP: dict[str, str] = {
    "uplink": "Forward the queues named by --uplink-queues to a central cluster: its "
              "routers' (or a lone broker's) endpoints, comma-separated, tried in turn. "
              "Each message is deleted here only once the centre confirmed it "
              "(docs/EDGE.md). [default: no uplink]",
    "uplink_queues": "With --uplink: the queues to forward, comma-separated patterns "
                     "(`*` one dot-separated word, `#` any number: orders.#,metrics.*). "
                     "They are not consumed here; other queues are. [default: none]",
    "uplink_curve_secret": "With --uplink: this broker's CURVE secret key file (zq keys "
                           "generate) for the centre, whose key folder must hold its public "
                           "key. [default: no CURVE]",
    "uplink_timeout": "With --uplink: seconds a frame sent to the centre may wait for its "
                      "answer before the uplink starts a new session (on the next endpoint) "
                      "and sends every unconfirmed frame again.",
    "uplink_server_key": "With --uplink-curve-secret: the centre's public key file (its "
                         "routers' and brokers' server key). [default: none]",
}


def split(text: str) -> list[str]:
    """``a, b,,c`` as ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def endpoints(cfg: Any) -> list[str]:
    """The uplink's endpoints (ValueError if one is not a tcp:// or ipc:// endpoint that
    can be connected to, or is the broker's own --bind)."""
    out = split(cfg.uplink)
    for ep in out:
        scheme, sep, rest = ep.partition("://")
        if not sep or scheme not in ("tcp", "ipc") or not rest or ";" in ep:
            raise ValueError(f"--uplink: {ep!r} is not an endpoint like tcp://10.0.0.5:5555 "
                             f"(several are separated by commas)")
        if scheme == "tcp":
            host, colon, port = rest.rpartition(":")
            if (not colon or not host or "*" in host or not port.isdigit()
                    or not 0 < int(port) < 65536):
                raise ValueError(f"--uplink: {ep!r} needs a host and a port (1-65535) to "
                                 f"connect to")
        if ep == cfg.bind:
            raise ValueError(f"--uplink: {ep} is this broker's own --bind: give the "
                             f"centre's routers (or broker)")
    if len(set(out)) != len(out):
        raise ValueError(f"--uplink: an endpoint is given twice: {cfg.uplink!r}")
    return out


def patterns(cfg: Any) -> tuple[Pattern, ...]:
    """The compiled ``uplink_queues`` (ValueError says which one is wrong)."""
    out = []
    for text in split(cfg.uplink_queues):
        try:
            out.append(Pattern.compile(text))
        except ValueError as exc:
            raise ValueError(f"--uplink-queues: {exc}") from None
    return tuple(out)


def forwarded(pats: tuple[Pattern, ...], name: str) -> bool:
    """Whether queue ``name`` is forwarded (a dead-letter queue never is: it stays here)."""
    return not name.endswith(DLQ_SUFFIX) and any(p.matches(name) for p in pats)


def check(cfg: Any) -> None:
    """Validate the uplink settings of a broker's config."""
    if not (math.isfinite(cfg.uplink_timeout) and 0.1 <= cfg.uplink_timeout <= 3600):
        raise ValueError("uplink_timeout must be between 0.1 and 3600 seconds")
    eps, pats = endpoints(cfg), patterns(cfg)
    if not eps:
        if pats or cfg.uplink_curve_secret or cfg.uplink_server_key:
            what = "--uplink-queues" if pats else "--uplink-curve-secret/--uplink-server-key"
            raise ValueError(f"{what} needs --uplink ENDPOINT: there is nowhere to forward to")
        return
    if not pats:
        raise ValueError("--uplink needs --uplink-queues PATTERN: which queues to forward")
    if bool(cfg.uplink_curve_secret) != bool(cfg.uplink_server_key):
        raise ValueError("--uplink-curve-secret and --uplink-server-key go together: CURVE "
                         "needs this broker's secret key and the centre's public key")
    if cfg.storage != "sqlite":
        raise ValueError("--uplink needs --storage sqlite: an edge broker keeps what it "
                         "forwards on disk until the centre has confirmed it")
    if cfg.cluster or cfg.ha:
        raise ValueError("--uplink is for a broker of its own (an edge broker): not with "
                         "--cluster or --ha")
