"""CURVE on zq's sockets: the keys a client or a server uses, and setting them.

A client (the SDK, a worker, a router's link, a standby, a broker shipping a queue)
holds its own key pair and the server's public key; a server holds its key pair and
asks the ZAP authenticator (``zq.security.auth``) about each client key. Keys are
read from files in pyzmq's certificate format (``zq keys generate``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zmq

from zq.security import keys
from zq.transport import ZAP_DOMAIN

ENV_SECRET = "ZQ_CURVE_SECRET"
ENV_SERVER_KEY = "ZQ_SERVER_KEY"


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """A CURVE client's own key pair and the server's public key (z85 bytes)."""

    public: bytes
    secret: bytes
    server: bytes

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client (before it connects)."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)

    def __repr__(self) -> str:  # never print a secret key
        return f"ClientKeys(public={self.public.decode()!r}, server={self.server.decode()!r})"


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """A CURVE server's key pair (z85 bytes)."""

    public: bytes
    secret: bytes

    @classmethod
    def load(cls, secret_file: str) -> ServerKeys:
        public, secret = keys.secret_pair(secret_file)
        return cls(public, secret)

    def apply(self, sock: zmq.Socket[Any], domain: bytes = ZAP_DOMAIN) -> None:
        """Make ``sock`` a CURVE server whose peers the authenticator of ``domain`` checks
        (before it binds)."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, domain)

    def as_client(self) -> ClientKeys:
        """This server's own key pair as a client of a server holding the same pair: a
        standby of its primary, a broker shipping a queue to another of its cluster."""
        return ClientKeys(self.public, self.secret, self.public)

    def __repr__(self) -> str:
        return f"ServerKeys(public={self.public.decode()!r})"


def client_keys(curve_secret: str | None = None, server_key: str | None = None,
                env: Mapping[str, str] | None = None) -> ClientKeys | None:
    """The client keys from the arguments, else from ``ZQ_CURVE_SECRET`` and
    ``ZQ_SERVER_KEY``; None when neither is set. One without the other, or a file that
    cannot be read, raises ValueError saying which."""
    source: Mapping[str, str] = os.environ if env is None else env
    secret = curve_secret or source.get(ENV_SECRET) or None
    server = server_key or source.get(ENV_SERVER_KEY) or None
    if secret is None and server is None:
        return None
    if secret is None or server is None:
        missing = "curve_secret (ZQ_CURVE_SECRET)" if secret is None else \
            "server_key (ZQ_SERVER_KEY)"
        raise ValueError(f"CURVE needs both a secret key and the server's public key: "
                         f"{missing} is missing")
    public, own = keys.secret_pair(secret)
    return ClientKeys(public, own, keys.server_key(server))
