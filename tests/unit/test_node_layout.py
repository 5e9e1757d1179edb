"""zq/node without I/O: the credit sizing core (seconds passed in, no clock), the old
import paths ``zq.tasks`` and ``zq.worker`` as aliases, and what the pure modules load."""

from __future__ import annotations

import subprocess
import sys

import pytest

import zq
import zq.tasks
import zq.worker
from zq import node
from zq.node import app, calls, config, credit, handle, launch, retry, runner, worker
from zq.node.credit import MAX_PREFETCH, MIN_SAMPLES, CreditSizer, auto_prefetch

# ------------------------------------------------------------------ credit sizing


def test_the_first_sample_sets_both_averages() -> None:
    sizer = CreditSizer(4)
    sizer.fold(0.010, 0.002)
    assert (sizer.handle_time, sizer.round_trip) == (0.010, 0.002)
    sizer.fold(0.020, 0.004)  # then a fifth of each new sample
    assert sizer.handle_time == pytest.approx(0.012)
    assert sizer.round_trip == pytest.approx(0.0024)


def test_credit_grows_only_after_enough_samples_and_when_it_pays() -> None:
    sizer = CreditSizer(4)
    sizer.fold(0.001, 0.003)  # short tasks, a long round trip
    assert sizer.grow_to(4, 100_000, MIN_SAMPLES - 1) is None
    assert sizer.grow_to(4, 100_000, MIN_SAMPLES) == auto_prefetch(4, 0.001, 0.003) == 16
    assert sizer.grow_to(16, 100_000, 50) is None  # already there
    assert sizer.grow_to(4, 10, 50) == 10  # never past the broker's limit
    assert sizer.grow_to(12, 10, 50) is None  # ... nor lowered to it


def test_slow_tasks_keep_the_credit_at_concurrency() -> None:
    sizer = CreditSizer(8)
    for _ in range(20):
        sizer.fold(0.100, 0.020)
    assert sizer.grow_to(8, 100_000, 20) is None
    fast = CreditSizer(8)
    fast.fold(0.0, 0.002)
    assert fast.grow_to(8, 100_000, 20) == MAX_PREFETCH


def test_the_worker_shows_the_averages() -> None:
    w = zq.Worker(zq.App(), queues=["q"], handle_signals=False)
    assert (w.handle_time, w.round_trip) == (0.0, 0.0)
    w._sizer.fold(0.5, 0.25)
    assert (w.handle_time, w.round_trip) == (0.5, 0.25)


# ------------------------------------------------------------------ old import paths

# Every name the two modules gave before zq/node/ (but the standard library's).
OLD_TASKS = ["App", "Client", "EXECUTORS", "FINAL_STATES", "MAX_MESSAGE", "MAX_TRACEBACK",
             "OperationTimeout", "P", "R", "ResultUnavailable", "Retry", "TASK_HEADER", "Task",
             "TaskFailed", "TaskHandle", "check_result", "codec", "decode_body", "encode_body",
             "error_report", "failure", "make_options", "report", "type_name"]
OLD_WORKER = ["App", "BAD_BODY", "BAD_RESULT", "Client", "ClientClosed", "ConnectionLost",
              "Consumer", "MAX_PREFETCH", "Message", "TASK_HEADER", "Task", "UNKNOWN_TASK",
              "Worker", "WorkerConfig", "ZqError", "auto_prefetch", "build_worker",
              "check_result", "current_message", "decode_body", "error_report", "load_app",
              "log", "report", "result_limit", "run_in_process", "serve", "stuck_threads"]


def test_old_paths_keep_every_name() -> None:
    assert set(OLD_TASKS) <= set(zq.tasks.__all__)
    assert set(OLD_WORKER) <= set(zq.worker.__all__)
    for module in (zq.tasks, zq.worker, node):
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)


def test_old_and_new_paths_give_the_same_objects() -> None:
    assert zq.tasks.App is app.App is zq.App is node.App
    assert zq.tasks.Task is app.Task
    assert zq.tasks.TaskHandle is handle.TaskHandle is zq.TaskHandle
    assert zq.tasks.Retry is retry.Retry is zq.Retry
    assert zq.tasks.TaskFailed is calls.TaskFailed is zq.TaskFailed
    assert zq.tasks.encode_body is calls.encode_body
    assert zq.worker.Worker is worker.Worker is zq.Worker is node.Worker
    assert zq.worker.current_message is runner.current_message is zq.current_message
    assert zq.worker.WorkerConfig is config.WorkerConfig is node.WorkerConfig
    assert zq.worker.auto_prefetch is credit.auto_prefetch
    assert zq.worker.build_worker is launch.build_worker
    assert zq.worker.run_in_process is runner.run_in_process
    assert zq.worker.log.name == "zq.worker"  # the logger keeps its name
    with pytest.raises(AttributeError):
        node.Nope  # noqa: B018


@pytest.mark.parametrize("module", ["zq.node.calls", "zq.node.credit", "zq.node.config"])
def test_the_pure_modules_load_no_io(module: str) -> None:
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in ('zmq', 'asyncio', 'aiosqlite', 'sqlite3', 'click') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.strip() == "[]"


def test_node_modules_stay_small() -> None:
    import inspect

    for module in (app, config, credit, handle, launch, calls, retry, runner, worker, node):
        lines = inspect.getsource(module).count("\n")
        assert lines < 400, (module.__name__, lines)
