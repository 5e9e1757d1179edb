"""A replicated broker with CURVE: both nodes share the server's key pair, the standby
replicates over CURVE with it, clients authenticate with their own keys and fail over
with nothing lost or stored twice; the replication endpoint lets in no other key, and
no peer without a key."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

import zq
from tests.etcd import Etcd
from tests.helpers import eventually
from tests.system.ha_helpers import PREFIX, HaPair, Producers, check_stored, same_rows
from zq.security import keys
from zq.security.curve import ENV_SECRET, ENV_SERVER_KEY, ClientKeys


def _keys(tmp: Path) -> tuple[Path, Path, Path, Path]:
    """(server .key, server .key_secret, alice .key_secret, authorized folder)."""
    server_pub, server_secret = keys.generate("server", tmp / "keys")
    alice_pub, alice_secret = keys.generate("alice", tmp / "keys")
    authorized = tmp / "authorized"
    authorized.mkdir()
    (authorized / "alice.key").write_bytes(alice_pub.read_bytes())
    return server_pub, server_secret, alice_secret, authorized


async def _security(endpoint: str, server_pub: Path, server_secret: Path) -> dict[str, object]:
    """The node's STATS ``security`` map, asked with the server's own key."""
    async with zq.Client(endpoint, curve_secret=str(server_secret),
                         server_key=str(server_pub), connect_timeout=10) as admin:
        return dict((await admin.stats())["security"])


async def _knock(repl: str, keys_: ClientKeys | None) -> None:
    """Connect to the replication endpoint, ask to follow, and give up after a while."""
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, -1)
    if keys_ is not None:
        keys_.apply(sock)
    sock.connect(repl)
    try:
        await sock.send_multipart([b"ZQRC", b"\x81\xa2op\xa6follow"])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sock.recv_multipart(), 1.0)
    finally:
        sock.close(linger=0)


@pytest.mark.timeout(240)
async def test_replication_over_curve_fails_over_and_refuses_other_keys(
        tmp_path: Path, etcd: Etcd, monkeypatch: pytest.MonkeyPatch) -> None:
    server_pub, server_secret, alice_secret, authorized = _keys(tmp_path)
    monkeypatch.setenv(ENV_SECRET, str(alice_secret))  # every zq.Client of this test
    monkeypatch.setenv(ENV_SERVER_KEY, str(server_pub))
    pair = HaPair(tmp_path, etcd, "--curve-secret", str(server_secret),
                  "--authorized-keys", str(authorized))
    producers = Producers(pair.endpoints, n=2)
    try:
        await pair.start_both()  # the standby is in sync: it replicated over CURVE
        producers.start()
        await eventually(lambda: producers.count >= 200, "confirms", 60, 0.05)

        leader = json.loads((await pair.client.get(PREFIX + b"leader")).value)
        repl, primary = leader["repl"], int(leader["node"][1])
        alice_pub, alice_own = keys.secret_pair(alice_secret)
        await _knock(repl, ClientKeys(alice_pub, alice_own, keys.server_key(server_pub)))
        await _knock(repl, None)
        sec = await _security(pair.endpoints[primary], server_pub, server_secret)
        assert sec["curve"] is True
        assert sec["keys_refused"] == {"key not allowed in 'zq-repl'": 1}, sec

        pair.kill(primary)
        assert await pair.reap(primary) == -signal.SIGKILL
        await pair.wait_leader(f"n{1 - primary}")
        count = producers.count
        await eventually(lambda: producers.count >= count + 200,
                         "confirms from the new primary", 60, 0.05)
        await pair.start(primary)
        await pair.wait_sync(f"n{primary}")  # the old primary follows, over CURVE
        await producers.stop()
        check_stored(pair, producers.confirmed, 1 - primary)
        await same_rows(pair)
    finally:
        if not producers._stop.is_set():
            await producers.stop()
        await pair.stop()
