"""Disk space held back for a full disk: a ballast file in the data folder.

Why: on a full filesystem SQLite cannot commit even a transaction that only
deletes rows. The deletions go through the write-ahead log, which needs new
space until a checkpoint copies it into the database, and the checkpoint needs
room in the database file. A broker that cannot store acks never frees
anything, and one restarted there may not even open its database. So the
broker keeps ``size`` bytes allocated in ``zq.reserve``: when a commit finds
the disk full, it gives the file back, refuses publishes, and uses that room
for acks, settlements and checkpoints. Once a checkpoint has shrunk the log
and the file can be allocated again, publishing resumes. At start the file is
given back before the database opens and taken again after recovery.

The size is at most 1/16 of the filesystem, so a small disk (an edge box, a
test's tmpfs) keeps most of its room for messages.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger("zq.store")

RESERVE_NAME = "zq.reserve"
_CHUNK = 1 << 20


def disk_free(path: Path) -> tuple[int, int]:
    """(total, available) bytes of the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


class DiskReserve:
    """The ballast file ``<dir>/zq.reserve`` of ``size`` bytes (0: none)."""

    def __init__(self, directory: Path, wanted: int) -> None:
        self.path = directory / RESERVE_NAME
        self.wanted = wanted
        self.size = 0  # set by ``fit`` from the filesystem's size

    def fit(self, at_least: int = 0) -> None:
        """Size the reserve for this filesystem: at most 1/16 of it, and ``at_least``
        what the store needs to recover (unless none was wanted)."""
        total, _ = disk_free(self.path.parent)
        self.size = max(min(self.wanted, total // 16), at_least) if self.wanted else 0

    @property
    def held(self) -> bool:
        return self.size > 0 and self.path.exists()

    def discard(self) -> None:
        """Give the space back quietly: before the database opens (it is taken
        again after recovery), and when the broker stops."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release(self) -> bool:
        """Give the space back; whether there was any to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full: gave back the %d-byte reserve in %s so that acks still "
                    "commit; publishes are refused until there is room again",
                    self.size, self.path.parent)
        return True

    def take(self) -> bool:
        """Allocate the reserve (again); False if the disk has no room for it."""
        if self.size <= 0 or self.held:
            return True
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _allocate(fd, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("cannot allocate the disk reserve %s: %s", self.path, exc)
            return False
        return True

    def pressure(self) -> bool:
        """Whether the filesystem is (nearly) full: less free than the reserve."""
        _, free = disk_free(self.path.parent)
        return free < max(self.size, _CHUNK)


def _allocate(fd: int, size: int) -> None:
    """Really allocate ``size`` bytes (a sparse file would hold nothing back)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    zeros = bytes(min(size, _CHUNK))
    left = size
    while left > 0:
        left -= os.write(fd, zeros[:min(left, len(zeros))])
