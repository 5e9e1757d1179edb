"""CURVE for a run (``zq-curve``): a broker with ``--curve-secret`` and its producers
and consumers connecting with their own key, through the same SDK as ``zq``.

The keys are made in the run's folder; the worker processes find theirs in
``ZQ_CURVE_SECRET`` and ``ZQ_SERVER_KEY``, set while they are spawned.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from zq.security import keys
from zq.security.curve import ENV_SECRET, ENV_SERVER_KEY


def broker_args(folder: Path) -> tuple[list[str], dict[str, str]]:
    """Make a server and a client key pair under ``folder``: the broker's extra flags,
    and the clients' environment."""
    folder.mkdir(parents=True, exist_ok=True)
    server_pub, server_secret = keys.generate("server", folder, force=True)
    authorized = folder / "authorized"
    authorized.mkdir(exist_ok=True)
    client_pub, client_secret = keys.generate("client", folder, force=True)
    (authorized / client_pub.name).write_bytes(client_pub.read_bytes())
    return (["--curve-secret", str(server_secret), "--authorized-keys", str(authorized)],
            {ENV_SECRET: str(client_secret), ENV_SERVER_KEY: str(server_pub)})


@contextlib.contextmanager
def client_env(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process (and the workers it spawns) while inside."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
