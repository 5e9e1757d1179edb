"""Workers and tasks with real broker and `zq worker` processes (issue 6, acceptance 1-6).

The task apps live in ``tests/system/apps``; their tasks leave records in the
folder named by ``$ZQ_TEST_DIR`` (the test's ``tmp_path``), which the tests read.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import re
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import zq
import zq.testing
from tests.helpers import eventually, free_port
from tests.procs import ROOT, Proc, start_broker, zq_argv
from tests.system.apps import retrying, shop, slow, split
from tests.system.apps._record import read
from tests.system.test_cli import cli
from zq.tasks import TASK_HEADER, encode_body

Factory = Callable[..., Awaitable[Proc]]
APPS = "tests.system.apps"


@pytest.fixture
async def procs(broker_factory: Factory) -> AsyncIterator[list[Proc]]:
    """Processes a test starts (workers, brokers of its own); any still running at
    teardown are killed, before ``broker_factory`` stops its brokers."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        await p.kill()


async def start_worker(procs: list[Proc], tmp: Path, spec: str, *args: str, endpoint: str,
                       env: dict[str, str] | None = None) -> Proc:
    n = len(list(tmp.glob("worker*.log")))
    argv = zq_argv("--log-level", "info", "worker", spec, "--endpoint", endpoint, *args)
    proc = await Proc.start(argv, tmp / f"worker{n}.log",
                            {"ZQ_TEST_DIR": str(tmp), **(env or {})})
    procs.append(proc)
    await proc.wait_for_line("zq worker ready: ", timeout=15)
    return proc


async def subscribed(client: zq.Client, queue: str) -> int:
    """How many peers have credit at the broker for ``queue``."""
    s = await client.stats()
    return sum(1 for p in s["peers"].values()
               if p["subs"].get(queue, {}).get("active", True)
               and p["subs"].get(queue, {}).get("available", 0) > 0)


async def stop_workers(workers: list[Proc], within: float = 10.0) -> None:
    """One SIGTERM each, all at once; each must exit 0."""
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        try:
            rc = await w.wait(within)
        except TimeoutError:
            raise AssertionError(f"worker {w.pid} did not exit within {within}s of SIGTERM; "
                                 f"stderr:\n{w.stderr()}") from None
        assert rc == 0, f"worker {w.pid} exit code {rc}; stderr:\n{w.stderr()}"


# ------------------------------------------------------------------ 1. the example app


