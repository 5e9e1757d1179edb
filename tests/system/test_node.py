"""``zq node`` with real processes (issue 18): a broker, a node that runs
``tests.system.apps.nodework``'s workers, and what the node says about itself in its
log (``--log-level info``) and in its reports (``zq nodes``, STATS "nodes").

The tasks leave one record per run in ``$ZQ_TEST_DIR/ran.jsonl`` (the test's
``tmp_path``); every test counts them per task as the durability tests do: lost (never
ran), duplicated (ran more than allowed) and unexpected (not published).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import zq
from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
from tests.helpers import eventually, install_distribution
from tests.procs import Proc, zq_argv
from tests.system.apps._record import read
from tests.system.apps.nodework import CRASH_FILE, hang, nap, work
from tests.system.test_cli import cli
from zq.tasks import TASK_HEADER, encode_body

Factory = Callable[..., Awaitable[Proc]]
APP = "tests.system.apps.nodework:app"
HERE = Path(__file__).resolve().parent
PLUGIN_SRC = HERE / "plugin_scaling" / "zq_test_scaling"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ zq\.node: (.*)$")


# ------------------------------------------------------------------ helpers


class Node:
    """A ``zq node`` process and what its log (stderr, with its workers') says."""

    def __init__(self, proc: Proc, name: str) -> None:
        self.proc = proc
        self.name = name

    def events(self, pattern: str) -> list[tuple[float, re.Match[str]]]:
        """(wall-clock time, match) of the node's log lines that match ``pattern``."""
        out = []
        for line in self.proc.log.read_text(errors="replace").splitlines():
            m = STAMP.match(line)
            if m:
                found = re.search(pattern, m.group(2))
                if found:
                    at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    out.append((at, found))
        return out

    def starts(self) -> list[tuple[float, int, int]]:
        """(time, slot, pid) of every worker it started."""
        return [(t, int(m.group(1)), int(m.group(2)))
                for t, m in self.events(r"^worker (\d+) started \(pid (\d+)\)")]

    def pids(self) -> set[int]:
        return {pid for _, _, pid in self.starts()}


@pytest.fixture
async def start_node(broker_factory: Factory,
                     tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """Start ``zq node`` on the app; at teardown each node still running must exit 0
    on SIGTERM, and no worker process of theirs may be left (any left is killed)."""
    started: list[Node] = []

    async def make(endpoint: str, *args: str, name: str = "n1", ready: bool = True,
                   env: dict[str, str] | None = None) -> Node:
        argv = zq_argv("--log-level", "info", "node", APP, "-e", endpoint, "--name", name,
                       *args)
        proc = await Proc.start(argv, tmp_path / f"node-{name}.log",
                                {"ZQ_TEST_DIR": str(tmp_path), **(env or {})})
        node = Node(proc, name)
        started.append(node)
        if ready:
            line = await proc.wait_for_line("ZQ NODE READY ", timeout=20)
            assert line == f"ZQ NODE READY {name}"
        return node

    yield make
    for node in started:
        if node.proc.proc.returncode is None:
            await node.proc.terminate_and_expect_exit(0, within=20)
    left = [pid for node in started for pid in node.pids() if worker_alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"worker processes left running: {left}"


def worker_alive(pid: int) -> bool:
    """Whether ``pid`` is a live ``zq worker`` of the node app (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"worker\0" + APP.encode() in cmdline and state != "Z"


async def publish_work(endpoint: str, ids: Sequence[int]) -> None:
    async with zq.Client(endpoint, name="producer") as c:
        for k in range(0, len(ids), 1000):
            chunk = ids[k:k + 1000]
            await c.publish_many("work", [encode_body((i,), {}) for i in chunk],
                                 headers=[{TASK_HEADER: work.name}] * len(chunk))


async def report(c: zq.Client, name: str) -> dict[str, Any]:
    """The node's latest report as STATS shows it ({} before its first)."""
    nodes: dict[str, Any] = (await c.stats()).get("nodes") or {}
    return dict(nodes.get(name) or {})


def runs(tmp: Path, file: str = "ran.jsonl") -> Counter[int]:
    return Counter(r["i"] for r in read(tmp / file))


def check_counts(ran: Counter[int], published: int, most: int) -> dict[str, int]:
    """The four numbers (lost, duplicated, unexpected, ran) over tasks 0..published-1,
    a task allowed to run up to ``most`` times; asserts none lost or unexpected."""
    lost = [i for i in range(published) if ran[i] == 0]
    unexpected = [i for i in ran if not 0 <= i < published]
    dup = [i for i in range(published) if ran[i] > 1]
    too_many = [i for i in range(published) if ran[i] > most]
    figures = {"published": published, "ran": sum(ran.values()), "lost": len(lost),
               "duplicated": len(dup), "unexpected": len(unexpected)}
    assert not lost, (figures, lost[:10])
    assert not unexpected, (figures, unexpected[:10])
    assert not too_many, (figures, too_many[:10])
    return figures


def states(rep: dict[str, Any]) -> list[str]:
    return [w["state"] for w in rep.get("workers", [])]


def install_plugin(root: Path) -> dict[str, str]:
    """tests/system/plugin_scaling as an installed distribution in ``root/site``
    (package + dist-info with its entry points); the environment that finds it."""
    return install_distribution(root, PLUGIN_SRC, {
        "always-two": "zq_test_scaling:AlwaysTwo", "from-file": "zq_test_scaling:FromFile"})


# ------------------------------------------------------------------ 1. scale up and down


@pytest.mark.parametrize("count", [2_000, pytest.param(10_000, marks=[
    pytest.mark.slow, pytest.mark.timeout(300)])])
async def test_scales_up_to_max_drains_the_backlog_and_cools_down(
        broker: Proc, start_node: Callable[..., Awaitable[Node]], tmp_path: Path,
        count: int) -> None:
    interval, cooldown = 0.5, 2.0
    node = await start_node(broker.endpoint, "--min", "1", "--max", "6", "--concurrency", "4",
                            "--interval", f"{interval}", "--cooldown", f"{cooldown}",
                            "--drain-timeout", "5")
    assert len(node.starts()) == 1
    timeline: list[tuple[float, dict[str, Any]]] = []  # (when seen, report)
    done = asyncio.Event()

    async def watch(c: zq.Client) -> None:
        while not done.is_set():
            rep = await report(c, node.name)
            if rep and (not timeline or rep != timeline[-1][1]):
                timeline.append((time.time(), rep))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)

    async with zq.Client(broker.endpoint, name="observer") as c, asyncio.TaskGroup() as tg:
        tg.create_task(watch(c))
        t_pub = time.time()
        await publish_work(broker.endpoint, range(count))
        t_published = time.time()
        # Six workers within three intervals of the publish.
        await eventually(lambda: len(node.starts()) >= 6, "6 workers started", timeout=10)
        sixth = node.starts()[5][0]
        assert len({n for _, n, _ in node.starts()}) == 6
        up = node.events(r"^scaling: (backlog [\d,]+, .* -> 6 worker\(s\))$")
        assert up, node.proc.stderr()
        assert sixth - t_published <= 3 * interval, (sixth - t_published, up[0][1].group(1))

        async def all_running() -> bool:
            return states(await report(c, node.name)) == ["running"] * 6

        await eventually(all_running, "6 workers running", timeout=20)
        t_running = time.time()
        await eventually(lambda: len(read(tmp_path / "ran.jsonl")) >= count,
                         f"{count} tasks ran", timeout=max(60, count / 40), step=0.1)
        t_drained = time.time()

        async def back_to_one() -> bool:
            rep = await report(c, node.name)
            return rep.get("target") == 1 and states(rep) == ["running"]

        await eventually(back_to_one, "the node back to 1 worker", timeout=cooldown + 15)
        t_one = time.time()
        done.set()

    # The cool-down: the policy wanted fewer (reported "cooling down") for `cooldown` s
    # before the target fell; until then all six kept running.
    fell = next(t for t, rep in timeline if rep["target"] == 1 and t > t_running)
    before = [(t, rep) for t, rep in timeline if t < fell]
    hot = max(t for t, rep in before if "cooling down" not in rep["decision"])
    cool = [(t, rep) for t, rep in before if t > hot]
    seen = "\n".join(str((round(t - t_published, 2), rep["target"], rep["decision"],
                           states(rep))) for t, rep in timeline)
    assert cool, seen
    assert all(re.search(r"-> [1-5] worker\(s\) \(cooling down 2 s\)$", rep["decision"])
               and rep["target"] == 6 for _, rep in cool), seen
    first_cool = cool[0][0]
    assert fell - first_cool >= cooldown - 0.2, (fell - first_cool)
    assert all(states(rep) == ["running"] * 6 for t, rep in timeline
               if t_running <= t < fell), "a worker went before the cool-down ended"
    # The five newest were drained (SIGTERM) and stopped cleanly; worker 0 stayed.
    drained = sorted(int(m.group(1)) for _, m in node.events(
        r"^worker (\d+) \(pid \d+\): draining it \(the target is 1\)$"))
    stopped = sorted(int(m.group(1)) for _, m in node.events(
        r"^worker (\d+) \(pid \d+\) stopped \(code 0\)$"))
    assert drained == stopped == [1, 2, 3, 4, 5], node.proc.stderr()
    assert not node.events(r"exited with|killing it"), node.proc.stderr()
    # Every task ran exactly once, and the six workers all took part.
    figures = check_counts(runs(tmp_path), count, most=1)
    assert figures["duplicated"] == 0, figures
    assert len({r["pid"] for r in read(tmp_path / "ran.jsonl")}) == 6

    # `zq nodes` shows the node, its one worker and the last decision.
    rc, out, err = await cli("nodes", "--endpoint", broker.endpoint)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"node {node.name} (up, seen "), out
    assert lines[0].endswith(f": {APP} on work"), out
    assert lines[1].startswith("  workers 1 (target 1, min 1, max 6, 0 restart(s)): 0:running"), out
    assert lines[3] == ("  last decision (backlog): backlog 0, in flight 0, service 100 ms, "
                        "target 10 s -> 1 worker(s)"), out
    rc, out, err = await cli("nodes", "--json", "--endpoint", broker.endpoint)
    assert rc == 0, err
    rep = json.loads(out)[node.name]
    assert (rep["state"], rep["policy"], rep["target"], rep["queues"]) == (
        "up", "backlog", 1, ["work"])
    assert [(w["n"], w["state"]) for w in rep["workers"]] == [(0, "running")]
    rc, out, err = await cli("stats", "--json", "--endpoint", broker.endpoint)
    assert rc == 0, err
    assert json.loads(out)["nodes"][node.name]["decision"] == rep["decision"]
    print(f"\n{count} tasks: published in {t_published - t_pub:.2f} s; 6 started "
          f"{sixth - t_published:.2f} s after the publish, all running after "
          f"{t_running - t_published:.2f} s; drained after {t_drained - t_published:.2f} s; "
          f"back to 1 worker {t_one - t_drained:.2f} s later (cool-down for "
          f"{fell - first_cool:.2f} s); first decision: {up[0][1].group(1)}")


# ------------------------------------------------------------------ 2. SIGKILL a worker


async def test_a_killed_worker_is_replaced_and_its_tasks_run(
        broker: Proc, start_node: Callable[..., Awaitable[Node]], tmp_path: Path) -> None:
    count = 600
    node = await start_node(broker.endpoint, "--policy", "fixed", "--min", "2", "--max", "2",
                            "--concurrency", "4", "--interval", "0.5", "--drain-timeout", "5")
    await eventually(lambda: len(node.starts()) == 2, "2 workers started")
    t_started, slot, victim = node.starts()[0]
    await publish_work(broker.endpoint, range(count))

    def victim_busy() -> bool:  # mid-run, and up long enough not to count as a crash
        return (sum(r["pid"] == victim for r in read(tmp_path / "ran.jsonl")) >= 30
                and time.time() - t_started > 1.2)

    await eventually(victim_busy, f"worker {slot} (pid {victim}) busy", timeout=20)
    os.kill(victim, signal.SIGKILL)
    t_kill = time.time()
    ran_before = len(read(tmp_path / "ran.jsonl"))

    def replaced() -> bool:
        return any(n == slot and pid != victim and t >= t_kill - 0.01
                   for t, n, pid in node.starts())

    await eventually(replaced, f"a new worker {slot}", timeout=5)
    t_new, _, new_pid = next((t, n, p) for t, n, p in node.starts()
                             if n == slot and p != victim)
    assert t_new - t_kill <= 1.0, t_new - t_kill
    assert node.events(rf"^worker {slot} \(pid {victim}\) exited with signal 9 after "
                       r"[\d.]+ s; restarting it$"), node.proc.stderr()
    await eventually(lambda: len(runs(tmp_path)) >= count, f"all {count} tasks ran",
                     timeout=30, step=0.1)
    async with zq.Client(broker.endpoint, name="observer") as c:
        async def settled() -> bool:
            st = (await c.queue_info("work"))["stats"]
            return st["ready"] == 0 and st["in_flight"] == 0

        await eventually(settled, "the queue settled")
        st = (await c.queue_info("work"))["stats"]
        rep = await report(c, node.name)
    ran = runs(tmp_path)
    figures = check_counts(ran, count, most=2)
    # What the victim held unacked went back to the queue and ran again: more
    # deliveries than tasks, every task acked once.
    assert st["acked"] == count, st
    assert st["delivered"] > count, st
    assert any(r["pid"] == new_pid for r in read(tmp_path / "ran.jsonl"))
    assert rep["restarts"] == 1
    assert {w["n"]: w["exits"] for w in rep["workers"]}[slot] == [-9]
    print(f"\nreplaced {t_new - t_kill:.3f} s after SIGKILL (pid {victim} -> {new_pid}); "
          f"{ran_before} had run at the kill; deliveries {st['delivered']} for {count} "
          f"tasks; {figures}")


async def test_a_worker_whose_loop_hangs_is_killed_even_while_it_drains(
        broker: Proc, start_node: Callable[..., Awaitable[Node]], tmp_path: Path) -> None:
    """Two workers, each running a task that blocks its event loop 2 s after it starts
    (``hang``); the node scales down to one in between, so the newest is draining when
    its loop hangs. A running worker that stops beating is killed after 1 s; so must a
    draining one be: its own drain timeout runs on the blocked loop, so it cannot stop
    itself, and a loop hung for good leaves a process that the node shows as draining
    for ever (the broker, for its part, redelivers its task once its session expires)."""
    env = install_plugin(tmp_path)
    (tmp_path / "scaling-wanted").write_text("2")
    node = await start_node(broker.endpoint, "--policy", "from-file", "--min", "1", "--max",
                            "2", "--concurrency", "1", "--interval", "0.2", "--cooldown", "0",
                            "--drain-timeout", "10", env=env)
    async with zq.Client(broker.endpoint, name="observer") as c:
        async def two_running() -> bool:
            return states(await report(c, node.name)) == ["running"] * 2

        await eventually(two_running, "2 workers running", timeout=20)
        pids = {n: pid for _, n, pid in node.starts()}
        await c.publish_many("work", [encode_body((i, 2.0, 8.0), {}) for i in range(2)],
                             headers=[{TASK_HEADER: hang.name}] * 2)
        await eventually(lambda: {r["pid"] for r in read(tmp_path / "started.jsonl")}
                         == set(pids.values()), "a hang task in each worker")
        (tmp_path / "scaling-wanted").write_text("1")
        await eventually(lambda: bool(node.events(rf"^worker 1 \(pid {pids[1]}\): draining it")),
                         "worker 1 draining", timeout=5)
        assert len(read(tmp_path / "blocked.jsonl")) < 2, "blocked before the drain began"
        await eventually(lambda: len(read(tmp_path / "blocked.jsonl")) == 2,
                         "both loops blocked", timeout=5)
        # The running one: killed for its silence and restarted; its task runs again.
        await eventually(lambda: bool(node.events(rf"^worker 0 \(pid {pids[0]}\) sent no "
                                                  r"heartbeat for [\d.]+ s: killing it$")),
                         "worker 0 killed", timeout=5)
        await eventually(lambda: runs(tmp_path)[0] + runs(tmp_path)[1] >= 1,
                         "the task of the killed worker ran again", timeout=10)
        # The draining one: silent as long, and it holds its task.
        await eventually(lambda: not worker_alive(pids[1]),
                         f"the draining worker (pid {pids[1]}) killed", timeout=4)


# ------------------------------------------------------------------ 3. crash at start


async def test_a_worker_crashing_at_start_is_restarted_with_growing_delays(
        broker: Proc, start_node: Callable[..., Awaitable[Node]], tmp_path: Path) -> None:
    (tmp_path / CRASH_FILE).touch()
    node = await start_node(broker.endpoint, "--policy", "fixed", "--min", "1", "--max", "1",
                            "--interval", "0.5", "--drain-timeout", "5", ready=False)
    crashed = r"^worker 0 \(pid (\d+)\) exited with code (\d+) after ([\d.]+) s; it crashed " \
              r"(\d+) time\(s\) in a row: restarting it in ([\d.]+) s$"
    await eventually(lambda: len(node.events(crashed)) >= 3, "3 crashes at start", timeout=15)
    t_fixed = time.time()
    (tmp_path / CRASH_FILE).unlink()  # the next start succeeds
    await node.proc.wait_for_line("ZQ NODE READY ", timeout=15)
    t_ready = time.time()
    starts = [t for t, _, _ in node.starts()]
    crashes = node.events(crashed)
    assert [(int(m.group(4)), float(m.group(5))) for _, m in crashes] == [
        (1, 0.5), (2, 1.0), (3, 2.0)], node.proc.stderr()
    assert "crashing at start" in node.proc.stderr()
    # Four starts in all (three crashes, one that stayed), each after a longer wait:
    # not hundreds a second.
    assert len(starts) == 4, node.proc.stderr()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] < gaps[1] < gaps[2], gaps
    for (t_exit, m), t_next in zip(crashes, starts[1:], strict=True):
        assert t_next - t_exit >= float(m.group(5)) - 0.01, (t_exit, t_next, m.group(0))
    window = starts[-1] - starts[0]
    assert window >= 0.5 + 1 + 2, window

    async with zq.Client(broker.endpoint, name="observer") as c:
        async def reported() -> bool:
            rep = await report(c, node.name)
            return states(rep) == ["running"] and rep["restarts"] == 3

        await eventually(reported, "the node's report: 1 running, 3 restarts")
        rep = await report(c, node.name)
    exits = rep["workers"][0]["exits"]
    assert len(exits) == 3, rep
    assert all(code > 0 for code in exits), rep

    # A worker that ran a while resets the count: killed now, it restarts at once.
    t_up, _, pid = node.starts()[-1]
    await eventually(lambda: time.time() - t_up > 1.2, "the worker up for 1.2 s")
    os.kill(pid, signal.SIGKILL)
    t_kill = time.time()
    await eventually(lambda: len(node.starts()) == 5, "the worker restarted", timeout=5)
    assert node.events(rf"^worker 0 \(pid {pid}\) exited with signal 9 after [\d.]+ s; "
                       r"restarting it$"), node.proc.stderr()
    assert node.starts()[-1][0] - t_kill < 0.5  # no delay
    await publish_work(broker.endpoint, range(5))
    await eventually(lambda: len(runs(tmp_path)) == 5, "5 tasks ran")
    print(f"\nstarts at +{[round(t - starts[0], 2) for t in starts]} s (gaps "
          f"{[round(g, 2) for g in gaps]}); ready {t_ready - t_fixed:.2f} s after the fix; "
          f"exit codes {exits}")


