"""An online copy of a broker's data folder, taken while the broker runs (``zq backup``).

The database is copied with SQLite's online backup API from a read-only connection,
so the copy never takes the broker's ``zq.lock`` and never writes ``zq.db`` or its
log. The copy is one snapshot: a read transaction is opened on the source before
the first page is copied and held until the last, and every step reads inside it.
Without it, each commit of the broker between two steps would make SQLite start the
copy again from page 1, and a busy broker commits every few milliseconds: measured,
a 200,000-row database under a writer never finished in 64-page steps, and finished
in 165 steps when the snapshot was held.

What the broker feels: nothing blocks its commits (WAL mode: a reader does not stop
a writer), but while the snapshot is held no checkpoint can move the log past it,
so the WAL grows by what is written meanwhile, and the broker's timed
``wal_checkpoint(TRUNCATE)`` waits for the backup up to its busy timeout (5 s)
before giving up until the next one. Steps of ``pages_per_step`` pages keep each
call short and let the caller show progress; no pause is made between them, since
a slower copy would only hold the snapshot longer.

The copy is written under a temporary name beside or inside ``dest`` and renamed
into place once SQLite's ``integrity_check`` passed, with the small files a restore
needs (:data:`RESTORE_FILES`); the lock file, the log and its index, the disk
reserve (``zq.reserve``) and a standby's half-received copies are not taken. The
copy is left in rollback-journal mode, one self-contained file; a broker started
on it switches it back to WAL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zq.persistence.sqlite import DB_NAME

# Small files a restored folder needs besides the database: a clustered broker's id
# (zq.broker.ID_FILE: a folder of another id is refused) and a replicated node's name
# (zq.ha.node.NODE_FILE). Named here rather than imported, so that ``zq backup`` does
# not load the broker or the HA extra; tests/unit/test_backup.py checks they agree.
RESTORE_FILES = ("broker-id", "ha-node")
PAGES_PER_STEP = 4096  # 16 MiB of 4 KiB pages per backup step
ZQ_TABLES = ("messages", "queues")  # tables that make a database a zq store


class BackupError(Exception):
    """A backup that could not be made; the message is one line for the operator.

    Not a :class:`zq.errors.ZqError`: it never travels in an ERROR frame.
    """


@dataclass(frozen=True, slots=True)
class BackupResult:
    source: Path
    dest: Path
    size: int  # bytes of the copied database
    messages: int  # messages stored in the copy
    seconds: float
    files: tuple[str, ...]  # names written into dest

    def summary(self) -> str:
        return (f"backed up {self.source} to {self.dest}: {self.size} bytes, "
                f"{self.messages} messages, {self.seconds:.2f} s")


Progress = Callable[[int, int], None]  # (pages copied, pages in all)


def backup_folder(data: str | Path, dest: str | Path, *,
                  pages_per_step: int = PAGES_PER_STEP,
                  progress: Progress | None = None) -> BackupResult:
    """Copy the broker data folder ``data`` to ``dest`` (a new or empty folder) while
    its broker may be running; raise :class:`BackupError` with a one-line reason."""
    if pages_per_step < 1:
        raise ValueError("pages_per_step must be >= 1")
    started = time.monotonic()
    source, target = check_paths(Path(data), Path(dest))
    made = not target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-",
                                      dir=target.parent if made else target))
    except OSError as exc:
        raise BackupError(f"cannot write in {target.parent if made else target}: "
                          f"{exc.strerror or exc}") from None
    try:
        messages = copy_database(source / DB_NAME, stage / DB_NAME, pages_per_step, progress)
        names = [*_copy_small_files(source, stage), DB_NAME]  # the database renamed last
        size = (stage / DB_NAME).stat().st_size
        _put_in_place(stage, target, names, made)
    except OSError as exc:
        raise BackupError(f"writing the backup: {exc.strerror or exc}"
                          f"{f' ({exc.filename})' if exc.filename else ''}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # gone already when it became dest
    return BackupResult(source, target, size, messages, time.monotonic() - started,
                        tuple(names))


def check_paths(data: Path, dest: Path) -> tuple[Path, Path]:
    """``data`` and ``dest`` made absolute, or BackupError if they cannot be used."""
    if not data.is_dir():
        raise BackupError(f"{data}: no such folder")
    if not (data / DB_NAME).is_file():
        raise BackupError(f"{data} holds no {DB_NAME}: not a zq broker's data folder (a "
                          f"broker with --storage memory keeps nothing to back up)")
    source, target = data.resolve(), dest.resolve()
    if target == source or source in target.parents:
        raise BackupError(f"{dest} is the data folder or inside it: give a folder elsewhere")
    if target.exists():
        if not target.is_dir():
            raise BackupError(f"{dest} exists and is not a folder")
        try:
            if any(target.iterdir()):
                raise BackupError(f"{dest} is not empty: give a new or an empty folder")
        except PermissionError:
            raise BackupError(f"{dest}: cannot read the folder") from None
    return source, target


def copy_database(db: Path, out: Path, pages_per_step: int = PAGES_PER_STEP,
                  progress: Progress | None = None) -> int:
    """Copy the zq database ``db`` to the new file ``out`` as one snapshot, in steps,
    check the copy and return how many messages it holds. ``db`` is opened read-only."""
    src = _open_source(db)
    try:
        dst = sqlite3.connect(out, isolation_level=None)
        try:
            src.execute("BEGIN")  # the snapshot: every step reads inside it
            _check_zq(src, db)

            def step(_status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=pages_per_step, progress=step)
            src.execute("COMMIT")
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"copying {db}: {exc}") from None
    finally:
        src.close()
    return verify(out)


def verify(copy: Path) -> int:
    """Run SQLite's ``integrity_check`` on a copy; return how many messages it holds."""
    try:
        conn = sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True)
        try:
            problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
            count = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"checking the copy: {exc}") from None
    if problems != ["ok"]:
        raise BackupError(f"the copy failed SQLite's integrity check: {problems[0]}")
    return count


def _open_source(db: Path) -> sqlite3.Connection:
    if not os.access(db, os.R_OK):
        raise BackupError(f"cannot read {db}: permission denied")
    try:
        # mode=ro: SQLite opens the file read-only and can never write it; as any
        # reader of a WAL database it still marks its snapshot in the shared index.
        return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                               timeout=10.0)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {db}: {exc}") from None


def _check_zq(conn: sqlite3.Connection, db: Path) -> None:
    try:
        names = {str(r[0]) for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{db} is not a zq database: {exc}") from None
    missing = [t for t in ZQ_TABLES if t not in names]
    if missing:
        raise BackupError(f"{db} is not a zq database (no {', '.join(missing)} table)")


def _copy_small_files(source: Path, stage: Path) -> list[str]:
    copied = []
    for name in RESTORE_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, stage / name)
            _fsync(stage / name)
            copied.append(name)
    return copied


def _put_in_place(stage: Path, target: Path, names: list[str], made: bool) -> None:
    """Rename the staged folder to ``target``, or (an existing empty ``target``) its
    files into it, the database last: a ``target`` holding zq.db is complete."""
    _fsync(stage)
    if made:
        os.rename(stage, target)
        _fsync(target.parent)
        return
    moved: list[Path] = []
    try:
        for name in names:
            os.rename(stage / name, target / name)
            moved.append(target / name)
        _fsync(target)
    except OSError:
        for path in moved:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
