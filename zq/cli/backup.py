"""``zq backup``: an online copy of a broker's data folder (zq.persistence.backup)."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import click

from zq.config import BrokerConfig
from zq.persistence.backup import PAGES_PER_STEP, BackupError, backup_folder

_DEFAULT_DATA = next(f.default for f in dataclasses.fields(BrokerConfig) if f.name == "data")


@click.command()
@click.argument("dest", metavar="DEST", type=click.Path(path_type=Path))
@click.option("--data", "-d", default=_DEFAULT_DATA, show_default=True, envvar="ZQ_BROKER_DATA",
              show_envvar=True, type=click.Path(path_type=Path),
              help="The broker's data folder (its --data).")
@click.option("--pages-per-step", type=click.IntRange(min=1), default=PAGES_PER_STEP,
              show_default=True, metavar="N",
              help="Database pages copied per step of SQLite's online backup.")
def backup(dest: Path, data: Path, pages_per_step: int) -> None:
    """Copy a broker's data folder to DEST (a new or empty folder) while it runs.

    The database is copied with SQLite's online backup from a read-only
    connection, as one snapshot: every message confirmed before the backup
    began is in the copy, and one confirmed after it may or may not be. The
    broker keeps serving; its lock file and its database are not touched. The
    copy is checked (PRAGMA integrity_check) before it is renamed into place,
    with the broker's id and HA node name files if there are any. Prints one
    line: bytes, messages stored, seconds.

    To restore: stop the broker, start it with --data DEST (or put DEST's files
    in place of its folder's). See docs/OPERATIONS.md.

    \b
    Examples:
      zq backup --data /var/lib/zq /backups/zq-$(date +%F)
      ZQ_BROKER_DATA=./zq-data zq backup ./zq-backup
    """
    # SIGTERM (systemd stopping a backup job) ends it as Ctrl-C does: the partial copy
    # is removed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = backup_folder(data, dest, pages_per_step=pages_per_step)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.summary())
