"""perf/progress.py: the progress line is drawn only on a terminal, and never breaks a run."""

from __future__ import annotations

import io
import time

import pytest

from perf.progress import Progress


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_means_no_output() -> None:
    out = io.StringIO()  # isatty() is False
    bar = Progress(stream=out, interval=0.01)
    assert not bar.enabled
    with bar.scope("throughput"), bar.source(lambda: "5 of 10"):
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_environment_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZQ_PERF_PROGRESS", "0")
    assert not Progress(stream=FakeTty()).enabled


def test_a_terminal_gets_a_redrawn_line_that_is_cleared_at_the_end() -> None:
    out = FakeTty()
    bar = Progress(stream=out, interval=0.01)
    assert bar.enabled
    with bar.scope("suite"), bar.scope("throughput zq"), bar.source(lambda: "5 of 10"):
        line = bar.line()
        assert line.startswith("suite > throughput zq: ")
        assert line.endswith(", 5 of 10")
        assert "(in all " in line
        deadline = time.monotonic() + 5
        while "5 of 10" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    text = out.getvalue()
    assert "\r\x1b[Ksuite > throughput zq: " in text
    assert text.endswith("\r\x1b[K")  # cleared when the last scope ended
    assert bar.line() == ""


def test_say_clears_the_line_first_and_a_failing_source_is_ignored() -> None:
    out = FakeTty()
    bar = Progress(stream=out, interval=60)  # no redraws by the thread during the test

    def broken() -> str:
        raise RuntimeError("boom")

    with bar.scope("backlog"), bar.source(broken):
        assert bar.line().startswith("backlog: ")
        bar.draw()
        bar.say("published")
    assert "\r\x1b[Kpublished\n" in out.getvalue()


def test_sources_nest_and_restore() -> None:
    bar = Progress(stream=io.StringIO())
    with bar.scope("run"):
        with bar.source(lambda: "outer"):
            with bar.source(lambda: "inner"):
                assert bar.line().endswith("inner")
            assert bar.line().endswith("outer")
        assert bar.line().endswith(" s")
