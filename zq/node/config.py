"""``WorkerConfig``: what ``zq worker`` runs, validated on construction.

Values come from, in rising precedence: defaults, a TOML file (``zq worker
--config FILE``: its ``[worker]`` table, or its top-level keys if it has none),
environment variables (``ZQ_ENDPOINT`` and ``ZQ_TIMEOUT``, which every zq
command reads, then ``ZQ_WORKER_<FIELD>``), then flags. That merge happens in
:func:`worker_config` and nowhere else, as :func:`zq.config.broker_config` does
for the broker. Text (the environment) is read as the field's type: queues as
a comma-separated list, a prefetch of ``auto`` as None.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "ZQ_WORKER_"
# Variables that every zq command reads; ZQ_WORKER_ENDPOINT / _CONNECT_TIMEOUT win over them.
SHARED_ENV = {"endpoint": "ZQ_ENDPOINT", "connect_timeout": "ZQ_TIMEOUT"}
MAX_CONNECT_TIMEOUT = 1e9  # seconds, as `--timeout` allows


class SettingError(ValueError):
    """A worker setting that cannot be used. ``setting`` names the field ("" when the
    file itself is at fault); the message says where the value came from."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class MissingSetting(SettingError):
    """A setting without a default (the app) that no source gave."""


def _count(name: str, value: Any, what: str) -> None:
    if type(value) is not int or value < 1:
        raise SettingError(name, f"{what} must be >= 1, got {value}")


def _seconds(name: str, value: Any, low_open: bool, high: float, what: str) -> None:
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (value > 0 if low_open else value >= 0)
          and value <= high)
    if not ok:
        raise SettingError(name, f"{what}, got {value}")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What ``zq worker`` runs: the App ``MODULE:ATTR`` and the Worker's settings."""

    app: str
    queues: tuple[str, ...] = ()  # empty: every queue of the app's tasks
    concurrency: int = 8
    prefetch: int | None = None  # None: start at concurrency, grow while it pays
    drain_timeout: float = 30.0
    endpoint: str | None = None  # None: the App's
    connect_timeout: float = 5.0  # seconds to wait for the broker's answer at start
    broadcast_idle_ttl: float = 120.0  # a dead worker's broadcast queues go after this

    def __post_init__(self) -> None:
        if not isinstance(self.app, str) or ":" not in self.app:
            raise SettingError("app", f"expected MODULE:ATTR, got {self.app!r}")
        if isinstance(self.queues, list):
            object.__setattr__(self, "queues", tuple(self.queues))
        if not isinstance(self.queues, tuple) \
                or not all(isinstance(q, str) and q for q in self.queues):
            raise SettingError("queues", f"queues must be queue names, got {self.queues!r}")
        _count("concurrency", self.concurrency, "concurrency")
        if self.prefetch is not None:
            _count("prefetch", self.prefetch, "prefetch")
        _seconds("drain_timeout", self.drain_timeout, False, math.inf,
                 "drain timeout must be seconds >= 0")
        if self.endpoint is not None and not isinstance(self.endpoint, str):
            raise SettingError("endpoint", f"endpoint must be text, got {self.endpoint!r}")
        _seconds("connect_timeout", self.connect_timeout, True, MAX_CONNECT_TIMEOUT,
                 f"connect timeout must be seconds > 0 and <= {MAX_CONNECT_TIMEOUT:g}")
        _seconds("broadcast_idle_ttl", self.broadcast_idle_ttl, True, 36_500 * 86_400.0,
                 "broadcast idle TTL must be seconds > 0")


# ------------------------------------------------------------------ reading values


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError(raw)
    return raw


def _integer(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise TypeError(raw)
    return int(raw)


def _number(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise TypeError(raw)
    return float(raw)


def _names(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(q.strip() for q in raw.split(",") if q.strip())
    if not isinstance(raw, list | tuple) or not all(isinstance(q, str) for q in raw):
        raise TypeError(raw)
    return tuple(raw)


def _prefetch(raw: Any) -> int | None:
    if isinstance(raw, str) and raw.strip().lower() in ("", "auto"):
        return None
    return _integer(raw)


def _endpoint(raw: Any) -> str | None:
    return _text(raw) or None


_READERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "app": (_text, "MODULE:ATTR text"),
    "queues": (_names, "queue names (a list, or text separated by commas)"),
    "concurrency": (_integer, "an integer"),
    "prefetch": (_prefetch, "an integer or 'auto'"),
    "drain_timeout": (_number, "seconds"),
    "endpoint": (_endpoint, "an endpoint"),
    "connect_timeout": (_number, "seconds"),
    "broadcast_idle_ttl": (_number, "seconds"),
}


def _read(name: str, raw: Any, where: str) -> Any:
    """``raw`` (from the file, the environment or a flag) as the type of field ``name``."""
    reader, what = _READERS[name]
    try:
        return reader(raw)
    except (TypeError, ValueError):
        raise SettingError(name, f"{where}: cannot read {raw!r} as {what}") from None


def _from_file(file: str | Path) -> dict[str, tuple[Any, str]]:
    """The file's worker settings, each with where it came from."""
    try:
        with open(file, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise SettingError("", f"cannot read {file}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingError("", f"{file}: not TOML: {exc}") from None
    if "worker" in doc:
        section = doc["worker"]
        if not isinstance(section, dict):
            raise SettingError("", f"{file}: 'worker' must be a [worker] table of settings")
    else:  # a file of worker settings alone; tables ([broker], [queues.X]) are not ours
        section = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    values: dict[str, tuple[Any, str]] = {}
    for key, raw in section.items():
        name = key.replace("-", "_")
        if name not in _READERS:
            raise SettingError("", f"{file}: unknown worker setting {key!r}; the settings "
                                   f"are {', '.join(_READERS)}")
        where = f"{file}: {key}"
        values[name] = (_read(name, raw, where), where)
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    values: dict[str, tuple[Any, str]] = {}
    for name in _READERS:
        for var in (SHARED_ENV.get(name), ENV_PREFIX + name.upper()):  # the last one wins
            if var is not None and env.get(var):  # empty: unset, as click reads it
                values[name] = (_read(name, env[var], f"${var}"), f"${var}")
    return values


def worker_config(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> WorkerConfig:
    """Merge defaults < file < environment < flags (flags that are None are unset).

    ``env`` defaults to ``os.environ``. Raises :class:`SettingError` (a
    ValueError) naming the setting and the source of a bad value.
    """
    values = {} if file is None else _from_file(file)
    values.update(_from_env(os.environ if env is None else env))
    for name, raw in flags.items():
        if name not in _READERS:
            raise SettingError(name, f"unknown worker setting {name!r}")
        if raw is not None:
            values[name] = (_read(name, raw, name.replace("_", " ")), "")
    if "app" not in values:
        raise MissingSetting("app", "no app to run: give MODULE:ATTR, 'app' in the config "
                                    f"file or ${ENV_PREFIX}APP")
    try:
        return WorkerConfig(**{name: value for name, (value, _) in values.items()})
    except SettingError as exc:
        where = values[exc.setting][1] if exc.setting in values else ""
        if not where:
            raise
        raise SettingError(exc.setting, f"{where}: {exc}") from None
