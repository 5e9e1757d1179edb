"""Security as a new user meets it on the command line: serving a non-loopback address
without CURVE is refused (unless --insecure), key files that are missing or unsafe stop
the start with a clear error, `zq keys` makes pairs the broker and the CLI use, and
`zq admin reload` says what changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cluster_helpers import zq_cli
from tests.procs import Proc, zq_argv


async def _run(tmp: Path, *args: str) -> tuple[int, str]:
    proc = await Proc.start(zq_argv(*args), tmp / "run.log")
    rc = await proc.wait(30)
    return rc, proc.stderr()


@pytest.mark.parametrize("command", ["broker", "router"])
async def test_a_public_address_without_curve_is_refused(tmp_path: Path, command: str) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text('cluster_id = "c"\nversion = 1\n[[brokers]]\nid = "b1"\n'
                       'endpoint = "tcp://127.0.0.1:1"\n')
    extra = ["--cluster", str(cluster)] if command == "router" else ["--data",
                                                                      str(tmp_path / "d")]
    rc, err = await _run(tmp_path, command, "--bind", "tcp://0.0.0.0:*", *extra)
    assert rc == 2
    assert "refusing to serve tcp://0.0.0.0:* without CURVE" in err
    assert "--insecure" in err


async def test_insecure_serves_a_public_address(tmp_path: Path) -> None:
    proc = await Proc.start(zq_argv("broker", "--bind", "tcp://0.0.0.0:*", "--insecure",
                                    "--data", str(tmp_path / "d")), tmp_path / "b.log")
    try:
        endpoint = await proc.ready_line()
        assert endpoint.startswith("tcp://0.0.0.0:")
    finally:
        await proc.terminate_and_expect_exit(0)


async def test_missing_or_unsafe_keys_stop_the_start(tmp_path: Path) -> None:
    rc, err = await _run(tmp_path, "broker", "--bind", "tcp://127.0.0.1:*",
                         "--curve-secret", str(tmp_path / "nope.key_secret"),
                         "--authorized-keys", str(tmp_path))
    assert rc == 2
    assert "nope.key_secret" in err
    rc, out = await zq_cli("keys", "generate", "server", "--dir", str(tmp_path / "k"))
    assert rc == 0, out
    secret = tmp_path / "k" / "server.key_secret"
    os.chmod(secret, 0o644)
    rc, err = await _run(tmp_path, "broker", "--bind", "tcp://127.0.0.1:*",
                         "--curve-secret", str(secret), "--authorized-keys", str(tmp_path / "k"))
    assert rc == 2
    assert "chmod 600" in err
    os.chmod(secret, 0o600)
    rc, err = await _run(tmp_path, "broker", "--bind", "tcp://127.0.0.1:*",
                         "--curve-secret", str(secret))
    assert rc == 2
    assert "--curve-secret and --authorized-keys go together" in err


async def test_keys_broker_and_cli_together_and_admin_reload(tmp_path: Path) -> None:
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    for name in ("server", "alice"):
        rc, out = await zq_cli("keys", "generate", name, "--dir", str(keys))
        assert rc == 0, out
    authorized.mkdir()
    (authorized / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    perms = tmp_path / "permissions.toml"
    perms.write_text('[keys.alice]\npublish = ["orders.#"]\nadmin = true\n')
    proc = await Proc.start(zq_argv("broker", "--bind", "tcp://127.0.0.1:*", "--data",
                                    str(tmp_path / "d"), "--curve-secret",
                                    str(keys / "server.key_secret"), "--authorized-keys",
                                    str(authorized), "--permissions", str(perms)),
                            tmp_path / "b.log")
    try:
        ep = await proc.ready_line()
        alice = ["-e", ep, "--curve-secret", str(keys / "alice.key_secret"),
                 "--server-key", str(keys / "server.key")]
        rc, out = await zq_cli("publish", "orders.eu", "hello", *alice)
        assert rc == 0, out
        rc, out = await zq_cli("publish", "invoices", "hello", *alice)
        assert rc == 1
        assert "FORBIDDEN: key 'alice' may not publish to queue 'invoices'" in out
        rc, out = await zq_cli("stats", "-e", ep, "--timeout", "2")  # no key at all
        assert rc == 1
        assert "refused the connection" in out
        rc, out = await zq_cli("keys", "show", str(keys / "alice.key"))
        assert rc == 0
        assert out.strip() in (keys / "alice.key").read_text()
        perms.write_text('[keys.alice]\npublish = ["#"]\nadmin = true\n')
        rc, out = await zq_cli("admin", "reload", *alice)
        assert rc == 0, out
        summary = json.loads(out)
        assert summary["permissions_changed"] == ["alice"]
        assert summary["keys"] == 1
        rc, out = await zq_cli("publish", "invoices", "hello", *alice)
        assert rc == 0, out  # the new rights hold for new sessions
    finally:
        await proc.terminate_and_expect_exit(0)
