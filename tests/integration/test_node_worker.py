"""zq/node with real processes and threads: ``zq worker --config`` against a real
broker (the file < environment < flag layering seen from outside), and the runner
that finds a process-pool task by module and qualname, gives ``current_message()``
to threads and strips its own frames from a task's traceback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

import zq
from tests.procs import Proc, zq_argv
from tests.system.apps import split
from zq.client import Message
from zq.node.runner import Runner, run_in_process

# Module level, so that a spawned pool process finds them by module and qualname.
node_app = zq.App(name="node-runner")


@node_app.task(executor="process")
def pid_and_square(x: int) -> list[int]:
    return [os.getpid(), x * x]


class Jobs:
    """A task whose qualname is dotted: ``Jobs.crash``."""

    @node_app.task(executor="process")
    def crash(text: str) -> None:
        raise KeyError(text)


def explode(tag: str) -> None:
    raise ValueError(f"cannot process {tag}")


@node_app.task
def in_a_thread(tag: str) -> Any:
    if tag == "boom":
        explode(tag)
    return zq.current_message()


@node_app.task
async def on_the_loop() -> Any:
    return zq.current_message()


@node_app.task(executor="process")
def in_a_process() -> Any:
    return zq.current_message()


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    r = Runner(2)
    yield r
    r.close()


MSG = cast(Message, object())  # what the worker passes: here only its identity matters


# ------------------------------------------------------------------ the runner


async def test_a_process_task_is_found_by_module_and_qualname(runner: Runner) -> None:
    assert Jobs.crash.fn.__qualname__ == "Jobs.crash"
    ok, value = await runner.execute(pid_and_square, [7], {}, MSG)
    assert ok
    pid, square = value
    assert (square, pid != os.getpid()) == (49, True)
    ok, report = await runner.execute(Jobs.crash, ["gone"], {}, MSG)
    assert not ok
    assert (report["type"], report["message"]) == ("KeyError", "'gone'")
    assert "raise KeyError(text)" in report["traceback"]
    assert "zq/node/" not in report["traceback"]  # the pool's own frames are left out
    assert await runner.execute(in_a_process, [], {}, MSG) == (True, None)


def test_run_in_process_by_name_in_this_process() -> None:
    assert run_in_process(__name__, "Jobs.crash", ["x"], {})[0] == "error"
    status, report = run_in_process(__name__, "no_such_task", [], {})
    assert (status, report["type"]) == ("error", "AttributeError")


async def test_threads_and_the_loop_see_the_current_message(runner: Runner) -> None:
    assert await runner.execute(in_a_thread, ["ok"], {}, MSG) == (True, MSG)
    assert await runner.execute(on_the_loop, [], {}, MSG) == (True, MSG)
    assert zq.current_message() is None  # only while the task runs


async def test_a_failing_task_reports_its_own_frames_only(runner: Runner) -> None:
    ok, report = await runner.execute(in_a_thread, ["boom"], {}, MSG)
    assert not ok
    assert report["type"] == "ValueError"
    assert "in explode" in report["traceback"]
    assert "zq/node/" not in report["traceback"]
    assert "concurrent/futures" not in report["traceback"]


# ------------------------------------------------------------------ zq worker --config


async def test_zq_worker_from_a_config_file(broker_factory: Callable[..., Awaitable[Proc]],
                                            tmp_path: Path) -> None:
    broker = await broker_factory("--storage", "memory")
    config = tmp_path / "worker.toml"
    config.write_text('[worker]\napp = "tests.system.apps.split:app"\nconcurrency = 3\n'
                      'prefetch = 2\ndrain-timeout = 5\nendpoint = "tcp://127.0.0.1:1"\n')
    # The environment beats the file (concurrency, endpoint); a flag beats both (prefetch).
    env = {"ZQ_WORKER_CONCURRENCY": "4", "ZQ_WORKER_ENDPOINT": broker.endpoint}
    argv = zq_argv("--log-level", "info", "worker", "--config", str(config), "-p", "6")
    worker = await Proc.start(argv, tmp_path / "worker.log", env)
    try:
        ready = await worker.wait_for_line("zq worker ready: ", timeout=15)
        assert ready == "zq worker ready: queues split (concurrency 4, prefetch 6)"
        split.app.endpoint = broker.endpoint
        try:
            handle = await split.whoami.delay()
            assert await handle.result(timeout=15) == worker.pid
        finally:
            await split.app.close()
    except BaseException:
        await worker.kill()
        raise
    await worker.terminate_and_expect_exit(0, within=10)
    assert ("zq worker stopped: 1 succeeded, 0 failed, 0 released, 0 nacked at the drain "
            "timeout") in worker.stderr()


async def test_zq_worker_refuses_a_bad_config_file_before_connecting(tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text('[worker]\napp = "tests.system.apps.split:app"\nconcurrency = 0\n')
    worker = await Proc.start(zq_argv("worker", "--config", str(config)),
                              tmp_path / "worker.log")
    assert await worker.wait(15) == 2
    assert "concurrency must be >= 1, got 0" in worker.stderr()
