"""The ZAP authenticator of a broker or a router: which CURVE keys may connect.

pyzmq's asyncio authenticator, with the key directory read by zq (each key named by
its file) and two domains: ``zq`` for the client endpoint (the authorized keys, and
the server's own key) and ``zq-repl`` for a replicated broker's replication endpoint
(the server's own key only: a standby holds the same key pair as its primary). A key
let in gets its name as the connection's ZeroMQ ``User-Id``, which the broker reads
from every frame; nothing a peer sends can change it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator

from zq.security import keys
from zq.security.doorman import RateLog
from zq.security.permissions import SERVER

log = logging.getLogger("zq.security")

CLIENTS = "zq"  # the ZAP domain of the client endpoint (zq.transport.ZAP_DOMAIN)
REPLICATION = "zq-repl"  # the ZAP domain of a replicated broker's replication endpoint


class KeyGate(AsyncioAuthenticator):
    """Lets in the keys of a directory (re-read by :meth:`reload`) and the server's own."""

    def __init__(self, context: zmq.Context[Any], directory: str, own_key: bytes,
                 name: str = "server") -> None:
        super().__init__(context, log=logging.getLogger("zq.security.zap"))
        self.directory = directory
        self.own_key = own_key
        self.names: dict[bytes, str] = self._read()
        self.refused: Counter[str] = Counter()  # reason -> connections refused
        self.allowed = 0
        self._address = "?"  # of the request being handled
        self.refusals = RateLog(f"{name} authenticator")

    def _read(self) -> dict[bytes, str]:
        names = keys.key_names(self.directory)
        names[self.own_key] = SERVER
        return names

    def reload(self) -> set[str]:
        """Read the directory again; the names of the keys no longer in it. A directory
        that cannot be read now leaves the keys as they were (and raises ValueError)."""
        old = set(self.names.values())
        self.names = self._read()
        removed = old - set(self.names.values())
        log.info("authorized keys reloaded from %s: %d key(s)%s", self.directory,
                 len(self.names) - 1, f", removed {sorted(removed)}" if removed else "",
                 extra={"event": "keys_reloaded", "keys": len(self.names) - 1,
                        "removed": sorted(removed)})
        return removed

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode(errors="replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        z85 = zmq.utils.z85.encode(client_key)
        name = self.names.get(z85)
        if domain == REPLICATION:
            ok = z85 == self.own_key
        else:
            ok = domain == CLIENTS and name is not None
        if ok:
            self.allowed += 1
            return True, b"OK"
        reason = "unknown key" if domain == CLIENTS else f"key not allowed in {domain!r}"
        self.refused[reason] += 1
        key = z85.decode(errors="replace")
        self.refusals.say(reason, f"from {self._address}, key {key}", key=key,
                          key_name=name, address=self._address, domain=domain)
        return False, reason.encode()

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.names.get(zmq.utils.z85.encode(client_public_key), "?")
