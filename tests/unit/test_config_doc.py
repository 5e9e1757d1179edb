"""docs/CONFIG.md documents every setting: its tables must match the config classes.

For each process, every field of its config dataclass has exactly one row, and no
row names a field that does not exist; each row's file key, environment variables,
flags and default are those of the code: the fields come from ``dataclasses.fields``,
the flags and their defaults from the click command, the variables from the rules
that ``broker_config`` and ``worker_config`` apply. A new field without a row, or a
row left behind by a removed one, fails here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from tests.helpers import markdown_table as _table
from zq.cli import main
from zq.cli.backup import backup
from zq.cli.broker import broker
from zq.cli.messages import stats
from zq.cli.node import node
from zq.cli.router import router
from zq.cli.tasks import _FIELDS as WORKER_PARAMS
from zq.cli.tasks import worker
from zq.config import BrokerConfig
from zq.node.config import _READERS as WORKER_FILE_KEYS
from zq.node.config import ENV_PREFIX, SHARED_ENV, WorkerConfig
from zq.node.noded import NodeConfig
from zq.router.config import RouterConfig
from zq.security.curve import ENV_SECRET, ENV_SERVER_KEY

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"
HEADER = "| Setting | File key | Environment variable | Flag | Default | Meaning |"
OPTION_HEADER = "| Option | Environment variable | Default | Meaning |"
NONE = "—"
REQUIRED = "required"


def _no_file(_name: str) -> str | None:
    return None


def _no_env(_name: str) -> set[str]:
    return set()


def _broker_env(name: str) -> set[str]:
    return set() if name == "queues" else {f"ZQ_BROKER_{name.upper()}"}  # broker_config


def _worker_env(name: str) -> set[str]:
    if name not in WORKER_FILE_KEYS:
        return set()
    shared = SHARED_ENV.get(name)
    return {ENV_PREFIX + name.upper(), *([shared] if shared else [])}  # worker_config


@dataclass(frozen=True)
class Process:
    heading: str  # the section of CONFIG.md, "## Broker: ..."
    config: type[Any]
    command: click.Command
    params: dict[str, str]  # click parameter -> field, where the names differ
    file_key: Callable[[str], str | None]
    env: Callable[[str], set[str]]  # variables read besides the click options' own


PROCESSES = {
    "broker": Process("## Broker", BrokerConfig, broker, {},
                      lambda n: "[queues.NAME]" if n == "queues" else n, _broker_env),
    "router": Process("## Router", RouterConfig, router,
                      {"cluster_file": "cluster", "router_id": "id"}, _no_file, _no_env),
    "worker": Process("## Worker", WorkerConfig, worker, dict(WORKER_PARAMS),
                      lambda n: n if n in WORKER_FILE_KEYS else None, _worker_env),
    "node": Process("## Work node", NodeConfig, node, {"lo": "min", "hi": "max"},
                    _no_file, _no_env),
}


# ------------------------------------------------------------------ reading the doc


def _section(heading: str) -> list[str]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading + ":")]
    assert len(starts) == 1, f"expected one section {heading!r} in {DOC}"
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return lines[starts[0]:end]




def spans(cell: str) -> list[str]:
    """The code spans of a cell, in order; [] for a cell that is exactly "—"."""
    found = re.findall(r"`([^`]*)`", cell)
    assert found or cell == NONE or cell.startswith(REQUIRED), f"cell {cell!r}"
    return found


def settings(process: Process) -> dict[str, list[str]]:
    """Setting name -> its row's cells (file key, variables, flags, default, meaning)."""
    out: dict[str, list[str]] = {}
    for cells in _table(_section(process.heading), HEADER):
        names = spans(cells[0])
        assert len(names) == 1, f"setting cell {cells[0]!r}"
        assert names[0] not in out, f"{names[0]} has two rows"
        out[names[0]] = cells[1:]
    return out


# ------------------------------------------------------------------ what the code says


