"""Real processes for tests: start, wait for the ready line, stop and check the exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = "ZQ READY "


class Proc:
    """A child process whose stdout we read line by line; stderr goes to a file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, argv: list[str]) -> None:
        self.proc = proc
        self.log = log
        self.argv = argv
        self.endpoint = ""

    @classmethod
    async def start(cls, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
        full_env = dict(os.environ)
        full_env.pop("ZQ_ENDPOINT", None)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        fh = open(log, "ab")  # noqa: SIM115 - handed to the child, closed by the OS
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=fh, env=full_env, cwd=str(ROOT))
        finally:
            fh.close()
        return cls(proc, log, argv)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def readline(self, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise EOFError(f"{self.argv[:4]} closed stdout (exit {self.proc.returncode}); "
                           f"stderr:\n{self.stderr()}")
        return line.decode().rstrip("\n")

    async def wait_for_line(self, prefix: str, timeout: float = 15.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await self.readline(max(0.01, deadline - loop.time()))
            if line.startswith(prefix):
                return line

    async def ready_line(self, timeout: float = 15.0) -> str:
        line = await self.readline(timeout)
        assert line.startswith(READY), f"first stdout line was {line!r}; stderr:\n{self.stderr()}"
        self.endpoint = line[len(READY):]
        return self.endpoint

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            # It may have exited without asyncio having reaped it yet.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def terminate_and_expect_exit(self, code: int = 0, within: float = 5.0) -> None:
        self.signal(signal.SIGTERM)
        try:
            rc = await self.wait(within)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self.proc.wait()
            raise AssertionError(f"{self.argv[:4]} did not exit within {within}s of SIGTERM; "
                                 f"stderr:\n{self.stderr()}") from None
        assert rc == code, f"exit code {rc}, expected {code}; stderr:\n{self.stderr()}"

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.signal(signal.SIGKILL)
            await self.proc.wait()


def zq_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "zq", *args]


async def start_broker(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Proc:
    """Start ``zq broker`` on an ephemeral loopback port and wait for its ready line."""
    n = len(list(tmp.glob("broker*.log")))
    argv = zq_argv("--log-level", "info", "broker", "--bind", "tcp://127.0.0.1:*",
                   "--data", str(tmp / "data"), *args)
    proc = await Proc.start(argv, tmp / f"broker{n}.log", env)
    await proc.ready_line()
    return proc
