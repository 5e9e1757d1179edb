"""The task API without I/O: bodies, results, Retry delays, names, error reports, credit."""

from __future__ import annotations

import datetime
import math
import random
from pathlib import Path

import msgpack
import pytest

import zq
from zq.client.consumer import complete_args
from zq.errors import InvalidArgument
from zq.tasks import (
    MAX_MESSAGE,
    MAX_TRACEBACK,
    check_result,
    decode_body,
    encode_body,
    error_report,
    failure,
    type_name,
)
from zq.worker import (
    MAX_PREFETCH,
    WorkerConfig,
    auto_prefetch,
    build_worker,
    load_app,
    run_in_process,
)

app = zq.App("tcp://127.0.0.1:1", name="unit")


@app.task
def double(x: int) -> int:
    return 2 * x


@app.task(queue="slow", max_attempts=3, time_limit=30, priority=7,
          retry=zq.Retry("fixed", base=1.0), executor="process")
def crash(text: str) -> None:
    raise KeyError(text)


@app.task
async def hello(name: str = "world") -> str:
    return f"hello {name}"


class Boom(Exception):
    pass


# ------------------------------------------------------------------ bodies and results


def test_body_round_trip_keeps_args_and_kwargs() -> None:
    body = encode_body((1, "a", b"\x00", [1.5, None], {"k": True}), {"n": {"x": [1]}})
    assert msgpack.unpackb(body, raw=False) == {
        "args": [1, "a", b"\x00", [1.5, None], {"k": True}], "kwargs": {"n": {"x": [1]}}}
    assert decode_body(body) == ([1, "a", b"\x00", [1.5, None], {"k": True}],
                                 {"n": {"x": [1]}})


def test_body_refuses_what_msgpack_cannot_carry() -> None:
    with pytest.raises(TypeError, match="msgpack"):
        encode_body((datetime.datetime.now(),), None)
    with pytest.raises(TypeError, match="msgpack"):
        encode_body((1 << 70,), None)
    with pytest.raises(TypeError, match="str names"):
        encode_body((), {1: 2})  # type: ignore[dict-item]


def test_args_may_use_int_map_keys() -> None:
    # Bodies are never decoded by the broker, so non-str keys are fine there.
    assert decode_body(encode_body(({1: "one"},), None)) == ([{1: "one"}], {})


@pytest.mark.parametrize("body", [b"\xc1", msgpack.packb([1, 2]),
                                  msgpack.packb({"args": "x", "kwargs": {}}),
                                  msgpack.packb({"args": [], "kwargs": {1: 2}})])
def test_bad_bodies_are_value_errors(body: bytes) -> None:
    with pytest.raises(ValueError, match="task body"):
        decode_body(body)


def test_an_empty_map_body_means_no_arguments() -> None:
    assert decode_body(msgpack.packb({})) == ([], {})


def test_check_result() -> None:
    assert check_result({"a": [1, 2.5, None, b"x"]}, 1000) is None
    assert check_result(None, 10) is None
    assert "str map keys" in (check_result({1: "a"}, 1000) or "")  # the broker decodes strictly
    assert "not a msgpack value" in (check_result(object(), 1000) or "")
    assert "exceeds the limit of 100 bytes" in (check_result("x" * 200, 100) or "")


# ------------------------------------------------------------------ Retry


def test_retry_exponential_doubles_within_jitter() -> None:
    r = zq.Retry("exponential", base=0.2, cap=60.0)
    for attempt, expected in ((1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6)):
        for _ in range(50):
            assert expected * 0.9 <= r.delay(attempt) <= expected * 1.1


def test_retry_cap_and_fixed() -> None:
    assert zq.Retry("exponential", base=1.0, cap=5.0).delay(30) <= 5.5
    assert zq.Retry("fixed", base=0.3).delay(1) == zq.Retry("fixed", base=0.3).delay(9) == 0.3
    assert zq.Retry("fixed", base=10, cap=2).delay(1) == 2.0