def fmt(value: Any) -> str:
    """A default as CONFIG.md writes it: a TOML value, ``none`` for None."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    raise AssertionError(f"no doc format for {value!r}")


def default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _given(default: Any) -> bool:
    """Whether a click parameter has a default of its own (not None, not click's unset)."""
    return isinstance(default, str | int | float | tuple) and default != ()


def parameters(process: Process) -> dict[str, click.Parameter]:
    """Field name -> the click parameter that sets it."""
    return {process.params.get(str(p.name), str(p.name)): p for p in process.command.params}


def flags(param: click.Parameter | None) -> set[str]:
    if param is None:
        return set()
    if isinstance(param, click.Argument):
        return {str(param.metavar)}
    return {*param.opts, *param.secondary_opts}


def envvars(param: click.Parameter | None) -> set[str]:
    envvar = getattr(param, "envvar", None)
    if envvar is None:
        return set()
    return {envvar} if isinstance(envvar, str) else set(envvar)


# ------------------------------------------------------------------ the checks

CASES = sorted(PROCESSES)


@pytest.mark.parametrize("kind", CASES)
def test_every_field_has_one_row_and_every_row_is_a_field(kind: str) -> None:
    process = PROCESSES[kind]
    fields = {f.name for f in dataclasses.fields(process.config)}
    rows = set(settings(process))
    assert not fields - rows, f"{kind}: settings without a row in CONFIG.md: {fields - rows}"
    assert not rows - fields, f"{kind}: rows for settings that do not exist: {rows - fields}"


@pytest.mark.parametrize("kind", CASES)
def test_file_keys_variables_and_flags_are_the_codes(kind: str) -> None:
    process = PROCESSES[kind]
    rows = settings(process)
    params = parameters(process)
    for field in dataclasses.fields(process.config):
        if field.name not in rows:
            continue  # the test above names it
        file_cell, env_cell, flag_cell = rows[field.name][:3]
        key = process.file_key(field.name)
        assert spans(file_cell)[:1] == ([key] if key else []), f"{kind}.{field.name}: file key"
        param = params.get(field.name)
        want_env = process.env(field.name) | envvars(param)
        assert set(spans(env_cell)) == want_env, f"{kind}.{field.name}: environment variables"
        assert set(spans(flag_cell)) == flags(param), f"{kind}.{field.name}: flags"


@pytest.mark.parametrize("kind", CASES)
def test_defaults_are_the_dataclass_defaults(kind: str) -> None:
    process = PROCESSES[kind]
    rows = settings(process)
    for field in dataclasses.fields(process.config):
        if field.name not in rows:
            continue
        cell = rows[field.name][3]
        default = default_of(field)
        if default is dataclasses.MISSING:
            assert cell == REQUIRED, f"{kind}.{field.name}: has no default, the doc says {cell}"
        else:
            assert spans(cell)[:1] == [fmt(default)], f"{kind}.{field.name}: default"


@pytest.mark.parametrize("kind", CASES)
def test_the_flags_defaults_are_the_dataclass_defaults(kind: str) -> None:
    """What the doc says is the default must be what a flag left out gives."""
    process = PROCESSES[kind]
    fields = {f.name: f for f in dataclasses.fields(process.config)}
    for name, param in parameters(process).items():
        if name in fields and _given(param.default):
            assert param.default == default_of(fields[name]), f"{kind} {param.opts}: default"


def test_fmt_writes_toml_values() -> None:
    assert [fmt(v) for v in ("", "zq", 0, 1.0, 16 << 20, False, True, (), None, {})] == [
        '""', '"zq"', "0", "1.0", "16777216", "false", "true", "[]", "none", "{}"]


# ------------------------------------------------------------------ the options of every command


def options() -> dict[str, list[str]]:
    """Each option of the last table (its first flag) -> its cells."""
    rows = _table(_section("## Every command"), OPTION_HEADER)
    return {spans(cells[0])[0]: cells for cells in rows}


@pytest.mark.parametrize(("command", "names"), [
    (main, None), (backup, None),
    (stats, ("--endpoint", "--timeout", "--curve-secret", "--server-key")),
])
def test_options_of_every_command_have_rows(command: click.Command,
                                            names: tuple[str, ...] | None) -> None:
    rows = options()
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        if names is not None and param.opts[0] not in names:
            continue
        assert param.opts[0] in rows, f"zq {command.name}: {param.opts[0]} has no row"
        cells = rows[param.opts[0]]
        assert set(spans(cells[0])) >= set(param.opts)
        assert set(spans(cells[1])) >= envvars(param), f"{param.opts[0]}: variable"
        if _given(param.default):
            assert spans(cells[2])[:1] == [fmt(param.default)], f"{param.opts[0]}: default"


def test_the_curve_options_name_the_variables_the_sdk_reads() -> None:
    rows = options()
    assert spans(rows["--curve-secret"][1]) == [ENV_SECRET]
    assert spans(rows["--server-key"][1]) == [ENV_SERVER_KEY]
