"""``zq stream`` and ``zq consume --group``: the real command line against a real broker
with a durable (SQLite) store, as streams need one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import zq
from tests.cluster_helpers import zq_cli
from tests.helpers import eventually
from tests.procs import Proc, start_broker

S = "events"
BODIES = [f"m{i:02d}" for i in range(20)]


def _entries(text: str) -> list[tuple[int, str]]:
    """(offset, body) of each entry ``zq consume --headers`` printed."""
    lines = text.splitlines()
    got = []
    for i, line in enumerate(lines):
        if line.startswith('{"id"'):
            meta = json.loads(line)
            assert meta["offset"] == meta["id"], meta
            got.append((meta["offset"], lines[i + 1]))
    return got


async def _idle(c: zq.Client, group: str) -> None:
    """Wait until the broker has seen the last consumer of ``group`` go (its BYE)."""

    async def idle() -> bool:
        s = await c.stream(S)
        return all(g["consumers"] == 0 for g in s["groups"] if g["group"] == group)

    await eventually(idle, f"group {group} without consumers")


async def _consume(ep: tuple[str, str], *args: str) -> tuple[int, str]:
    return await zq_cli("consume", S, "--group", "g", "--headers", *args, *ep)


async def _stop(broker: Proc) -> None:
    await broker.terminate_and_expect_exit(0, within=15)


async def test_declare_read_in_a_group_reset_and_delete(tmp_path: Path) -> None:
    broker = await start_broker(tmp_path)
    ep = ("--endpoint", broker.endpoint)
    try:
        code, text = await zq_cli("stream", "declare", S, "--max-age", "7d", "--max-bytes",
                                  "10GB", *ep)
        assert (code, text.strip()) == (0, f"stream {S} declared (max-age 7d, max-bytes 10GB)")
        code, text = await zq_cli("stream", "info", S, "--json", *ep)
        assert code == 0, text
        info = json.loads(text)
        assert (info["max_age"], info["max_bytes"], info["entries"]) == (
            604_800, 10_000_000_000, 0)
        async with zq.Client(broker.endpoint) as c:
            ids = await c.publish_many(S, [b.encode() for b in BODIES])

            code, text = await _consume(ep, "--from", "first", "--count", "20",
                                        "--timeout", "10")
            assert code == 0, text
            got = _entries(text)
            assert [b for _, b in got] == BODIES, text
            offsets = [o for o, _ in got]
            assert offsets == sorted(set(offsets)), text  # increasing
            assert offsets == ids, text
            assert "consumed 20 message(s)" in text

            await _idle(c, "g")  # the group goes on from its committed offset: nothing new
            code, text = await _consume(ep, "--count", "5", "--timeout", "2")
            assert code == 0, text
            assert _entries(text) == [], text
            assert "consumed 0 message(s)" in text, text

            await _idle(c, "g")
            code, text = await zq_cli("stream", "group", "reset", S, "g", "--to", "first", *ep)
            assert code == 0, text
            assert f"group g of stream {S} reset to first" in text, text
            code, text = await _consume(ep, "--count", "20", "--timeout", "10")
            assert code == 0, text
            assert _entries(text) == got, text

            await _idle(c, "g")
            eleventh = offsets[10]
            code, text = await zq_cli("stream", "group", "reset", S, "g", "--to",
                                      str(eleventh), *ep)
            assert code == 0, text
            code, text = await _consume(ep, "--count", "10", "--timeout", "10")
            assert code == 0, text
            assert _entries(text) == got[10:], text

            await _idle(c, "g")  # and nothing is left for the group: the ls says so
            code, text = await zq_cli("stream", "ls", *ep)
            assert code == 0, text
            assert text.splitlines() == [
                f"{S}: 20 entries, 60 bytes, offsets {offsets[0]}..{offsets[-1]}; "
                f"max-age 7d, max-bytes 10GB",
                f"  group g: committed {offsets[-1]}, pending 0, consumers 0"], text

            code, text = await zq_cli("stream", "group", "delete", S, "g", *ep)
            assert (code, text.strip()) == (0, f"group g of stream {S} deleted"), text
            assert (await c.stream(S))["groups"] == []
            code, text = await zq_cli("stream", "delete", S, *ep)
            assert (code, text.strip()) == (0, f"stream {S} deleted (20 entries)"), text
            assert await c.streams() == []
    finally:
        await _stop(broker)


async def test_what_is_refused_and_how(tmp_path: Path) -> None:
    broker = await start_broker(tmp_path)
    ep = ("--endpoint", broker.endpoint)
    try:
        (no_stream, no_stream_text), (no_group, no_group_text), (bad, bad_text), \
            (info, info_text) = await asyncio.gather(
                zq_cli("consume", "nosuch", "--group", "g", "--timeout", "5", *ep),
                zq_cli("consume", S, "--from", "first", *ep),
                zq_cli("stream", "declare", S, "--max-bytes", "10XB", *ep),
                zq_cli("stream", "info", "nosuch", *ep))
        assert no_stream == 1, no_stream_text
        assert "stream 'nosuch' does not exist" in no_stream_text, no_stream_text
        assert "Traceback" not in no_stream_text
        assert no_group == 2, no_group_text
        assert "--from needs --group" in no_group_text, no_group_text
        assert bad == 2, bad_text
        assert "'10XB' is not a size" in bad_text, bad_text
        assert info == 1, info_text
        assert "no stream named 'nosuch'" in info_text, info_text
        async with zq.Client(broker.endpoint) as c:
            assert await c.streams() == []  # nothing was made
    finally:
        await _stop(broker)
