"""What a new user of the `zq` command line runs into, typed as they would type it.

Each test drives the real CLI as a subprocess against a real broker process
(or, for the connect timeout, against a port where nothing listens).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable

import pytest
from click.testing import CliRunner

import zq
from tests.helpers import free_port
from tests.procs import ROOT, Proc
from zq.cli import main
from zq.config import BrokerConfig
from zq.tasks import TASK_HEADER, encode_body


async def cli(*args: str, endpoint: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``zq ARGS`` (with ZQ_ENDPOINT set to ENDPOINT); return (exit code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("ZQ_ENDPOINT", "ZQ_TIMEOUT")}
    if endpoint is not None:
        full_env["ZQ_ENDPOINT"] = endpoint
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zq", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full_env,
        cwd=str(ROOT))
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# ------------------------------------------------------------ 1. stats per consumer


async def test_stats_shows_each_consumer_with_its_credit(broker: Proc) -> None:
    ep = broker.endpoint
    async with zq.Client(ep, name="holder") as client:
        await client.publish_many("jobs", [b"a", b"b", b"c"])
        async with client.consume("jobs", prefetch=5) as consumer:
            held = [await consumer.get(10) for _ in range(3)]  # not acked: in flight
            rc, out, err = await cli("stats", endpoint=ep)
            assert rc == 0, err
            for msg in held:
                await msg.ack()
    lines = out.splitlines()
    assert lines[0].startswith("broker ")  # the existing lines stay
    assert any(line.startswith("queue ") and "in-flight" in line for line in lines), out
    holder = [i for i, line in enumerate(lines) if line.startswith("peer holder (")]
    assert len(holder) == 1, out
    assert lines[holder[0]].endswith("holds 3"), out
    assert lines[holder[0] + 1] == "  queue jobs: in-flight 3, available 2, peak 3", out
    assert any(line.startswith("peer zq-stats (") for line in lines), out


# ------------------------------------------------------------ 2. redrive with nothing to do


async def test_redrive_of_an_empty_or_never_created_dlq_has_nothing_to_do(
        broker: Proc) -> None:
    ep = broker.endpoint
    rc, out, err = await cli("dlq", "redrive", "emails.dlq", endpoint=ep)
    assert (rc, out.strip()) == (0, "nothing to redrive: no dead letters in emails.dlq"), err
    rc, out, err = await cli("dlq", "ls", "emails.dlq", endpoint=ep)
    assert (rc, out.strip()) == (0, "no dead letters in emails.dlq"), err

    rc, _, err = await cli("queue", "declare", "jobs.dlq", endpoint=ep)  # exists, empty
    assert rc == 0, err
    rc, out, err = await cli("dlq", "redrive", "jobs.dlq", endpoint=ep)
    assert (rc, out.strip()) == (0, "nothing to redrive: no dead letters in jobs.dlq"), err
    async with zq.Client(ep) as client:
        assert "emails.dlq" not in await client.queues()  # looking did not create it


# ------------------------------------------------------------ 3. consume an unknown queue


async def test_consume_of_an_unknown_queue_says_so_and_waits_for_it(broker: Proc) -> None:
    ep = broker.endpoint
    env = {k: v for k, v in os.environ.items() if k != "ZQ_TIMEOUT"}
    env["ZQ_ENDPOINT"] = ep
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zq", "consume", "TYPO", "--count", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        cwd=str(ROOT))
    assert proc.stderr is not None
    try:
        first = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
        assert "TYPO" in first, first
        assert "does not exist yet" in first, first
        assert "waiting for messages" in first, first
        rc, _, err = await cli("publish", "TYPO", "hello", endpoint=ep)
        assert rc == 0, err
        out, rest = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (proc.returncode, out.decode()) == (0, "hello\n"), rest.decode()


async def test_consume_no_create_refuses_an_unknown_queue_and_creates_nothing(
        broker: Proc) -> None:
    ep = broker.endpoint
    rc, out, err = await cli("consume", "TYPO", "--no-create", endpoint=ep, timeout=15)
    assert (rc, out) == (1, ""), err
    assert len(err.strip().splitlines()) == 1, err
    assert "TYPO" in err
    assert "does not exist" in err
    assert "Traceback" not in err
    async with zq.Client(ep) as client:
        assert "TYPO" not in await client.queues()

    rc, _, err = await cli("publish", "jobs", "one", endpoint=ep)  # a queue that exists
    assert rc == 0, err
    rc, out, err = await cli("consume", "jobs", "--no-create", "--count", "1", endpoint=ep)
    assert (rc, out, "does not exist" in err) == (0, "one\n", False), err


# ------------------------------------------------------------ 4. task bodies decoded


async def test_dlq_ls_and_peek_show_task_calls_decoded(broker: Proc) -> None:
    ep = broker.endpoint
    task_body = encode_body(["ann@x"], {"subject": "Hi"})
    async with zq.Client(ep) as client:
        await client.declare_queue("emails", max_attempts=1)
        await client.publish("emails", task_body, headers={TASK_HEADER: "send_mail"})
        await client.publish("emails", b"plain words", headers={TASK_HEADER: "send_mail"})
        await client.publish("jobs", encode_body([], {}), headers={TASK_HEADER: "cleanup"})
        async with client.consume("emails", prefetch=2) as consumer:
            for _ in range(2):
                msg = await consumer.get(10)
                await msg.nack(requeue=False, reason="relay down", wait=True)

    rc, out, err = await cli("dlq", "ls", "emails.dlq", endpoint=ep)
    assert rc == 0, err
    bodies = [line for line in out.splitlines() if line.startswith("  body: ")]
    assert bodies == ["  body: task send_mail(args=['ann@x'], kwargs={'subject': 'Hi'})",
                      "  body: plain words"], out  # not a task call: shown as text
    assert "\ufffd" not in out

    rc, out, err = await cli("queue", "peek", "jobs", endpoint=ep)
    assert rc == 0, err
    assert out.splitlines()[1] == "  task cleanup(args=[], kwargs={})", out

    rc, out, err = await cli("dlq", "ls", "emails.dlq", "--json", endpoint=ep)
    assert rc == 0, err
    assert json.loads(out)[0]["body"] == task_body.decode("utf-8", "replace")  # unchanged


# ------------------------------------------------------------ 5. every setting is a flag


def _setting_names() -> list[str]:
    return [f.name for f in dataclasses.fields(BrokerConfig) if f.name != "queues"]


async def test_every_broker_setting_is_a_flag_with_help() -> None:
    rc, out, err = await cli("broker", "--help")
    assert rc == 0, err
    for name in _setting_names():
        assert f"--{name.replace('_', '-')} " in out, f"no flag for BrokerConfig.{name}"
    from zq.config import SETTING_HELP

    assert sorted(SETTING_HELP) == sorted(_setting_names()), "a help line per setting"
    # The flags that were there before keep their shapes.
    for shape in ("-b, --bind TEXT", "-d, --data DIRECTORY", "--storage [sqlite|memory]",
                  "--fsync [full|normal]", "--dispatch POLICY", "--config FILE"):
        assert shape in out, shape


async def test_broker_flags_reach_the_broker(
        broker_factory: Callable[..., Awaitable[Proc]]) -> None:
    proc = await broker_factory("--max-frame", "65536", "--max-publish-batch", "50",
                                "--shutdown-grace", "1.5", "--window", "500")
    async with zq.Client(proc.endpoint) as client:
        assert client.conn.welcome.max_frame == 65536
        with pytest.raises(zq.ZqError):
            await client.publish("big", b"x" * 100_000)  # over the frame limit
        assert await client.publish("small", b"fits") >= 1


async def test_a_bad_broker_flag_value_is_a_usage_error() -> None:
    rc, _, err = await cli("broker", "--max-frame", "10", "--data", "unused")
    assert rc == 2
    assert "max_frame" in err
    assert "Traceback" not in err


# ------------------------------------------------------------ 6. connect timeout


async def test_timeout_bounds_the_wait_for_a_missing_broker() -> None:
    ep = f"tcp://127.0.0.1:{free_port()}"
    for args, env in ((("stats", "--timeout", "0.5"), None),
                      (("queue", "ls"), {"ZQ_TIMEOUT": "0.5"}),
                      (("consume", "jobs", "--timeout", "0.5"), None)):
        t0 = time.monotonic()
        rc, out, err = await cli(*args, endpoint=ep, env=env, timeout=15)
        elapsed = time.monotonic() - t0
        assert (rc, out) == (1, ""), (args, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
        assert f"no zq broker answered at {ep} within 0.5s" in err, (args, err)
        assert elapsed < 3.0, f"{args} took {elapsed:.1f}s with a 0.5 s timeout"


def test_every_client_command_has_a_connect_timeout() -> None:
    commands = [["publish"], ["stats"], ["queue", "declare"], ["queue", "info"],
                ["queue", "ls"], ["queue", "pause"], ["queue", "resume"], ["queue", "purge"],
                ["queue", "delete"], ["queue", "peek"], ["dlq", "ls"], ["dlq", "redrive"],
                ["schedule", "add"], ["schedule", "ls"], ["schedule", "rm"]]
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(main, [*command, "--help"], terminal_width=200)
        assert result.exit_code == 0, command
        assert "--timeout SECONDS" in result.output, command
        assert "ZQ_TIMEOUT" in result.output, command
