"""The protocol core has no I/O, at import time too: no module of zq.protocol loads
asyncio, ZeroMQ or SQLite, so that a router, a tool or a test can use the codec alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import zq.protocol

IO_MODULES = ("asyncio", "zmq", "aiosqlite", "sqlite3")
PROTOCOL = Path(zq.protocol.__file__).parent
MODULES = ["zq.protocol", *sorted(f"zq.protocol.{p.stem}" for p in PROTOCOL.glob("*.py")
                                  if p.stem != "__init__")]

# Imports each module in turn in a fresh interpreter and says which I/O modules were
# loaded by then, so that a failure names the first module that pulled one in.
PROBE = """
import importlib, json, sys
seen = {}
for name in sys.argv[1].split(","):
    importlib.import_module(name)
    seen[name] = [m for m in sys.argv[2].split(",") if m in sys.modules]
print(json.dumps(seen))
"""


def test_no_protocol_module_loads_io() -> None:
    argv = [sys.executable, "-c", PROBE, ",".join(MODULES), ",".join(IO_MODULES)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    seen = json.loads(out.stdout)
    assert list(seen) == MODULES
    assert {name: io for name, io in seen.items() if io} == {}


def test_every_protocol_module_is_checked() -> None:
    assert {"zq.protocol.codec", "zq.protocol.limits", "zq.protocol.decoders",
            "zq.protocol.encoders", "zq.protocol.names"} <= set(MODULES)