# ------------------------------------------------------------------ 4. a policy plugin


async def test_a_scaling_policy_plugin_is_followed(
        broker: Proc, start_node: Callable[..., Awaitable[Node]], tmp_path: Path) -> None:
    env = install_plugin(tmp_path)
    wanted = tmp_path / "scaling-wanted"
    two = await start_node(broker.endpoint, "--policy", "always-two", "--min", "1", "--max",
                           "4", "--interval", "0.3", "--cooldown", "0.5", name="two", env=env)
    steered = await start_node(broker.endpoint, "--policy", "from-file", "--min", "1",
                               "--max", "4", "--interval", "0.3", "--cooldown", "0.5",
                               name="steered", env=env)
    async with zq.Client(broker.endpoint, name="observer") as c:
        async def running(name: str, n: int, decision: str) -> bool:
            rep = await report(c, name)
            return (states(rep) == ["running"] * n and rep.get("target") == n
                    and rep.get("decision") == decision)

        # always-two: two workers on an empty queue (backlog would run --min, 1).
        await eventually(lambda: running("two", 2, "always-two wants 2 worker(s) (ready 0, "
                                                    "running 2)"),
                         "always-two running 2 workers", timeout=20)
        # from-file: as many as the file says, up and down, within --max.
        for n, say in ((3, "3"), (1, "1"), (4, "9"), (2, "2")):
            wanted.write_text(say)
            await eventually(lambda n=n, say=say: running(
                "steered", n, f"from-file says {say} worker(s)"),
                f"from-file running {n} workers", timeout=20)

    rc, out, err = await cli("nodes", "--endpoint", broker.endpoint)
    assert rc == 0, err
    assert "  last decision (always-two): always-two wants 2 worker(s) (ready 0, running 2)" \
        in out.splitlines(), out
    assert "  last decision (from-file): from-file says 2 worker(s)" in out.splitlines(), out
    assert len(two.starts()) == 2
    assert sorted({n for _, n, _ in steered.starts()}) == [0, 1, 2, 3]
    assert len(steered.events(r"^worker \d \(pid \d+\) stopped \(code 0\)$")) == 2 + 2, \
        steered.proc.stderr()


