"""``zq broker``: one flag per field of :class:`zq.config.BrokerConfig`.

The flags are made from the dataclass's fields and their help from
:data:`zq.config.SETTING_HELP`, so a new setting gets a flag (and a line in
``--help``) without a change here. What a bare ``--name TYPE`` flag cannot say
(short options, choices, a folder, a metavar) is in ``_FLAG_SHAPES``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from zq import logs
from zq.config import FSYNC_MODES, STORAGE_KINDS, BrokerConfig, broker_config, setting_help
from zq.serving import serve

F = TypeVar("F", bound=Callable[..., Any])

_FLAG_SHAPES: dict[str, dict[str, Any]] = {
    "bind": {"short": "-b"},
    "data": {"short": "-d", "type": click.Path(file_okay=False)},
    "storage": {"type": click.Choice(STORAGE_KINDS)},
    "fsync": {"type": click.Choice(FSYNC_MODES)},
    "dispatch": {"metavar": "POLICY"},
    "ha": {"metavar": "etcd://HOST:PORT"},
}
_TYPES: dict[str, click.ParamType[Any]] = {
    "int": click.INT, "float": click.FLOAT, "str": click.STRING}


def flag_name(field: str) -> str:
    """``max_frame`` -> ``--max-frame``."""
    return "--" + field.replace("_", "-")


def setting_fields() -> list[dataclasses.Field[Any]]:
    """The BrokerConfig fields that are flags: all but ``queues`` (only in --config)."""
    return [f for f in dataclasses.fields(BrokerConfig) if f.name != "queues"]


def _setting_option(field: dataclasses.Field[Any]) -> Callable[[F], F]:
    shape = dict(_FLAG_SHAPES.get(field.name, {}))
    decls = [flag_name(field.name)]
    short = shape.pop("short", None)
    if short is not None:
        decls.append(short)
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if kind == "bool":  # --ha-strict, --insecure: flags that take no value
        shape.update(is_flag=True, type=None)
    shape.setdefault("type", _TYPES.get(kind, click.STRING))
    if shape.get("type") is None:
        del shape["type"]
    # Unset flags stay None, so that broker_config can tell them from given ones.
    return click.option(*decls, default=None, help=setting_help(field.name), **shape)


def _setting_options(fn: F) -> F:
    for field in reversed(setting_fields()):  # click lists the last applied first
        fn = _setting_option(field)(fn)
    return fn


@click.command()
@_setting_options
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML file with a [broker] table of these settings and "
                                 "[queues.NAME] tables of queue settings (as in `zq queue "
                                 "declare`); flags override it.")
@logs.options
def broker(config_file: str | None, **flags: Any) -> None:
    """Run a broker until SIGTERM or Ctrl-C.

    Prints exactly one line to stdout once it is bound and ready,
    `ZQ READY <endpoint>`, with the real port; logs go to stderr.
    Settings come from --config, then ZQ_BROKER_<SETTING> environment
    variables, then flags.

    \b
    Examples:
      zq broker                              # sqlite in ./zq-data
      zq broker --data /var/lib/zq --fsync normal
      zq broker --storage memory             # no durability
      zq broker --bind 'tcp://127.0.0.1:*' --heartbeat 0.5
      zq broker --max-frame 1048576 --shutdown-grace 10
      ZQ_BROKER_MAX_BATCH=500 zq broker --config broker.toml
      zq broker --log-json --log-level info  # one JSON object per log line
    """
    try:
        cfg = broker_config(config_file, **flags)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc)) from None
    sys.exit(serve(cfg))