def readme_commands() -> dict[str, list[str]]:
    """The shell commands of README.md's "Tasks and workers" section, by what they run
    (the first of each kind), split as the shell would."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Tasks and workers\n(.*?)(?=^## )", text + "\n## ", re.M | re.S)
    assert m, "README.md has no '## Tasks and workers' section"
    found: dict[str, list[str]] = {}
    for block in re.findall(r"```sh\n(.*?)```", m.group(1), re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            kind = {("scripts/run",): "broker", ("zq", "broker"): "broker",
                    ("zq", "worker"): "worker", ("zq", "schedule"): "schedule ls"}.get(
                tuple(words[:1]) if words[:1] == ["scripts/run"] else tuple(words[:2]))
            if words[:2] == ["python", "-m"] and len(words) > 2:
                kind = words[2].rsplit(".", 1)[-1]  # producer, schedule
            if kind:
                found.setdefault(kind, words)
    return found


async def collect(proc: Proc, timeout: float) -> list[str]:
    """Every stdout line of ``proc`` until it closes stdout; fail after ``timeout``."""
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    lines.append(await proc.readline(timeout))
                except EOFError:
                    return lines
    except TimeoutError:
        raise AssertionError(f"{proc.argv[1:4]} did not finish; output so far:\n"
                             + "\n".join(lines) + f"\nstderr:\n{proc.stderr()}") from None


async def test_example_app_end_to_end_as_the_readme_says(broker_factory: Factory,
                                                         procs: list[Proc],
                                                         tmp_path: Path) -> None:
    cmds = readme_commands()
    assert {"broker", "worker", "producer", "schedule"} <= cmds.keys(), cmds
    # `scripts/run` is `zq broker` with its arguments (on its defaults in the README):
    # here on an ephemeral port and a temporary data folder.
    assert cmds["broker"][:1] == ["scripts/run"] or cmds["broker"][:2] == ["zq", "broker"]
    extra = cmds["broker"][1:] if cmds["broker"][0] == "scripts/run" else cmds["broker"][2:]
    broker = await broker_factory(*extra)
    outbox = tmp_path / "mailer-outbox"
    env = {"ZQ_ENDPOINT": broker.endpoint, "MAILER_OUTBOX": str(outbox)}
    assert cmds["worker"][:3] == ["zq", "worker", "examples.mailer.app:app"], cmds["worker"]
    worker = await Proc.start(zq_argv(*cmds["worker"][1:]), tmp_path / "worker.log", env)
    procs.append(worker)
    ready = await worker.wait_for_line("zq worker ready: ", timeout=15)
    assert "mail.render, mail.send" in ready, ready

    assert cmds["producer"] == ["python", "-m", "examples.mailer.producer"], cmds["producer"]
    producer = await Proc.start([sys.executable, *cmds["producer"][1:]],
                                tmp_path / "producer.log", env)
    procs.append(producer)
    lines = await collect(producer, 40)
    out = "\n".join(lines)
    assert await producer.wait(10) == 0, f"{out}\n{producer.stderr()}"

    # The output the README shows: 11 renders and sends, every good address sent
    # (with the attempt that worked), the ghost address dead after 4 attempts with
    # where it was raised in the worker, and a summary line.
    assert re.fullmatch(r"queued 11 renders; the first is \w+", lines[0]), out
    assert lines[1] == "rendered them; queued 11 sends", out
    sent = [re.fullmatch(r"  sent   (\S+@mail\.example) +attempt ([1-4])  <\w+@shop\.example>",
                         ln) for ln in lines if ln.startswith("  sent ")]
    assert all(sent), out
    failed = [i for i, ln in enumerate(lines) if ln.startswith("  FAILED ")]
    ghost = [i for i in failed if "ghost@invalid.example" in lines[i]]
    assert len(ghost) == 1, out
    assert lines[ghost[0]] == (
        "  FAILED ghost@invalid.example: examples.mailer.sender.PermanentFailure: 550 5.1.1 "
        "<ghost@invalid.example>: recipient address rejected (after 4 attempts)"), out
    assert re.fullmatch(r'         raised at "\S+/examples/mailer/sender\.py", line \d+, in send',
                        lines[ghost[0] + 1]), out
    # The README's caveat: now and then a good address meets a busy relay four times.
    for i in set(failed) - set(ghost):
        assert lines[i].endswith("TemporaryFailure: 451 4.3.0 mail server busy, try again "
                                 "later (after 4 attempts)"), out
    assert len(sent) + len(failed) == 11, out
    summary = re.fullmatch(r"(\d+) sent, (\d+) dead in [\d.]+s; the outbox (.+) holds (\d+) "
                           r"mails", lines[-1])
    assert summary, out
    assert summary.groups() == (str(len(sent)), str(len(failed)), str(outbox), str(len(sent)))
    mails = sorted(outbox.glob("*.eml"))
    assert len(mails) == len(sent), mails
    sent_to = {m.group(1) for m in sent if m}
    assert {f.read_text().split("To: ", 1)[1].split("\n", 1)[0] for f in mails} == sent_to
    async with zq.Client(broker.endpoint, name="observer") as obs:  # `zq dlq ls mail.send.dlq`
        dead = await obs.peek("mail.send.dlq", limit=20)
        assert len(dead) == len(failed), dead
        assert len(dead[0]["headers"]["zq-history"]) == 4, dead[0]["headers"]

    # The schedule: a digest mail to the operators at every due time (every 1 s here,
    # not 10 s, to keep the test short), listed by `zq schedule ls`, then removed.
    assert cmds["schedule"][:3] == ["python", "-m", "examples.mailer.schedule"], cmds
    argv = [sys.executable, *cmds["schedule"][1:]]
    argv[argv.index("--every") + 1] = "1s"
    add = await Proc.start(argv, tmp_path / "schedule.log", env)
    procs.append(add)
    added = await collect(add, 20)
    assert await add.wait(10) == 0, add.stderr()
    assert added[:1], add.stderr()
    assert added[0].startswith("mailer-digest: examples.mailer.app.digest"), added
    rc, out, err = await cli(*cmds["schedule ls"][1:], endpoint=broker.endpoint)
    assert rc == 0, err
    assert out.splitlines()[1].split()[:4] == ["mailer-digest", "mail.render", "every", "1s"]

    def digest_mail() -> bool:
        return any(f.name.endswith("-ops_at_shop.example.eml") for f in outbox.glob("*.eml"))

    await eventually(digest_mail, "a digest mail in the outbox", timeout=15, step=0.05)
    rm = await Proc.start([sys.executable, "-m", "examples.mailer.schedule", "--remove"],
                          tmp_path / "schedule.log", env)
    procs.append(rm)
    assert await collect(rm, 20) == ["removed mailer-digest"]
    await worker.terminate_and_expect_exit(0, within=10)


# ------------------------------------------------------------------ 2. drain on SIGTERM


async def test_sigterm_releases_prefetched_and_finishes_running(broker: Proc,
                                                                procs: list[Proc],
                                                                tmp_path: Path) -> None:
    ep = broker.endpoint
    slow.app.endpoint = ep
    try:
        async with zq.Client(ep, name="observer") as obs:
            handles = await asyncio.gather(*(slow.hold.delay(i) for i in range(100)))
            by_id = {h.id: i for i, h in enumerate(handles)}
            assert (await obs.queue_info("slow"))["stats"]["ready"] == 100
            worker = await start_worker(procs, tmp_path, f"{APPS}.slow:app", "--concurrency",
                                        "8", "--prefetch", "100", endpoint=ep)
            started_file = tmp_path / "started.jsonl"

            async def holding_all() -> bool:
                st = (await obs.queue_info("slow"))["stats"]
                return len(read(started_file)) == 8 and st["in_flight"] == 100

            await eventually(holding_all, "8 running, 100 held by the worker", timeout=15)
            started = {r["i"] for r in read(started_file)}
            running_ids = {mid for mid, i in by_id.items() if i in started}
            waiting_ids = set(by_id) - running_ids
            one = next(iter(running_ids))
            st = await obs.task_status("slow", one)
            assert st["state"] == "running", st
            assert st["attempt"] == 1, st
            assert str(worker.pid) in str(st.get("worker")), st

            worker.signal(signal.SIGTERM)

            async def released() -> bool:
                return (await obs.queue_info("slow"))["stats"]["ready"] == 92

            took = await eventually(released, "92 ready again", timeout=5, step=0.01)
            assert took <= 1.0, f"the 92 were ready again only after {took:.2f}s"
            stats = (await obs.queue_info("slow"))["stats"]
            assert stats["in_flight"] == 8, stats
            ready = await obs.peek("slow", limit=100)
            assert {m["id"] for m in ready} == waiting_ids
            assert {m["attempts"] for m in ready} == {0}, [m["attempts"] for m in ready]
            assert worker.proc.returncode is None, "the worker left before its tasks finished"

            (tmp_path / "release").touch()
            assert await worker.wait(10) == 0, worker.stderr()
            assert len(read(started_file)) == 8  # nothing started after SIGTERM
            assert {r["i"] for r in read(tmp_path / "finished.jsonl")} == started
            stats = (await obs.queue_info("slow"))["stats"]
            assert (stats["acked"], stats["ready"], stats["in_flight"]) == (8, 92, 0), stats
            for mid in running_ids:
                st = await obs.task_status("slow", mid)
                assert (st["state"], st["result"]) == ("succeeded", by_id[mid]), st
            st = await obs.task_status("slow", next(iter(waiting_ids)))
            assert (st["state"], st["attempt"]) == ("ready", 0), st
    finally:
        await slow.app.close()


# ------------------------------------------------------------------ 3. no hoarding


async def test_two_workers_split_the_work_evenly(broker: Proc, procs: list[Proc],
                                                 tmp_path: Path) -> None:
    ep = broker.endpoint
    split.app.endpoint = ep
    try:
        async with zq.Client(ep, name="observer") as obs:
            workers = [await start_worker(procs, tmp_path, f"{APPS}.split:app",
                                          "--concurrency", "4", endpoint=ep)
                       for _ in range(2)]

            async def both() -> bool:
                return await subscribed(obs, "split") == 2

            await eventually(both, "both workers subscribed", timeout=15)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            handles = await asyncio.gather(*(split.whoami.delay() for _ in range(400)))
            pids = await asyncio.gather(*(h.result(timeout=30) for h in handles))
            took = loop.time() - t0
            counts = Counter(pids)
            assert set(counts) == {w.pid for w in workers}, counts
            for w in workers:
                assert 160 <= counts[w.pid] <= 240, counts  # 40% .. 60% of 400
            # 8 slots of 100 ms: 5 s if both stayed busy all along.
            assert took < 8.0, took
            # No hoarding: neither ever held much more than it could run at once.
            peers = [p for p in (await obs.stats())["peers"].values() if "split" in p["subs"]]
            peaks = sorted(p["subs"]["split"]["peak_in_flight"] for p in peers)
            assert len(peaks) == 2, peers
            assert peaks[-1] <= 8, peaks  # concurrency 4
            await stop_workers(workers)
    finally:
        await split.app.close()


# ------------------------------------------------------------------ 4. retries, dead tasks


async def test_retry_backoff_result_and_dead_task_traceback(broker: Proc, procs: list[Proc],
                                                            tmp_path: Path) -> None:
    ep = broker.endpoint
    retrying.app.endpoint = ep
    try:
        async with zq.Client(ep, name="observer") as obs:
            worker = await start_worker(procs, tmp_path, f"{APPS}.retrying:app",
                                        "--concurrency", "4", endpoint=ep)
            handle = await retrying.flaky.delay("k1")
            assert await handle.result(timeout=15) == "k1 done after 3 attempts"
            times = [r["at"] for r in read(tmp_path / "flaky-k1.jsonl")]
            assert len(times) == 3, times
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert 0.16 <= gaps[0] <= 0.24, gaps  # 0.2 s +-20%
            assert 0.32 <= gaps[1] <= 0.48, gaps  # 0.4 s +-20%
            st = await handle.status()
            assert (st["state"], st["attempt"], st["result"]) == (
                "succeeded", 3, "k1 done after 3 attempts"), st
            hist = st.get("history", [])
            assert [h.get("attempt") for h in hist] == [1, 2], st
            assert [h.get("reason") for h in hist] == [
                f"tests.system.apps.retrying.FlakyError: k1: attempt {n} fails" for n in (1, 2)]

            doomed = await retrying.doomed.delay("order-17")
            with pytest.raises(zq.TaskFailed) as err:
                await doomed.result(timeout=15)
            exc = err.value
            assert exc.type == "ValueError", exc
            assert exc.message == "cannot process order-17"
            assert "in explode" in exc.traceback, exc.traceback
            assert "in doomed" in exc.traceback, exc.traceback
            assert "ValueError: cannot process order-17" in exc.traceback, exc.traceback
            assert len(read(tmp_path / "doomed-order-17.jsonl")) == 2  # max_attempts=2
            assert [h.get("attempt") for h in exc.history] == [1, 2], exc.history
            st = await obs.task_status("retrying", doomed.id)
            assert st["state"] == "dead", st
            assert st["error"]["type"] == "ValueError", st
            info = await obs.queue_info("retrying")
            assert info["stats"]["ready"] == 0
            await worker.terminate_and_expect_exit(0, within=10)
    finally:
        await retrying.app.close()


# ------------------------------------------------------------------ 5. durable schedules


def check_one_message_per_due_time(runs: list[dict[str, Any]]) -> None:
    """Each due time fired one message (a message may run again after a lost lease)."""
    ids: dict[float, set[int]] = {}
    for r in runs:
        ids.setdefault(r["due"], set()).add(r["id"])
    twice = {due: sorted(i) for due, i in ids.items() if len(i) > 1}
    assert not twice, f"due times fired more than once: {twice}"


async def test_schedule_every_second_with_three_workers_and_a_restart(
        procs: list[Proc], tmp_path: Path) -> None:
    ep = f"tcp://127.0.0.1:{free_port()}"
    broker = await start_broker(tmp_path, "--bind", ep, "--heartbeat", "0.25")
    procs.append(broker)
    workers = [await start_worker(procs, tmp_path, f"{APPS}.ticks:app", "--concurrency", "2",
                                  endpoint=ep) for _ in range(3)]
    ticks = tmp_path / "ticks.jsonl"
    async with zq.Client(ep, name="observer") as obs:
        async def all_three() -> bool:
            return await subscribed(obs, "ticks") == 3

        await eventually(all_three, "three workers subscribed", timeout=15)
    body = tmp_path / "tick.body"
    body.write_bytes(encode_body((), {}))
    rc, out, err = await cli("schedule", "add", "tick", "--every", "1s", "--queue", "ticks",
                             "--body-file", str(body), "-H", f"{TASK_HEADER}=tick",
                             endpoint=ep)
    assert rc == 0, err
    assert out.startswith("schedule tick: every 1s to ticks"), out
    t0 = time.time()  # the schedule exists

    # Six seconds with three workers taking from the queue.
    window = 6.0
    await eventually(lambda: time.time() > t0 + window + 0.5, "the 10 s window",
                     timeout=window + 5, step=0.1)
    runs = read(ticks)
    in_window = [r for r in runs if t0 <= r["at"] < t0 + window]
    assert 5 <= len(in_window) <= 7, in_window
    check_one_message_per_due_time(runs)
    assert {r["schedule"] for r in runs} == {"tick"}
    assert {r["attempt"] for r in runs} == {1}, runs
    assert all(0 <= r["at"] - r["due"] < 1.0 for r in runs), runs  # on time, never early
    dues = sorted({r["due"] for r in runs})
    steps = [b - a for a, b in itertools.pairwise(dues)]
    assert all(abs(s - 1.0) < 0.01 for s in steps), steps

    # SIGKILL the broker just after a run and keep it down across two due times; a
    # new broker on the same data folder and endpoint fires once for what it missed
    # (misfire "once", the default), then goes on at the schedule's due times.
    n = len(read(ticks))
    await eventually(lambda: len(read(ticks)) > n, "the next run", timeout=5)
    await broker.kill()
    before = {r["due"] for r in read(ticks)}
    last = max(before)
    await eventually(lambda: time.time() > last + 2.3, "two due times missed", timeout=5,
                     step=0.05)
    restart = time.time()
    broker = await start_broker(tmp_path, "--bind", ep, "--heartbeat", "0.25")
    procs.append(broker)

    def later_runs() -> bool:
        return sum(1 for r in read(ticks) if r["due"] > restart) >= 2

    await eventually(later_runs, "two runs due after the restart", timeout=15, step=0.1)
    runs = read(ticks)
    check_one_message_per_due_time(runs)
    after = sorted({r["due"] for r in runs} - before)
    missed = [d for d in after if d < restart]
    assert len(missed) == 1, (last, restart, after)  # once for the two it missed
    assert abs(missed[0] - (last + 1.0)) < 0.01, (last, after)
    for d in after:  # still on the schedule's grid
        assert abs((d - last) - round(d - last)) < 0.01, (last, after)
    async with zq.Client(ep, name="observer") as obs:
        (sched,) = await obs.schedules()
        assert sched["name"] == "tick"
        ids = {r["id"] for r in runs}
        assert 0 <= sched["fired"] - len(ids) <= 1, (sched, len(ids))  # one may be queued
    await stop_workers(workers)
    await broker.terminate_and_expect_exit(0, within=5)


# ------------------------------------------------------------------ 6. zq.testing


async def test_zq_testing_runs_a_task_with_retries_in_process() -> None:
    """What a user writes in their own suite: no broker process, no port."""
    shop.attempts.clear()
    endpoint = shop.app.endpoint
    async with zq.testing.Broker(shop.app) as broker:
        assert broker.endpoint.startswith("inproc://")
        assert shop.app.endpoint == broker.endpoint
        paid = await shop.charge.delay("o-1", 1250)
        refund = await shop.refund.delay("o-1")
        counts = await zq.testing.run_until_idle(shop.app, timeout=10)
        assert await paid.result(timeout=1) == {"order": "o-1", "cents": 1250, "attempts": 3}
        st = await paid.status()
        assert (st["state"], st["attempt"]) == ("succeeded", 3), st
        with pytest.raises(zq.TaskFailed) as err:
            await refund.result(timeout=1)
        assert err.value.type == "RuntimeError"
        assert "refunds are disabled (o-1)" in err.value.message
        assert "in refund" in err.value.traceback
        assert shop.attempts == {"o-1": 3, "refund:o-1": 3}
        assert (counts["succeeded"], counts["failed"]) == (1, 2 + 3), counts
    assert shop.app.endpoint == endpoint
    assert not multiprocessing.active_children()


async def test_dead_task_failure_lists_its_attempts() -> None:
    """A dead task's status and ``TaskFailed.history`` list every failed attempt as the
    broker recorded it (the contract's ``history`` in ``status``/``wait`` replies)."""
    shop.attempts.clear()
    async with zq.testing.Broker(shop.app):
        refund = await shop.refund.delay("o-2")
        await zq.testing.run_until_idle(shop.app, timeout=10)
        with pytest.raises(zq.TaskFailed) as err:
            await refund.result(timeout=1)
        st = await refund.status()
        assert st["state"] == "dead", st
        assert [h.get("attempt") for h in st.get("history", [])] == [1, 2, 3], st
        assert len(err.value.history) == 3, err.value.history
        assert all("refunds are disabled (o-2)" in h.get("reason", "")
                   for h in err.value.history), err.value.history


async def test_signals_during_shutdown_still_exit_0(broker: Proc, procs: list[Proc],
                                                    tmp_path: Path) -> None:
    """Ctrl-C twice (or SIGTERM then SIGINT) is common: the second signal cuts the
    drain short, and none arriving while the worker closes may kill it."""
    for gap in (0.0, 0.005, 0.02, 0.05):
        worker = await start_worker(procs, tmp_path, f"{APPS}.slow:app",
                                    endpoint=broker.endpoint)
        worker.signal(signal.SIGTERM)
        if gap:
            await asyncio.sleep(gap)  # the point is the timing between the two signals
        worker.signal(signal.SIGINT)
        rc = await worker.wait(10)
        assert rc == 0, f"gap {gap}: exit code {rc}; stderr:\n{worker.stderr()}"


async def test_a_worker_carries_on_after_a_graceful_broker_restart(
        procs: list[Proc], tmp_path: Path) -> None:
    """SIGTERM is how brokers are usually restarted: the worker hears BYE, and must
    take work again from the new broker on the same endpoint without a restart."""
    ep = f"tcp://127.0.0.1:{free_port()}"
    broker = await start_broker(tmp_path, "--bind", ep, "--heartbeat", "0.25")
    procs.append(broker)
    worker = await start_worker(procs, tmp_path, f"{APPS}.split:app", endpoint=ep)
    split.app.endpoint = ep
    try:
        first = await split.whoami.delay()
        assert await first.result(timeout=10) == worker.pid
        await broker.terminate_and_expect_exit(0)
        broker = await start_broker(tmp_path, "--bind", ep, "--heartbeat", "0.25")
        procs.append(broker)
        await split.app.close()  # the producer starts afresh; the worker must not need to
        second = await split.whoami.delay()
        assert await second.result(timeout=15) == worker.pid
    finally:
        await split.app.close()
    await stop_workers([worker])
