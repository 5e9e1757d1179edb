"""A server process under test (``zq broker`` or the baseline relay).

It is started with its stdout piped; its first stdout line is ``<PREFIX><endpoint>``
once it is bound. Its CPU time is read from /proc while it runs, and it is stopped
with SIGTERM and expected to exit 0.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from perf.common import cpu_seconds
from perf.relay import READY as RELAY_READY

ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    pass


class Server:
    def __init__(self, name: str, argv: list[str], ready_prefix: str, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.ready_prefix = ready_prefix
        self.log = log
        self.endpoint = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0) -> str:
        """Start the process and return the endpoint from its ready line."""
        env = dict(os.environ)
        env.pop("ZQ_ENDPOINT", None)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err, env=env,
                                         cwd=str(ROOT))
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode().rstrip("\n") if ready else ""
        if not line.startswith(self.ready_prefix):
            self.kill()
            raise ServerError(f"{self.name} did not print {self.ready_prefix!r} within "
                              f"{timeout:g}s (got {line!r}); stderr:\n{self.stderr()}")
        self.endpoint = line[len(self.ready_prefix):]
        return self.endpoint

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, within: float = 10.0) -> int:
        """SIGTERM, then the exit code (SIGKILL and ServerError if it outlives ``within``)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError(f"{self.name} did not exit within {within:g}s of SIGTERM; "
                              f"stderr:\n{self.stderr()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def zq_broker(log: Path, storage: str = "memory", data: Path | None = None,
              extra: tuple[str, ...] | list[str] = ()) -> Server:
    """``zq broker`` with ``storage`` memory, sqlite (fsync full) or sqlite-normal, and
    ``extra`` flags."""
    args = ["--storage", "memory"]
    if storage != "memory":
        if data is None:
            raise ValueError("a sqlite broker needs a data folder")
        args = ["--storage", "sqlite", "--data", str(data),
                "--fsync", "normal" if storage == "sqlite-normal" else "full"]
    return Server("zq broker", [sys.executable, "-m", "zq", "broker", "--bind",
                                "tcp://127.0.0.1:*", *args, *extra], "ZQ READY ", log)


def relay(log: Path, mode: str, io: str) -> Server:
    return Server(f"relay ({mode}, {io})", [sys.executable, "-m", "perf", "relay", "--bind",
                                            "tcp://127.0.0.1:*", "--mode", mode, "--io", io],
                  RELAY_READY, log)
