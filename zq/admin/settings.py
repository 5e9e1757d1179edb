"""The admin listener's settings, the same for brokers and routers: checks and help.
No I/O but :func:`read_token`, which the listener calls when it starts.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

HELP: dict[str, str] = {
    "admin_bind": "Serve the admin HTTP listener (/metrics, /health, the JSON API and the "
                  "dashboard) on HOST:PORT, or PORT alone for 127.0.0.1:PORT (0: a free "
                  "port, logged). Another address than loopback needs --admin-token, or "
                  "--insecure. [default: off]",
    "admin_token": "A file holding the bearer token the admin listener asks for "
                   "(Authorization: Bearer TOKEN) on everything but /health and the "
                   "dashboard's files; needed with --curve-secret. [default: no token]",
}
MIN_TOKEN = 16  # characters of an admin token


def address(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (loopback) as (host, port); ValueError says what is wrong."""
    host, sep, port = bind.strip().rpartition(":")
    if not sep:
        host, port = "127.0.0.1", bind.strip()
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536 or "/" in host:
        raise ValueError(f"--admin-bind must look like 127.0.0.1:9100 or 9100, got {bind!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(cfg: Any) -> None:
    """Validate ``admin_bind`` and ``admin_token`` of a broker's or a router's config."""
    if cfg.admin_token and not cfg.admin_bind:
        raise ValueError("--admin-token needs --admin-bind: there is no admin listener")
    if not cfg.admin_bind:
        return
    host, _ = address(cfg.admin_bind)
    if cfg.curve_secret and not cfg.admin_token:
        raise ValueError("with --curve-secret, the admin listener needs --admin-token FILE: "
                         "it would show every queue to anybody who reaches it")
    if not is_loopback(host) and not cfg.admin_token and not cfg.insecure:
        raise ValueError(f"--admin-bind {cfg.admin_bind} is not a loopback address: give "
                         f"--admin-token FILE (or --insecure to serve it to anybody)")


def read_token(path: str) -> str:
    """The token in file ``path`` (its first line, stripped); ValueError if too short."""
    if not path:
        return ""
    if os.stat(path).st_mode & 0o077:
        raise ValueError(f"{path}: an admin token file must be readable by its owner only "
                         f"(chmod 600 {path})")
    with open(path, encoding="utf-8-sig") as fh:
        token = fh.readline().strip()
    if (len(token) < MIN_TOKEN or not token.isascii() or not token.isprintable()
            or " " in token):
        raise ValueError(f"{path}: an admin token is one line of at least {MIN_TOKEN} "
                         f"printable ASCII characters without spaces (e.g. openssl rand "
                         f"-hex 32)")
    return token
