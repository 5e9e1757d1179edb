"""zq in a new user's own project, the way README.md says: installed from a wheel built
in the checkout, and tested with ``zq.testing`` under plain pytest (no asyncio_mode,
with pytest-asyncio in its default strict mode or not loaded at all)."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text + "\n## ", re.M | re.S)
    assert m, f"README.md has no '## {title}' section"
    return m.group(1)


def code_blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", section, re.M | re.S)


def user_env(**extra: str) -> dict[str, str]:
    """This environment without what would steer pytest or zq from outside the project."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "ZQ_")) and k != "PYTHONPATH"}
    env.update(extra)
    return env


@pytest.mark.parametrize("plugins", [[], ["-p", "no:asyncio"]],
                         ids=["pytest-asyncio-strict", "no-plugin"])
def test_the_readme_testing_example_passes_in_a_project_of_its_own(
        tmp_path: Path, plugins: list[str]) -> None:
    # The files of the README's example, each written where its first line says.
    files = {}
    for block in code_blocks(readme_section("Tasks and workers"), "python"):
        first, _, _ = block.partition("\n")
        if re.fullmatch(r"# [\w/]+\.py", first):
            files[first[2:]] = block
    assert sorted(files) == ["myproject/tasks.py", "tests/test_tasks.py"], files
    assert "examples" not in files["tests/test_tasks.py"]  # only the user's own code
    project = tmp_path / "project"
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    (project / "myproject" / "__init__.py").touch()
    # An empty pytest.ini: the project's root and configuration (none), so that no
    # pyproject.toml above it (zq's own, with asyncio_mode=auto) is read.
    (project / "pytest.ini").touch()

    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *plugins],
                       cwd=project, env=user_env(), capture_output=True, text=True,
                       timeout=120)
    out = r.stdout + r.stderr
    assert f"rootdir: {project}" in out, out
    if plugins:
        assert "asyncio-" not in out.partition("plugins:")[2].partition("\n")[0], out
    else:
        assert "asyncio: mode=Mode.STRICT" in out, out
    assert r.returncode == 0, out
    assert re.search(r"^=+ 1 passed in ", r.stdout, re.M), out


def test_the_wheel_built_as_the_readme_says_holds_the_package_and_the_command(
        tmp_path: Path) -> None:
    section = readme_section("Use zq in your project")
    commands = [c.strip() for block in code_blocks(section, "sh")
                for line in block.splitlines()
                for c in line.split("#", 1)[0].split("&&") if c.strip()]
    (build,) = [shlex.split(c) for c in commands if " pip wheel " in f" {c} "]
    assert build == ["python", "-m", "pip", "wheel", "--no-deps", "-w", "dist", "."], commands
    assert "pip install dist/zq-*.whl" in commands, commands

    # Built in a copy of the checkout (the build writes build/ and zq.egg-info/ where
    # it runs), with examples/ and tests/ in it as in the real one. Offline: with the
    # build tools of this environment.
    src = tmp_path / "zq"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis", "zq-data", "mailer-outbox"))
    assert (src / "examples").is_dir()
    assert (src / "tests").is_dir()
    r = subprocess.run([sys.executable, *build[1:], "--no-build-isolation", "--quiet"],
                       cwd=src, env=user_env(PIP_NO_INDEX="1"), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (src / "dist").glob("zq-*.whl")

    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (info,) = {n.split("/")[0] for n in names if ".dist-info/" in n}
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    assert {"zq/__init__.py", "zq/testing.py", "zq/py.typed", "zq/cli/__init__.py"} <= set(
        names)
    assert [n for n in names if not n.startswith(("zq/", f"{info}/"))] == []  # no examples/
    assert not any(n.startswith(("examples/", "tests/", "perf/")) for n in names)
    eps = configparser.ConfigParser()
    eps.read_string(entry_points)
    assert dict(eps["console_scripts"]) == {"zq": "zq.cli:main"}
    required = {m.group(1) for m in re.finditer(r"^Requires-Dist: ([\w-]+)(?!.*extra ==)",
                                                metadata, re.M)}
    assert required == {"pyzmq", "msgpack", "uvloop", "aiosqlite", "click",
                        "prometheus-client", "h11", "rich"}  # as the README

    # Installed (its dependencies are this environment's), it is the whole of zq: the
    # command starts a broker, and the README's client example publishes to it.
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-index", "--target", str(target), str(wheel)],
                       env=user_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    env = user_env(PYTHONPATH=str(target), PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-c", "import zq, zq.testing; print(zq.__file__)"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == str(target / "zq" / "__init__.py"), r.stdout + r.stderr
    (example,) = [b for b in code_blocks(section, "python") if "zq.Client(" in b]
    log = tmp_path / "broker.log"
    with log.open("wb") as err:
        broker = subprocess.Popen(
            [str(target / "bin" / "zq"), "broker", "--bind", "tcp://127.0.0.1:*",
             "--storage", "memory"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=err, text=True)
    watchdog = threading.Timer(60, broker.kill)  # a hung broker fails the test, not CI
    watchdog.start()
    try:
        assert broker.stdout is not None
        ready = broker.stdout.readline()
        assert ready.startswith("ZQ READY tcp://127.0.0.1:"), ready + log.read_text()
        script = tmp_path / "example.py"
        script.write_text(example.replace("tcp://127.0.0.1:5555", ready.split()[-1]))
        r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.fullmatch(r"\d+\n", r.stdout), r.stdout
    finally:
        broker.terminate()
        rc = broker.wait(30)
        watchdog.cancel()
    assert rc == 0, log.read_text()