def test_retry_defaults_and_validation() -> None:
    assert zq.Retry() == zq.Retry("exponential", 0.2, 60.0)
    with pytest.raises(ValueError, match="no-such"):
        zq.Retry("no-such")
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="base"):
            zq.Retry(base=bad)
    with pytest.raises(ValueError, match="cap"):
        zq.Retry(cap=-0.1)


# ------------------------------------------------------------------ registration


def test_task_names_and_options() -> None:
    assert double.name == f"{__name__}.double"
    assert set(app.tasks) == {f"{__name__}.{n}" for n in ("double", "crash", "hello")}
    assert double.queue == "tasks"
    assert double.executor == "thread"
    assert hello.executor == "async"
    assert (crash.queue, crash.max_attempts, crash.time_limit, crash.priority, crash.executor) \
        == ("slow", 3, 30, 7, "process")
    assert app.queues() == ["tasks", "slow"]
    assert double(21) == 42  # calling the task runs the function here


def test_custom_name_default_queue_and_duplicates() -> None:
    other = zq.App(default_queue="jobs")

    @other.task(name="emails.send")
    def send(to: str) -> None: ...

    assert other.tasks == {"emails.send": send}
    assert send.queue == "jobs"
    with pytest.raises(ValueError, match="already registered"):
        @other.task(name="emails.send")
        def send2(to: str) -> None: ...


def test_executor_must_fit_the_function() -> None:
    other = zq.App()
    with pytest.raises(ValueError, match="coroutine function"):
        @other.task(executor="thread")
        async def a() -> None: ...
    with pytest.raises(ValueError, match="plain function"):
        @other.task(executor="async")
        def b() -> None: ...
    with pytest.raises(ValueError, match="importable"):
        @other.task(executor="process")
        def c() -> None: ...
    with pytest.raises(ValueError, match="executor must be one of"):
        @other.task(executor="fiber")
        def d() -> None: ...


def test_bad_task_options_are_refused_at_registration() -> None:
    other = zq.App()
    with pytest.raises(InvalidArgument, match="priority"):
        other.task(priority=10)
    with pytest.raises(InvalidArgument, match="max_attempts"):
        other.task(max_attempts=0)
    with pytest.raises(TypeError, match=r"zq\.Retry"):
        other.task(retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="result_ttl"):
        zq.App(result_ttl=-1)


def test_load_app() -> None:
    assert load_app(f"{__name__}:app") is app
    with pytest.raises(ValueError, match="MODULE:ATTR"):
        load_app("no_colon")
    with pytest.raises(ValueError, match="cannot import"):
        load_app("zq_no_such_module:app")
    with pytest.raises(ValueError, match="no attribute"):
        load_app(f"{__name__}:nope")
    with pytest.raises(ValueError, match=r"not a zq\.App"):
        load_app(f"{__name__}:double")
    with pytest.raises(ValueError, match="MODULE:ATTR"):
        WorkerConfig("no_colon")


def test_run_in_process_finds_the_function_behind_the_task() -> None:
    assert run_in_process(__name__, "double", [4], {}) == ("ok", 8)
    status, rep = run_in_process(__name__, "crash", ["gone"], {})
    assert status == "error"
    assert rep["type"] == "KeyError"
    assert rep["message"] == "'gone'"
    assert "raise KeyError(text)" in rep["traceback"]


# ------------------------------------------------------------------ error reports


def test_error_report_names_the_type_and_keeps_the_traceback() -> None:
    def inner() -> None:
        raise Boom("it broke")

    try:
        inner()
    except Boom as exc:
        rep = error_report(exc)
    assert rep["type"] == f"{__name__}.Boom"
    assert rep["message"] == "it broke"
    assert "in inner" in rep["traceback"]
    assert 'raise Boom("it broke")' in rep["traceback"]
    assert type_name(ValueError()) == "ValueError"


