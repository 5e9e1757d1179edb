"""The `zq` command line against a real broker, as a user types it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

import zq
from tests.procs import ROOT, Proc, start_broker


async def cli(*args: str, stdin: bytes | None = None, endpoint: str | None = None,
              timeout: float = 30.0) -> tuple[int, str, str]:
    env = dict(os.environ)
    env.pop("ZQ_ENDPOINT", None)
    if endpoint is not None:
        env["ZQ_ENDPOINT"] = endpoint
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zq", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
    out, err = await asyncio.wait_for(proc.communicate(stdin or b""), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_publish_consume_stats_round_trip(broker: Proc) -> None:
    ep = broker.endpoint
    rc, out, err = await cli("publish", "jobs", "resize a.png", "resize b.png", "--endpoint", ep)
    assert rc == 0, err
    assert out.split() == ["1", "2"]
    assert "published 2 message(s) to jobs" in err

    lines = b"".join(b"line %d\n" % i for i in range(2500))  # more than one stdin chunk
    rc, out, err = await cli("publish", "nums", "-q", stdin=lines, endpoint=ep)
    assert (rc, out) == (0, ""), err
    assert "published 2500 message(s)" in err

    rc, out, err = await cli("consume", "jobs", "--count", "2", endpoint=ep)
    assert rc == 0, err
    assert out.splitlines() == ["resize a.png", "resize b.png"]

    rc, out, err = await cli("consume", "nums", "--timeout", "1", "--prefetch", "500",
                             endpoint=ep)
    assert rc == 0, err
    assert out.splitlines() == [f"line {i}" for i in range(2500)]

    rc, out, err = await cli("stats", "--json", endpoint=ep)
    assert rc == 0, err
    s = json.loads(out)
    assert s["queues"]["jobs"]["acked"] == 2
    assert s["queues"]["nums"]["acked"] == 2500
    assert s["queues"]["nums"]["ready"] == 0
    assert s["store"]["kind"] == "sqlite"
    rc, out, err = await cli("stats", endpoint=ep)
    assert rc == 0, err
    assert "nums" in out
    assert "store sqlite (fsync full)" in out


async def test_headers_and_the_headers_view(broker: Proc) -> None:
    ep = broker.endpoint
    rc, _, err = await cli("publish", "mail", "-H", "to=ops@example.com", "disk full",
                           endpoint=ep)
    assert rc == 0, err
    rc, out, err = await cli("consume", "mail", "--count", "1", "--headers", endpoint=ep)
    assert rc == 0, err
    meta, body = out.splitlines()
    assert json.loads(meta) == {"id": 1, "attempt": 1, "headers": {"to": "ops@example.com"}}
    assert body == "disk full"


async def test_consume_count_leaves_the_rest_queued(broker: Proc) -> None:
    ep = broker.endpoint
    await cli("publish", "q", *[f"m{i}" for i in range(10)], endpoint=ep)
    rc, out, err = await cli("consume", "q", "--count", "3", endpoint=ep)
    assert (rc, out.split()) == (0, ["m0", "m1", "m2"]), err
    async with zq.Client(ep) as c:
        s = await c.stats()
    assert (s["queues"]["q"]["ready"], s["queues"]["q"]["acked"]) == (7, 3)


async def test_bad_input_is_a_clear_error_not_a_traceback(broker: Proc) -> None:
    ep = broker.endpoint
    rc, _, err = await cli("publish", "q", "-H", "novalue", "x", endpoint=ep)
    assert rc == 2
    assert "KEY=VALUE" in err
    assert "Traceback" not in err
    rc, _, err = await cli("publish", "", "x", endpoint=ep)
    assert rc == 1
    assert "queue name" in err
    assert "Traceback" not in err
    rc, _, err = await cli("consume", "q", "--prefetch", "0", endpoint=ep)
    assert rc == 2
    assert "prefetch" in err.lower()
    rc, _, err = await cli("broker", "--storage", "floppy")
    assert rc == 2
    assert "floppy" in err


async def test_no_broker_is_a_clear_error(tmp_path: object) -> None:
    rc, _, err = await cli("publish", "q", "x", "--endpoint", "tcp://127.0.0.1:1",
                           timeout=60)
    assert rc == 1
    assert "no zq broker answered" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["broker", "publish", "consume", "stats"])
async def test_every_command_has_help_with_examples(command: str) -> None:
    rc, out, _ = await cli(command, "--help")
    assert rc == 0
    assert "Examples" in out


async def test_version() -> None:
    rc, out, _ = await cli("--version")
    assert (rc, out.strip()) == (0, f"zq, version {zq.__version__}")


async def test_config_file_declares_queues_and_refuses_unknown_policies(
        tmp_path: Path) -> None:
    tmp = tmp_path
    good = tmp / "good.toml"
    good.write_text('[broker]\nheartbeat = 0.5\n\n[queues.mail]\nmax-attempts = 2\n'
                    'retry = "exponential"\nretry-delay = 0.5\nweights = { big = 3 }\n')
    broker = await start_broker(tmp, "--config", str(good))
    try:
        async with zq.Client(broker.endpoint) as c:
            info = await c.queue_info("mail")
            s = info["settings"]
            assert (s["max_attempts"], s["retry"], s["retry_delay"], s["weights"]) == (
                2, "exponential", 0.5, {"big": 3})
    finally:
        await broker.terminate_and_expect_exit(0)
    bad = tmp / "bad.toml"
    bad.write_text('[queues.mail]\nselection = "no-such-policy"\n')
    rc, _out, err = await cli("broker", "--bind", "tcp://127.0.0.1:*", "--data",
                             str(tmp / "data2"), "--config", str(bad))
    assert rc != 0
    assert "Traceback" not in err, err
    assert "queues.mail" in err, err
    assert "no-such-policy" in err, err