# ------------------------------------------------------------------ 5. SIGTERM the node


async def test_sigterm_drains_every_worker_and_loses_nothing(
        broker: Proc, start_node: Callable[..., Awaitable[Node]], tmp_path: Path) -> None:
    count, drain = 40, 5.0
    node = await start_node(broker.endpoint, "--policy", "fixed", "--min", "2", "--max", "2",
                            "--concurrency", "2", "--interval", "0.5",
                            "--drain-timeout", f"{drain:g}")
    await eventually(lambda: len(node.starts()) == 2, "2 workers started")
    pids = node.pids()
    async with zq.Client(broker.endpoint, name="producer") as c:
        await c.publish_many("work", [encode_body((i, 0.5), {}) for i in range(count)],
                             headers=[{TASK_HEADER: nap.name}] * count)
        await eventually(lambda: len(read(tmp_path / "started.jsonl")) >= 6,
                         "tasks running", timeout=20)
        t_term = time.time()
        node.proc.signal(signal.SIGTERM)
        rc = await node.proc.wait(drain + 5)
        took = time.time() - t_term
        assert rc == 0, node.proc.stderr()
        assert took < drain, took
        # Every worker drained and stopped cleanly; none is left.
        assert not [p for p in pids if worker_alive(p)]
        stopped = node.events(r"^worker (\d+) \(pid (\d+)\) stopped \(code 0\)$")
        assert {int(m.group(2)) for _, m in stopped} == pids, node.proc.stderr()
        assert node.events(rf"^node {node.name} stopped \(0 restart\(s\)\)$")
        # What was running finished; what was prefetched went back to the queue.
        started, ran = runs(tmp_path, "started.jsonl"), runs(tmp_path)
        assert started == ran, (started, ran)
        st = (await c.queue_info("work"))["stats"]
        assert (st["in_flight"], st["ready"]) == (0, count - sum(ran.values())), st
        done_first = sum(ran.values())

        # A new node runs the rest: every task ran once.
        await start_node(broker.endpoint, "--policy", "fixed", "--min", "2", "--max", "2",
                         "--concurrency", "8", "--interval", "0.5", name="n2")
        await eventually(lambda: len(runs(tmp_path)) >= count, f"all {count} tasks ran",
                         timeout=20)
    figures = check_counts(runs(tmp_path), count, most=1)
    assert runs(tmp_path, "started.jsonl") == runs(tmp_path)
    print(f"\nnode exited 0 {took:.2f} s after SIGTERM; {done_first} of {count} ran before, "
          f"the rest after a new node started; {figures}")


