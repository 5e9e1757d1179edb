"""Running a task's function: on the loop, in a thread pool or in a process pool.

Coroutine functions run on the worker's loop; plain functions run in a thread
pool, or in a process pool (started with ``spawn``) for ``executor="process"``,
so the loop stays free and the connection's heartbeats keep the leases alive.
A pool process finds the function by its module and qualname.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread
import contextvars
import functools
import importlib
import multiprocessing
import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from zq.client import Message
from zq.node.app import Task
from zq.node.calls import error_report

THREAD_PREFIX = "zq-task"  # the names of the task threads

_current: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "zq_current_message", default=None)


def current_message() -> Message | None:
    """The message the calling task runs for (its id, attempt, headers), in a worker.

    Works in async tasks and in plain functions run in the worker's threads; None
    outside a task and in tasks run in a process pool.
    """
    return _current.get()


class Runner:
    """Runs tasks for one worker; its pools start on first use and end with :meth:`close`."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None

    async def execute(self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any],
                      msg: Message | None = None) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, error report)``; ``msg`` is what
        :func:`current_message` gives the task."""
        token = _current.set(msg)
        try:
            if task.executor == "async":
                return True, await task.fn(*args, **kwargs)
            loop = asyncio.get_running_loop()
            if task.executor == "process":
                status, value = await loop.run_in_executor(
                    self._pool("process"), run_in_process, task.fn.__module__,
                    task.fn.__qualname__, args, kwargs)
                return status == "ok", value
            ctx = contextvars.copy_context()  # current_message() works in the thread too
            return True, await loop.run_in_executor(
                self._pool("thread"), functools.partial(ctx.run, task.fn, *args, **kwargs))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return False, error_report(_from_task(exc))
        finally:
            _current.reset(token)

    def _pool(self, kind: str) -> Executor:
        if kind == "process":
            if self._processes is None:
                self._processes = ProcessPoolExecutor(
                    max_workers=min(self.concurrency, os.cpu_count() or 1),
                    mp_context=multiprocessing.get_context("spawn"))
            return self._processes
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=self.concurrency,
                                               thread_name_prefix=THREAD_PREFIX)
        return self._threads

    def close(self) -> None:
        """Stop the pools without waiting: tasks not started are dropped."""
        for pool in (self._threads, self._processes):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


_OUR_FILES = frozenset({__file__, concurrent.futures.thread.__file__})


def _from_task(exc: BaseException) -> BaseException:
    """``exc`` with the worker's own frames taken off the front of its traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None \
            and tb.tb_frame.f_code.co_filename in _OUR_FILES:
        tb = tb.tb_next
    return exc.with_traceback(tb)


def run_in_process(module: str, qualname: str, args: list[Any], kwargs: dict[str, Any]
                   ) -> tuple[str, Any]:
    """Run a task's function in a pool process: ``("ok", value)`` or ``("error", report)``.

    The function is found by name (the module attribute is the Task, which wraps it).
    """
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        fn = obj.fn if isinstance(obj, Task) else obj
        return "ok", fn(*args, **kwargs)
    except Exception as exc:
        return "error", error_report(_from_task(exc))


def stuck_threads() -> int:
    """Task threads still running (a sync task past the drain timeout)."""
    return sum(1 for t in threading.enumerate()
               if t.name.startswith(THREAD_PREFIX) and t.is_alive())
