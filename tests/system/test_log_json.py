"""``--log-json``: a real broker's stderr parses line by line as JSON, from its start
through a dropped peer to its shutdown (issue 16, "Logs").

The dropped peer is a raw DEALER that says HELLO with a short heartbeat and then says
nothing more: the broker drops it for silence, and says so once, at WARNING, with the
peer's name and the reason as fields of the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually
from tests.procs import Proc, zq_argv
from tests.system.rawpeer import Raw
from zq.protocol import codec
from zq.protocol import frames as f

ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SERVE = ("--bind", "tcp://127.0.0.1:*", "--storage", "memory", "--heartbeat", "0.2")


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of ``log`` as a JSON object with the core fields (fails on any other)."""
    out = []
    for n, line in enumerate(log.read_text(encoding="utf-8").split("\n")[:-1], 1):
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {n} of the log is not JSON: {line!r}") from None
        assert isinstance(obj, dict), line
        assert {"ts", "level", "logger", "msg", "pid"} <= set(obj), line
        assert ISO_MS_UTC.match(obj["ts"]), line
        out.append(obj)
    return out


def complete_lines(log: Path) -> list[dict[str, Any]]:
    """The lines written so far (a last one still being written is left for later)."""
    text = log.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n")[:-1]]


@pytest.mark.parametrize(("argv", "env"), [
    (zq_argv("broker", "--log-json", "--log-level", "info", *SERVE), {}),
    # the group's flag, the level from the environment
    (zq_argv("--log-json", "broker", *SERVE), {"ZQ_LOG_LEVEL": "info"}),
], ids=["broker-flags", "group-flag-and-env"])
async def test_log_json_covers_start_a_dropped_peer_and_shutdown(
        tmp_path: Path, raw: Callable[[str], Raw], argv: list[str],
        env: dict[str, str]) -> None:
    log = tmp_path / "broker.log"
    broker = await Proc.start(argv, log, env)
    try:
        endpoint = await broker.ready_line()
        peer = raw(endpoint)
        await peer.send(codec.encode(f.Hello("silent-peer", heartbeat_ms=100)))
        assert isinstance(await peer.recv(), f.Welcome)

        def dropped() -> list[dict[str, Any]]:
            return [o for o in complete_lines(log) if o.get("event") == "peer_dropped"
                    and o.get("peer") == "silent-peer"]

        await eventually(lambda: bool(dropped()), "the silent peer's drop in the log")
    except BaseException:
        await broker.kill()
        raise
    await broker.terminate_and_expect_exit(0)

    lines = json_lines(log)
    assert {o["pid"] for o in lines} == {broker.pid}
    ready = [o for o in lines if o["logger"] == "zq.broker" and " ready on " in o["msg"]]
    assert [o["level"] for o in ready] == ["INFO"], lines
    assert endpoint in ready[0]["msg"]

    drops = [o for o in lines if o.get("event") == "peer_dropped"]
    assert len(drops) == 1, drops  # once, not once per heartbeat missed
    (drop,) = drops
    assert drop["level"] == "WARNING"
    assert drop["identity"]
    assert drop["reason"].startswith("no sign of life for ")
    assert drop["msg"].startswith(f"peer {drop['identity']} (silent-peer) dropped: "
                                  "no sign of life for ")

    assert lines[-1]["logger"] == "zq.broker"
    assert lines[-1]["msg"].startswith("stopped: ")
    assert lines[-1]["level"] == "INFO"
    assert not [o for o in lines if o["level"] in ("ERROR", "CRITICAL")], lines