# ------------------------------------------------------------------ a lost node


async def test_a_killed_node_shows_as_lost(
        broker: Proc, start_node: Callable[..., Awaitable[Node]], tmp_path: Path) -> None:
    node = await start_node(broker.endpoint, "--min", "1", "--max", "2", "--interval", "0.2")
    async with zq.Client(broker.endpoint, name="observer") as c:
        async def up() -> bool:
            rep = await report(c, node.name)
            return rep.get("state") == "up" and states(rep) == ["running"]

        await eventually(up, "the node up, its worker running")
        orphans = node.pids()
        await node.proc.kill()
        t_kill = time.time()

        async def lost() -> bool:
            return (await report(c, node.name)).get("state") == "lost"

        took = await eventually(lost, "the node lost", timeout=10)
        rep = await report(c, node.name)
    assert 3.0 - 0.3 <= took <= 3.0 + 1.0, took  # silent 3 intervals, at least 3 s
    assert rep["seen_s"] > 3.0
    rc, out, err = await cli("nodes", "--endpoint", broker.endpoint)
    assert rc == 0, err
    assert out.startswith(f"node {node.name} (lost, seen "), out
    # Its worker sees its heartbeat pipe broken and stops by itself (it drains, as on
    # SIGTERM): no worker runs unwatched, nor beside the next node's.
    await eventually(lambda: not [p for p in orphans if worker_alive(p)],
                     "the orphaned worker stopped by itself", timeout=10)
    print(f"\nlost {took:.2f} s after SIGKILL ({time.time() - t_kill:.2f} s); its worker(s) "
          f"{orphans} stopped by themselves")


