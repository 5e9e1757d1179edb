"""WorkerConfig and its layering: defaults < TOML file < environment < flags, merged in
``worker_config`` and validated in ``__post_init__``; and how ``zq worker`` reports a
bad setting (no broker: every case here fails before connecting)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from zq.cli import main
from zq.node import config as node_config
from zq.node.config import MissingSetting, SettingError, WorkerConfig, worker_config

APP = "tests.unit.test_node_config:app"


def toml(tmp_path: Path, text: str, name: str = "worker.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ the layers


def test_defaults_need_only_the_app() -> None:
    cfg = worker_config(env={}, app=APP)
    assert cfg == WorkerConfig(APP)
    assert (cfg.queues, cfg.concurrency, cfg.prefetch, cfg.drain_timeout, cfg.endpoint,
            cfg.connect_timeout) == ((), 8, None, 30.0, None, 5.0)


def test_every_field_can_be_read() -> None:
    fields = {f.name for f in dataclasses.fields(WorkerConfig)}
    assert set(node_config._READERS) == fields


FILE = """
[broker]
bind = "tcp://127.0.0.1:7000"   # another process's table: not ours

[worker]
app = "from.file:app"
queues = ["a", "b"]
concurrency = 3
prefetch = 2
drain-timeout = 12
endpoint = "tcp://file:1"
connect_timeout = 7.5
"""


def test_the_file_sets_every_field(tmp_path: Path) -> None:
    cfg = worker_config(toml(tmp_path, FILE), env={})
    assert cfg == WorkerConfig("from.file:app", ("a", "b"), 3, 2, 12.0, "tcp://file:1", 7.5)


def test_environment_beats_the_file(tmp_path: Path) -> None:
    env = {"ZQ_WORKER_APP": "from.env:app", "ZQ_WORKER_QUEUES": "c, d,,",
           "ZQ_WORKER_CONCURRENCY": "5", "ZQ_WORKER_PREFETCH": "auto",
           "ZQ_WORKER_DRAIN_TIMEOUT": "0.5", "ZQ_WORKER_ENDPOINT": "tcp://env:2",
           "ZQ_WORKER_CONNECT_TIMEOUT": "9"}
    cfg = worker_config(toml(tmp_path, FILE), env=env)
    assert cfg == WorkerConfig("from.env:app", ("c", "d"), 5, None, 0.5, "tcp://env:2", 9.0)


def test_flags_beat_the_environment_and_none_is_unset(tmp_path: Path) -> None:
    env = {"ZQ_WORKER_CONCURRENCY": "5", "ZQ_WORKER_PREFETCH": "4"}
    cfg = worker_config(toml(tmp_path, FILE), env=env, app="from.flag:app", queues=("e",),
                        concurrency=6, prefetch=None, drain_timeout=None, endpoint=None,
                        connect_timeout=2.0)
    assert cfg == WorkerConfig("from.flag:app", ("e",), 6, 4, 12.0, "tcp://file:1", 2.0)


def test_each_layer_alone_and_over_the_one_below(tmp_path: Path) -> None:
    path = toml(tmp_path, "[worker]\nconcurrency = 2\n")
    assert worker_config(env={}, app=APP).concurrency == 8
    assert worker_config(path, env={}, app=APP).concurrency == 2
    env = {"ZQ_WORKER_CONCURRENCY": "3"}
    assert worker_config(path, env=env, app=APP).concurrency == 3
    assert worker_config(path, env=env, app=APP, concurrency=4).concurrency == 4


def test_shared_variables_sit_below_the_worker_ones() -> None:
    env = {"ZQ_ENDPOINT": "tcp://shared:1", "ZQ_TIMEOUT": "3"}
    cfg = worker_config(env=env, app=APP)
    assert (cfg.endpoint, cfg.connect_timeout) == ("tcp://shared:1", 3.0)
    env |= {"ZQ_WORKER_ENDPOINT": "tcp://worker:1", "ZQ_WORKER_CONNECT_TIMEOUT": "4"}
    cfg = worker_config(env=env, app=APP)
    assert (cfg.endpoint, cfg.connect_timeout) == ("tcp://worker:1", 4.0)
    assert worker_config(env=env, app=APP, endpoint="tcp://flag:1").endpoint == "tcp://flag:1"


def test_empty_variables_are_unset(tmp_path: Path) -> None:
    path = toml(tmp_path, "[worker]\nconcurrency = 2\n")
    env = {"ZQ_WORKER_CONCURRENCY": "", "ZQ_ENDPOINT": ""}
    cfg = worker_config(path, env=env, app=APP)
    assert (cfg.concurrency, cfg.endpoint) == (2, None)


def test_a_file_without_a_worker_table_is_read_from_its_top(tmp_path: Path) -> None:
    path = toml(tmp_path, 'app = "top:app"\nqueues = "x,y"\n\n[broker]\nwindow = 5\n')
    assert worker_config(path, env={}) == WorkerConfig("top:app", ("x", "y"))


def test_the_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZQ_WORKER_CONCURRENCY", "11")
    monkeypatch.delenv("ZQ_ENDPOINT", raising=False)
    assert worker_config(app=APP).concurrency == 11


# ------------------------------------------------------------------ errors


def test_the_app_must_come_from_somewhere() -> None:
    with pytest.raises(MissingSetting, match="MODULE:ATTR") as err:
        worker_config(env={})
    assert err.value.setting == "app"
    with pytest.raises(SettingError, match="expected MODULE:ATTR, got 'no_colon'"):
        worker_config(env={}, app="no_colon")


def test_bad_file_values_name_the_file_and_key(tmp_path: Path) -> None:
    path = toml(tmp_path, "[worker]\nconcurrency = \"many\"\n")
    with pytest.raises(SettingError, match=r"worker\.toml: concurrency: cannot read 'many' "
                                           "as an integer") as err:
        worker_config(path, env={}, app=APP)
    assert err.value.setting == "concurrency"
    path = toml(tmp_path, "[worker]\nconcurrency = true\n")
    with pytest.raises(SettingError, match="cannot read True"):
        worker_config(path, env={}, app=APP)


def test_invalid_values_name_where_they_came_from(tmp_path: Path) -> None:
    path = toml(tmp_path, "[worker]\nconcurrency = 0\n")
    with pytest.raises(SettingError, match=r"worker\.toml: concurrency: concurrency must "
                                           r"be >= 1, got 0") as err:
        worker_config(path, env={}, app=APP)
    assert err.value.setting == "concurrency"
    with pytest.raises(SettingError, match=r"^\$ZQ_WORKER_DRAIN_TIMEOUT: drain timeout must "
                                           r"be seconds >= 0, got -1"):
        worker_config(env={"ZQ_WORKER_DRAIN_TIMEOUT": "-1"}, app=APP)
    with pytest.raises(SettingError, match=r"^\$ZQ_TIMEOUT: connect timeout"):
        worker_config(env={"ZQ_TIMEOUT": "0"}, app=APP)
    with pytest.raises(SettingError, match=r"^prefetch must be >= 1, got 0$"):
        worker_config(env={}, app=APP, prefetch=0)  # a flag: the CLI names it


def test_bad_environment_values_name_the_variable() -> None:
    with pytest.raises(SettingError, match=r"\$ZQ_WORKER_PREFETCH: cannot read 'lots' as an "
                                           r"integer or 'auto'"):
        worker_config(env={"ZQ_WORKER_PREFETCH": "lots"}, app=APP)
    with pytest.raises(SettingError, match=r"\$ZQ_WORKER_DRAIN_TIMEOUT: cannot read"):
        worker_config(env={"ZQ_WORKER_DRAIN_TIMEOUT": "soon"}, app=APP)


def test_the_file_itself_at_fault(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="unknown worker setting 'threads'; the settings "
                                           "are app, queues") as err:
        worker_config(toml(tmp_path, "[worker]\nthreads = 4\n"), env={}, app=APP)
    assert err.value.setting == ""
    with pytest.raises(SettingError, match="not TOML"):
        worker_config(toml(tmp_path, "[worker\n"), env={}, app=APP)
    with pytest.raises(SettingError, match="must be a \\[worker\\] table"):
        worker_config(toml(tmp_path, "worker = 3\n"), env={}, app=APP)
    with pytest.raises(SettingError, match="cannot read"):
        worker_config(tmp_path / "missing.toml", env={}, app=APP)
    with pytest.raises(SettingError, match="unknown worker setting 'colour'"):
        worker_config(env={}, app=APP, colour="red")


@pytest.mark.parametrize(("changes", "match"), [
    ({"app": "no_colon"}, "MODULE:ATTR"),
    ({"queues": ("a", "")}, "queue names"),
    ({"queues": "abc"}, "queue names"),
    ({"concurrency": 0}, "concurrency must be >= 1"),
    ({"concurrency": True}, "concurrency must be >= 1"),
    ({"concurrency": 2.0}, "concurrency must be >= 1"),
    ({"prefetch": 0}, "prefetch must be >= 1"),
    ({"drain_timeout": math.nan}, "drain timeout"),
    ({"drain_timeout": -0.1}, "drain timeout"),
    ({"endpoint": 5}, "endpoint must be text"),
    ({"connect_timeout": 0}, "connect timeout"),
    ({"connect_timeout": math.inf}, "connect timeout"),
])
def test_post_init_refuses(changes: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"app": APP, **changes}
    with pytest.raises(SettingError, match=match):
        WorkerConfig(**args)


def test_a_list_of_queues_becomes_a_tuple() -> None:
    cfg = WorkerConfig(APP, ["a", "b"])  # type: ignore[arg-type]
    assert cfg.queues == ("a", "b")


# ------------------------------------------------------------------ zq worker, before connecting


def run_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["worker", *args], env={"ZQ_ENDPOINT": None, **(env or {})})


def test_cli_without_an_app() -> None:
    res = run_cli()
    assert res.exit_code == 2
    assert "Missing argument 'MODULE:ATTR'" in res.output
    assert "ZQ_WORKER_APP" in res.output


def test_cli_names_the_flag_of_a_bad_setting(tmp_path: Path) -> None:
    path = toml(tmp_path, '[worker]\napp = "tests.unit.test_node_config:app"\nprefetch = 0\n')
    res = run_cli("--config", str(path))
    assert res.exit_code == 2
    assert "Invalid value for --prefetch" in res.output
    assert "worker.toml: prefetch: prefetch must be >= 1, got 0" in res.output
    res = run_cli("--config", str(path), env={"ZQ_WORKER_CONCURRENCY": "x"})
    assert res.exit_code == 2
    assert "Invalid value for --concurrency" in res.output
    assert "$ZQ_WORKER_CONCURRENCY: cannot read 'x'" in res.output
    res = run_cli("--config", str(toml(tmp_path, "[worker]\nthreads = 1\n", "bad.toml")))
    assert res.exit_code == 2
    assert "Invalid value for --config" in res.output
    res = run_cli("no_colon")
    assert res.exit_code == 2
    assert "Invalid value for MODULE:ATTR: expected MODULE:ATTR, got 'no_colon'" in res.output


def test_cli_takes_the_app_from_the_file_and_checks_its_queues(tmp_path: Path) -> None:
    path = toml(tmp_path, '[worker]\napp = "zq_no_such_module:app"\n')
    res = run_cli("--config", str(path))
    assert res.exit_code == 2
    assert "cannot import 'zq_no_such_module'" in res.output
    res = run_cli("--config", str(path), "tests.unit.test_tasks:app", "-q", "nope")
    assert res.exit_code == 2
    assert "no task of tests.unit.test_tasks:app uses queue(s) nope" in res.output
