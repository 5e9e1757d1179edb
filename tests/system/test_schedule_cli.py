"""`zq schedule add/ls/rm` against a real broker process, as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import zq
from tests.procs import Proc
from tests.system.test_cli import cli


async def test_add_ls_rm_and_the_messages_it_fires(broker: Proc, tmp_path: Path) -> None:
    ep = broker.endpoint
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"\x00\xffbinary")
    rc, out, err = await cli("schedule", "add", "tick", "--every", "200ms", "--queue", "ticks",
                             "--body", "ping", "-H", "kind=tick", "--priority", "5",
                             "--misfire", "skip", endpoint=ep)
    assert rc == 0, err
    assert out.startswith("schedule tick: every 200ms to ticks, next due ")
    rc, out, err = await cli("schedule", "add", "daily", "--cron", "30 6 * * *", "--queue",
                             "reports", "--body-file", str(payload), "--max-attempts", "2",
                             endpoint=ep)
    assert rc == 0, err
    assert "cron '30 6 * * *' (UTC) to reports" in out

    rc, out, err = await cli("schedule", "ls", endpoint=ep)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["schedule", "queue", "when"]
    assert lines[1].split()[:4] == ["daily", "reports", "cron", "30"]
    assert lines[2].split()[:5] == ["tick", "ticks", "every", "200ms", "skip"]

    rc, out, err = await cli("schedule", "ls", "--json", endpoint=ep)
    assert rc == 0, err
    by_name = {s["name"]: s for s in json.loads(out)}
    assert by_name["tick"]["options"] == {"priority": 5}
    assert by_name["tick"]["headers"] == {"kind": "tick"}
    assert by_name["daily"]["options"] == {"max_attempts": 2}

    async with zq.Client(ep) as client, client.consume("ticks") as consumer:
        m = await consumer.get(timeout=5)
        assert (m.body, m.headers["kind"], m.headers["zq-schedule"]) == (b"ping", "tick", "tick")
        await m.ack()

    rc, out, err = await cli("schedule", "rm", "tick", endpoint=ep)
    assert (rc, out) == (0, "removed schedule tick\n"), err
    rc, out, err = await cli("schedule", "rm", "tick", endpoint=ep)
    assert rc == 1
    assert err.strip() == "Error: no schedule named 'tick'"
    rc, out, err = await cli("schedule", "ls", endpoint=ep)
    assert rc == 0, err
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["daily"]


async def test_bad_input_is_refused_in_one_line_before_connecting() -> None:
    nowhere = "tcp://127.0.0.1:9"  # nothing listens: a refusal must come before connecting
    for args, expect in [
        (["--queue", "q"], "give exactly one of --every and --cron"),
        (["--queue", "q", "--every", "1s", "--cron", "* * * * *"], "exactly one of"),
        (["--queue", "q", "--every", "10 parsecs"], "Invalid value for --every"),
        (["--queue", "q", "--cron", "61 * * * *"], "Invalid value for --cron"),
        (["--queue", "q", "--every", "1s", "--body", "a", "--body-file", "-"],
         "at most one of --body and --body-file"),
        (["--queue", "q", "--every", "1s", "-H", "novalue"], "expected KEY=VALUE"),
    ]:
        rc, out, err = await cli("schedule", "add", "x", *args, endpoint=nowhere, timeout=10)
        assert rc == 2, (args, out, err)
        assert expect in err.splitlines()[-1], (args, err)
