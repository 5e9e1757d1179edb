"""Where the test apps' tasks leave their marks, and what a task can see of its message.

A worker process gets ``ZQ_TEST_DIR`` from the test; tasks append one line per
event to files there (one ``write`` of a short line with O_APPEND, so lines
from concurrent tasks and processes never interleave).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import zq


def test_dir() -> Path:
    return Path(os.environ["ZQ_TEST_DIR"])


def append(name: str, record: dict[str, Any]) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(test_dir() / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    """The records in ``path`` (none if it does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def current_message() -> Any:
    """The message (a ``zq.Message``) the calling task runs for."""
    msg = zq.current_message()
    if msg is None:
        raise RuntimeError("not called from a task run by a zq worker")
    return msg
