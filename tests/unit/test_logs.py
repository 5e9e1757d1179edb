"""zq.logs: the JSON lines, the human lines, setup, the click options, the throttle; and
the broker core's warnings about dropped peers (once each, a flood summed up)."""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner

from tests.unit.test_core import Harness
from tests.unit.test_layering import MODULES
from tests.unit.test_router_core import make, welcome
from zq import logs
from zq.cli import main
from zq.cli.broker import broker
from zq.cli.node import node
from zq.cli.tasks import worker
from zq.core.leases import drop_kind
from zq.protocol import frames as f

HUMAN = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)$")
ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """Each test leaves the root logger, Python's warnings and the excepthooks as it
    found them (setup changes all of them)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook = hooks
    logs._current.update(level=logs.DEFAULT_LEVEL, json=False)


def record(msg: str = "hello", *args: Any, exc: bool = False,
           **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.getLogger("zq.test").makeRecord(
        "zq.test", logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra)


def as_json(rec: logging.LogRecord) -> dict[str, Any]:
    line = logs.JsonFormatter().format(rec)
    assert "\n" not in line
    assert len(line.splitlines()) == 1
    out: dict[str, Any] = json.loads(line)
    return out


def zq_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logs._Stderr)]


# ------------------------------------------------------------------ the JSON line


def test_a_json_line_has_the_core_fields() -> None:
    out = as_json(record("peer %s dropped: %s", "a", "silent"))
    assert set(out) == {"ts", "level", "logger", "msg", "pid"}
    assert ISO_MS_UTC.match(out["ts"]), out["ts"]
    assert (out["level"], out["logger"], out["msg"]) == ("WARNING", "zq.test",
                                                          "peer a dropped: silent")
    assert isinstance(out["pid"], int)


def test_a_message_with_newlines_and_line_separators_stays_on_one_line() -> None:
    text = "one\ntwo\r\nthree\u2028four\u0085five\x1c"
    out = as_json(record("%s", text))
    assert out["msg"] == text


def test_exc_info_becomes_the_formatted_traceback() -> None:
    out = as_json(record("it failed", exc=True))
    assert out["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in out["exc"]


def test_structured_extras_are_fields_and_made_json_safe() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    out = as_json(record("x", event="peer_dropped", peer="w1", held=3, ok=True, none=None,
                         key=b"caf\xc3\xa9 \xff", thing=Thing(), nan=float("nan"),
                         nested={b"k": [1, (2, b"\xfe")], 3: {"deep": Thing()}},
                         ts="mine", level=7))
    assert out["event"] == "peer_dropped"
    assert out["peer"] == "w1"
    assert out["held"] == 3
    assert out["ok"] is True
    assert out["none"] is None
    assert out["key"] == "café \ufffd"  # bytes decoded, bad UTF-8 replaced
    assert out["thing"] == "<thing>"
    assert out["nan"] == "nan"
    assert out["nested"] == {"k": [1, [2, "\ufffd"]], "3": {"deep": "<thing>"}}
    # named like a core field: kept, beside it
    assert out["extra_ts"] == "mine"
    assert out["extra_level"] == 7
    assert out["level"] == "WARNING"


def test_a_record_whose_arguments_do_not_fit_still_makes_one_line() -> None:
    out = as_json(record("%d items", "not a number"))
    assert "'%d items'" in out["msg"]
    assert "unformattable" in out["msg"]


def test_deep_and_self_referencing_values_end_as_repr() -> None:
    loop: list[Any] = []
    loop.append(loop)
    out = as_json(record("x", loop=loop))
    assert "[...]" in json.dumps(out["loop"])


# ------------------------------------------------------------------ setup


def test_human_lines_are_as_before_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(logs.DEFAULT_LEVEL, json=False)
    logging.getLogger("zq.test").info("not shown at warning")
    logging.getLogger("zq.test").warning("shown %s", "here", extra={"event": "x"})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    m = HUMAN.match(lines[0])
    assert m is not None, lines
    assert m.groups() == ("WARNING", "zq.test", "shown here")
    assert logs.HUMAN_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"


def test_setup_again_replaces_the_handler_rather_than_adding_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", json=False)
    logs.setup("debug", json=True)
    logs.setup("info", json=True)
    assert len(zq_handlers()) == 1
    assert logging.getLogger().level == logging.INFO
    logging.getLogger("zq.test").info("once", extra={"event": "e"})
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["once"]
    assert logs.current() == ("info", True)
    assert logs.environ() == {"ZQ_LOG_LEVEL": "info", "ZQ_LOG_JSON": "1"}


def test_json_mode_logs_python_warnings_and_uncaught_exceptions(
        capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("warning", json=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)  # catch_warnings put back showwarning
        warnings.warn("careful\nnow", UserWarning, stacklevel=1)
    try:
        raise RuntimeError("crash")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    lines = capsys.readouterr().err.splitlines()
    found = [json.loads(line) for line in lines]
    assert [o["logger"] for o in found] == ["py.warnings", "zq"]
    assert "careful\nnow" in found[0]["msg"]
    assert found[1]["level"] == "CRITICAL"
    assert "RuntimeError: crash" in found[1]["exc"]
    logs.setup("warning", json=False)
    assert sys.excepthook is sys.__excepthook__


def test_notice_is_a_plain_line_or_a_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("error", json=False)
    logs.notice("zq worker stopped: 1 succeeded", "zq.worker", event="worker_stopped")
    assert capsys.readouterr().err == "zq worker stopped: 1 succeeded\n"
    logs.setup("error", json=True)  # shown at any level
    logs.notice("zq worker stopped: 1 succeeded", "zq.worker", event="worker_stopped")
    out = json.loads(capsys.readouterr().err)
    assert (out["msg"], out["logger"], out["event"]) == (
        "zq worker stopped: 1 succeeded", "zq.worker", "worker_stopped")


# ------------------------------------------------------------------ the click options


@click.group()
@logs.options
def group() -> None:
    pass


@group.command()
@logs.options
def sub() -> None:
    click.echo(repr(logs.current()))


@pytest.mark.parametrize(("argv", "env", "want"), [
    (["sub"], {}, ("warning", False)),
    (["--log-level", "info", "sub"], {}, ("info", False)),
    (["--log-json", "sub"], {}, ("warning", True)),
    (["sub", "--log-json", "--log-level", "debug"], {}, ("debug", True)),
    # a flag on the subcommand beats the group's
    (["--log-level", "error", "sub", "--log-level", "info"], {}, ("info", False)),
    (["--log-json", "--log-level", "debug", "sub", "--log-level", "info"], {}, ("info", True)),
    # the environment, beaten by a flag on either
    (["sub"], {"ZQ_LOG_LEVEL": "INFO", "ZQ_LOG_JSON": "1"}, ("info", True)),
    (["--log-level", "debug", "sub"], {"ZQ_LOG_LEVEL": "error"}, ("debug", False)),
    (["sub", "--log-json"], {"ZQ_LOG_JSON": "0"}, ("warning", True)),
])
def test_the_options_of_a_group_and_its_command(argv: list[str], env: dict[str, str],
                                                want: tuple[str, bool]) -> None:
    result = CliRunner().invoke(group, argv, env={"ZQ_LOG_LEVEL": None, "ZQ_LOG_JSON": None,
                                                  **env})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == repr(want)


def test_zq_and_its_process_commands_take_the_options() -> None:
    for command in (main, broker, worker, node):
        names = {p.name for p in command.params}
        assert {"log_level", "log_json"} <= names, command.name
    level = next(p for p in main.params if p.name == "log_level")
    assert isinstance(level, click.Option)
    assert level.envvar == "ZQ_LOG_LEVEL"
    text = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    assert "--log-json" in text
    assert "[default: warning]" in text


def extra_names(tree: ast.AST) -> set[str]:
    """The keys of every ``extra={...}`` literal, and the keywords of every ``.say(...)``."""
    found: set[str] = set()
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        for kw in call.keywords:
            if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                found.update(k.value for k in kw.value.keys
                             if isinstance(k, ast.Constant) and isinstance(k.value, str))
            elif (kw.arg is not None and isinstance(call.func, ast.Attribute)
                  and call.func.attr == "say"):
                found.add(kw.arg)
    return found


def test_no_extra_of_zq_is_named_like_a_log_record_attribute() -> None:
    """logging raises KeyError for ``extra={"process": ...}``, and only when the level
    is on: a test at the default level would not see it."""
    say = {"reason", "kind", "now", "level", "exc_info"}  # Throttle.say's own keywords
    for name, path in MODULES.items():
        names = extra_names(ast.parse(path.read_text(encoding="utf-8"))) - say
        assert not names & logs._RECORD_FIELDS, f"{name}: {names & logs._RECORD_FIELDS}"


def test_the_throttle_renames_an_extra_named_like_a_record_attribute(
        caplog: pytest.LogCaptureFixture) -> None:
    t = logs.Throttle(logging.getLogger("zq.test"), "e", "%d more: %s")
    with caplog.at_level(logging.WARNING, logger="zq.test"):
        t.say("x", reason="r", process="p", name="n")
    (r,) = caplog.records
    assert (r.extra_process, r.extra_name) == ("p", "n")  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the throttle


def test_a_flood_is_logged_one_by_one_then_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    pending: list[int] = []
    t = logs.Throttle(logging.getLogger("zq.test"), "peer_dropped", "%d more: %s",
                      per_second=3, pending=lambda: pending.append(1))
    with caplog.at_level(logging.WARNING, logger="zq.test"):
        for i in range(5):
            t.say("dropped %d", i, reason=f"silent for {i} s", kind="silent", now=10.0,
                  peer=f"p{i}")
        t.say("dropped", reason="refused", now=10.9)
        assert pending == [1]  # once, when it began holding lines back
        t.say("dropped again", reason="refused", now=11.0)  # a new second: the sum first
        t.say("late", reason="refused", now=11.5)
        t.flush()  # nothing held: no line
    got = [(r.getMessage(), getattr(r, "event", None), getattr(r, "reason", None))
           for r in caplog.records]
    assert got == [("dropped 0", "peer_dropped", "silent for 0 s"),
                   ("dropped 1", "peer_dropped", "silent for 1 s"),
                   ("dropped 2", "peer_dropped", "silent for 2 s"),
                   ("3 more: 1 refused, 2 silent", "peer_dropped", None),
                   ("dropped again", "peer_dropped", "refused"),
                   ("late", "peer_dropped", "refused")]
    assert caplog.records[3].count == 3  # type: ignore[attr-defined]
    assert caplog.records[3].reasons == {"silent": 2, "refused": 1}  # type: ignore[attr-defined]


def test_a_summary_names_the_most_common_kinds_only(caplog: pytest.LogCaptureFixture) -> None:
    t = logs.Throttle(logging.getLogger("zq.test"), "e", "%d more: %s", per_second=0)
    with caplog.at_level(logging.WARNING, logger="zq.test"):
        for i in range(20):
            t.say("x", reason=f"r{i:02d}", now=0.0)
        t.say("x", reason="r00", now=0.0)
        t.flush()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("21 more: 2 r00, 1 r")
    assert line.endswith(", 12 of 12 other kind(s)")


# ------------------------------------------------------------------ the core's drops


def drops(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") in ("peer_dropped",
                                                                     "peer_left")]


def test_drop_kind_leaves_numbers_and_details_out() -> None:
    assert drop_kind("no sign of life for 3.02s") == "no sign of life for Ns"
    assert drop_kind("protocol error: bad frame 7") == "protocol error"


def test_a_silent_peer_is_a_warning_with_its_name_and_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.hello(b"w1", heartbeat_ms=100)
    with caplog.at_level(logging.INFO, logger="zq.broker"):
        h.core.tick(h.now + 60)
    (r,) = drops(caplog)
    assert r.levelno == logging.WARNING
    assert (r.peer, r.identity) == ("w1", b"w1".hex())  # type: ignore[attr-defined]
    assert r.reason.startswith("no sign of life for ")  # type: ignore[attr-defined]
    assert "peer 7731 (w1) dropped: no sign of life" in r.getMessage()


def test_a_peer_that_says_bye_is_news_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.hello(b"w1")
    with caplog.at_level(logging.INFO, logger="zq.broker"):
        h.send(b"w1", f.Bye("done"))
    (r,) = drops(caplog)
    assert (r.levelno, r.event) == (logging.INFO, "peer_left")  # type: ignore[attr-defined]


def test_a_thousand_silent_peers_make_twenty_lines_and_a_sum(
        caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    peers = [b"p%04d" % i for i in range(1000)]
    h.hello(*peers)
    with caplog.at_level(logging.INFO, logger="zq.broker"):
        h.core.tick(h.now + 60)
        h.core.flush_logs()
    found = drops(caplog)
    assert len(found) == 21
    assert all(r.levelno == logging.WARNING for r in found)
    assert found[-1].getMessage() == "980 more peer(s) dropped: 980 no sign of life for Ns"
    assert h.core.counters["peers_dropped"] == 1000


def test_stopping_says_one_line_not_one_per_peer(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.hello(*[b"p%d" % i for i in range(50)])
    with caplog.at_level(logging.INFO, logger="zq.broker"):
        h.core.close_sessions("the broker is stopping")
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.getMessage() for r in lines] == [
        "50 session(s) dropped: the broker is stopping"]


# ------------------------------------------------------------------ the router's links


def test_a_link_up_and_a_flood_of_bad_frames_from_a_broker(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="zq.router"):
        core = make()
        core.from_broker("b1", welcome("b1"), 0.0)
        for _ in range(30):
            core.from_broker("b1", [b"garbage"], 0.5)
        core.flush_logs()
    up = [r for r in caplog.records if getattr(r, "event", "") == "link_up"]
    assert [(r.broker, r.broker_process) for r in up] == [  # type: ignore[attr-defined]
        ("b1", "proc-b1")]
    bad = [r for r in caplog.records if getattr(r, "event", "") == "link_frame"]
    assert len(bad) == 21
    assert bad[-1].getMessage() == ("10 more warning(s) about frames from brokers: "
                                    "10 undecodable frame")


def test_the_human_format_escapes_control_characters_in_the_message() -> None:
    """A client's name with a newline and an escape sequence cannot forge a log line."""
    f = logs.HumanFormatter(logs.HUMAN_FORMAT)
    record = logging.LogRecord("zq.broker", logging.WARNING, __file__, 1,
                               "peer %s dropped", ("ev\"il\n2026 CRITICAL zq: FORGED\x1b[31m",),
                               None)
    line = f.format(record)
    assert "\n" not in line
    assert "\x1b" not in line
    assert "\\n2026 CRITICAL zq: FORGED\\x1b[31m" in line
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("zq", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    assert "Traceback (most recent call last):\n" in f.format(record)  # kept as lines