def test_error_report_bounds_long_texts() -> None:
    try:
        raise ValueError("m" * MAX_TRACEBACK + "END")
    except ValueError as exc:
        rep = error_report(exc)
    assert len(rep["message"]) < MAX_MESSAGE + 50
    assert rep["message"].endswith("characters cut)")
    assert len(rep["traceback"]) < MAX_TRACEBACK + 50
    assert rep["traceback"].startswith("... (")
    assert rep["traceback"].rstrip().endswith("mmmEND")  # the end, where it failed, is kept


def test_failure_from_a_dead_state() -> None:
    err = {"type": "KeyError", "message": "'x'", "traceback": "Traceback ...\nKeyError: 'x'"}
    exc = failure({"state": "dead", "id": 7, "queue": "q", "error": err,
                   "history": [{"attempt": 1, "outcome": "nacked"}]})
    assert isinstance(exc, zq.TaskFailed)
    assert (exc.type, exc.message, exc.traceback, exc.id, exc.queue) == \
        ("KeyError", "'x'", err["traceback"], 7, "q")
    assert str(exc) == "KeyError: 'x'"
    assert len(exc.history) == 1


def test_failure_without_an_error_uses_the_last_attempt() -> None:
    exc = failure({"state": "dead", "id": 1, "queue": "q",
                   "history": [{"attempt": 1, "outcome": "time limit", "reason": "30s"}]})
    assert (exc.type, exc.message, exc.traceback) == ("TimeLimit", "30s", "")
    assert failure({"state": "dead"}).type == "Dead"


# ------------------------------------------------------------------ SDK arguments


def test_complete_args() -> None:
    assert complete_args("q", 5, 1, True, {"r": 1}) == {
        "queue": "q", "id": 5, "attempt": 1, "ok": True, "result": {"r": 1}}
    err = {"type": "E", "message": "m", "traceback": "t"}
    assert complete_args("q", 5, 2, False, error=err, retry=False, delay=0.2) == {
        "queue": "q", "id": 5, "attempt": 2, "ok": False, "error": err, "retry": False,
        "delay_ms": 200}
    assert "delay_ms" not in complete_args("q", 5, 2, False, error=err, delay=0)
    with pytest.raises(InvalidArgument, match="delay"):
        complete_args("q", 5, 2, False, error=err, delay=-1)
    with pytest.raises(InvalidArgument, match="str map keys"):
        complete_args("q", 5, 1, True, {1: "int key"})
    with pytest.raises(InvalidArgument, match="error"):
        complete_args("q", 5, 2, False, error={"type": 1})  # type: ignore[dict-item]


# ------------------------------------------------------------------ credit sizing


def test_auto_prefetch_stays_at_concurrency_for_slow_tasks() -> None:
    # 100 ms tasks: even a slow 20 ms round trip (an fsync) adds nothing.
    assert auto_prefetch(4, 0.100, 0.001) == 4
    assert auto_prefetch(4, 0.100, 0.020) == 4
    assert auto_prefetch(8, 0.010, 0.004) == 8


def test_auto_prefetch_grows_for_short_tasks_up_to_a_cap() -> None:
    assert auto_prefetch(4, 0.001, 0.001) == 8
    assert auto_prefetch(4, 0.001, 0.003) == 16
    assert auto_prefetch(8, 0.000001, 0.002) == MAX_PREFETCH
    assert auto_prefetch(2000, 0.0, 0.002) == 2000
    rng = random.Random(1)
    for _ in range(1000):
        c = rng.randint(1, 64)
        h, r = rng.uniform(0, 1), rng.uniform(0, 1)
        assert c <= auto_prefetch(c, h, r) <= max(c, MAX_PREFETCH)


def test_a_module_that_raises_on_import_and_unknown_queues_are_clear_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zq_broken_mod.py").write_text("x = 1\nraise RuntimeError('broken import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"cannot import 'zq_broken_mod': RuntimeError: "
                                         r"broken import \(.*zq_broken_mod\.py, line 2\)"):
        load_app("zq_broken_mod:app")
    with pytest.raises(ValueError, match=r"no task of .* uses queue"):
        build_worker(WorkerConfig(f"{__name__}:app", queues=("nope",)))
