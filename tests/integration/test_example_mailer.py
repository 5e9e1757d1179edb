"""The mailer example (examples/mailer) run in process with ``zq.testing``: its
producer, its retried sends, its dead letter and its schedule, with no broker
process."""

from __future__ import annotations

import asyncio
import email
import time
from collections import Counter
from pathlib import Path

import pytest

import zq
import zq.testing
from examples.mailer import producer, sender
from examples.mailer.app import OPERATORS, app
from examples.mailer.schedule import NAME, add_digest_schedule


@pytest.fixture(autouse=True)
def outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAILER_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("MAILER_FAILURE_RATE", "0")
    return tmp_path / "outbox"


async def test_producer_gets_every_mail_sent_and_reports_the_dead_one(
        outbox: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The relay is busy at the first try for every other address (not at random,
    # so that the counts below are exact).
    tries: Counter[str] = Counter()
    relay = sender.send

    def busy_at_first(to: str, subject: str, text: str) -> str:
        tries[to] += 1
        if tries[to] == 1 and to[0] in "aceginkmoqsuwy":
            raise sender.TemporaryFailure("451 4.3.0 mail server busy, try again later")
        return relay(to, subject, text)

    monkeypatch.setattr(sender, "send", busy_at_first)
    async with zq.testing.Broker(app):
        worker = zq.Worker(app, concurrency=4, handle_signals=False)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(worker.run())
            sent, dead = await producer.welcome_all(12, wait=30)
            worker.stop()
    assert (sent, dead) == (12, 1)
    out = capsys.readouterr().out
    assert ("FAILED ghost@invalid.example: examples.mailer.sender.PermanentFailure: 550 5.1.1 "
            "<ghost@invalid.example>: recipient address rejected (after 4 attempts)") in out
    assert 'raised at "' in out
    mails = [email.message_from_bytes(p.read_bytes()) for p in sender.sent()]
    assert sorted(m["To"] for m in mails) == sorted(
        addr for _, addr in producer.signups(12) if not addr.endswith("invalid.example"))
    assert all(m["Subject"].startswith("Welcome to the shop, ") for m in mails)
    assert not list(outbox.glob(".*.tmp"))
    busy = [to for to in tries if to[0] in "aceginkmoqsuwy" and "invalid" not in to]
    assert busy
    assert [tries[to] for to in busy] == [2] * len(busy)
    assert "attempt 2" in out
    # 13 renders and 12 sends succeeded; the busy ones failed once, the dead one 4 times
    assert worker.counters["succeeded"] == 13 + 12
    assert worker.counters["failed"] == len(busy) + 4


async def test_the_digest_schedule_fires_a_task_that_queues_a_mail() -> None:
    async with zq.testing.Broker(app):
        client = await app.client()
        first = await add_digest_schedule(client, every="100ms")
        assert first <= time.time() + 0.11
        deadline = time.monotonic() + 5
        while not (await client.schedules())[0]["fired"]:
            assert time.monotonic() < deadline, "the schedule did not fire"
            await asyncio.sleep(0.02)
        assert await client.remove_schedule(NAME)
        counts = await zq.testing.run_until_idle(app)
    assert counts["succeeded"] >= 2  # at least one digest and its send
    tos = [email.message_from_bytes(p.read_bytes())["To"] for p in sender.sent()]
    assert tos
    assert set(tos) == {OPERATORS}
