"""scripts/run, scripts/test and .ci/run on a fresh clone, with stand-ins for Python and
the tools (each logs its arguments): scripts/run installs only what the broker needs,
scripts/test adds the test tools, neither installs again when the other ran, both
install again when pyproject.toml changes, and pytest's exit 5 is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Logs "<tool> <args>"; `-m venv DIR` makes DIR/bin with the same stand-in for each
# tool; `-m pytest` exits with $FAKE_PYTEST_RC; `-m pip` fails if $FAKE_PIP_RC says so.
STAND_IN = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$1 $2" in
    "-m venv")
        mkdir -p "$3/bin"
        for tool in python zq ruff mypy; do cp "$0" "$3/bin/$tool"; done ;;
    "-m pytest") exit "${FAKE_PYTEST_RC:-0}" ;;
    "-m pip") exit "${FAKE_PIP_RC:-0}" ;;
esac
"""


class Clone:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "clone"
        for name in ("scripts/_bootstrap", "scripts/run", "scripts/test", ".ci/run",
                     "pyproject.toml"):
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, self.root / name)
        self.set_pyproject_age(-3600)  # checked out an hour ago
        self.bin = tmp / "bin"
        self.bin.mkdir()
        (self.bin / "python3").write_text(STAND_IN)
        (self.bin / "python3").chmod(0o755)
        self.log = tmp / "log"

    def set_pyproject_age(self, seconds: float) -> None:
        t = time.time() + seconds
        os.utime(self.root / "pyproject.toml", (t, t))

    def edit_pyproject(self) -> None:
        """pyproject.toml changes after every install so far (their stamps in .venv)."""
        t = time.time() - 600
        for stamp in (self.root / ".venv").iterdir():
            if stamp.is_file():
                os.utime(stamp, (t, t))
        self.set_pyproject_age(-60)

    def run(self, *argv: str, **env: str) -> tuple[int, list[str]]:
        """Run ``argv`` in the clone; its exit code and the tools it called, in order."""
        self.log.write_text("")
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("VIRTUAL_ENV", "ZQ_NEEDS", "PYTHON")}
        full_env |= {"PYTHON": str(self.bin / "python3"), "FAKE_LOG": str(self.log), **env}
        r = subprocess.run(["bash", *argv], cwd=self.root, env=full_env, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        calls = self.log.read_text().replace(str(self.root), "ROOT").splitlines()
        return r.returncode, calls


@pytest.fixture
def clone(tmp_path: Path) -> Clone:
    return Clone(tmp_path)


PIP = "python -m pip install --quiet --disable-pip-version-check -e"


def test_run_installs_what_the_broker_needs_and_test_adds_the_test_tools(clone: Clone) -> None:
    rc, calls = clone.run("scripts/run", "--bind", "tcp://127.0.0.1:6000")
    assert rc == 0
    assert calls == ["python3 -c import sys; sys.exit(sys.version_info < (3, 11))",
                     "python3 -m venv ROOT/.venv",
                     f"{PIP} ROOT",
                     "zq broker --bind tcp://127.0.0.1:6000"]
    assert clone.run("scripts/run") == (0, ["zq broker"])  # installed: nothing to do

    rc, calls = clone.run("scripts/test", "-k", "credit")
    assert rc == 0
    assert calls == [f"{PIP} ROOT[test]", "ruff check zq tests perf", "mypy zq",
                     "python -m pytest -k credit"]
    # Switching back and forth installs nothing more.
    assert clone.run("scripts/run") == (0, ["zq broker"])
    assert clone.run("scripts/test")[1] == ["ruff check zq tests perf", "mypy zq",
                                            "python -m pytest"]

    clone.edit_pyproject()  # each installs again, once
    assert clone.run("scripts/run")[1] == [f"{PIP} ROOT", "zq broker"]
    assert clone.run("scripts/run")[1] == ["zq broker"]
    assert clone.run("scripts/test")[1][0] == f"{PIP} ROOT[test]"
    assert clone.run("scripts/test")[1][0] == "ruff check zq tests perf"


def test_test_first_then_run_installs_once(clone: Clone) -> None:
    rc, calls = clone.run(".ci/run")  # what CI runs, on a fresh clone
    assert rc == 0
    assert calls[1:] == ["python3 -m venv ROOT/.venv", f"{PIP} ROOT[test]",
                         "ruff check zq tests perf", "mypy zq", "python -m pytest"]
    assert clone.run("scripts/run") == (0, ["zq broker"])


def test_a_failed_install_is_tried_again_next_time(clone: Clone) -> None:
    rc, calls = clone.run("scripts/run", FAKE_PIP_RC="1")
    assert rc == 1
    assert calls[-1] == f"{PIP} ROOT"
    assert clone.run("scripts/run")[1] == [f"{PIP} ROOT", "zq broker"]


@pytest.mark.parametrize(("pytest_rc", "rc"), [(0, 0), (1, 1), (5, 1)])
def test_scripts_test_exits_as_pytest_did_but_no_tests_is_a_failure(
        clone: Clone, pytest_rc: int, rc: int) -> None:
    assert clone.run("scripts/test", FAKE_PYTEST_RC=str(pytest_rc))[0] == rc