# ------------------------------------------------------------------ in a cluster


async def test_a_node_works_through_a_router(
        start_node: Callable[..., Awaitable[Node]], tmp_path: Path) -> None:
    """Given a router's endpoint, the node reads its queue's figures and reports itself
    through the router (to the queue's broker), and its workers consume from that broker
    directly (MOVED): every task runs once, and the broker shows the node."""
    cluster = tmp_path / "cluster.toml"
    endpoints = write_cluster(cluster, ["b1", "b2"])
    brokers = [await start_cluster_broker(tmp_path, cluster, b) for b in endpoints]
    router = await start_router(tmp_path, cluster)
    try:
        node = await start_node(router.endpoint, "--min", "1", "--max", "2",
                                "--concurrency", "4", "--interval", "0.5")
        await publish_work(router.endpoint, range(300))
        await eventually(lambda: len(runs(tmp_path)) >= 300, "every task ran", timeout=60)
        check_counts(runs(tmp_path), 300, 1)
        async with zq.Client(router.endpoint, name="observer") as c:
            where = (await c.locate("work"))["endpoint"]
        async with zq.Client(where, name="observer") as c:
            rep = await report(c, node.name)
        assert rep.get("state") == "up", rep
        assert rep.get("queues") == ["work"], rep
    finally:
        await router.terminate_and_expect_exit(0)
        for b in brokers:
            await b.terminate_and_expect_exit(0)
