"""The zq Python SDK.

The names below are loaded when first used (PEP 562), so that importing a part of
the SDK that has no I/O (``zq.client.session``, ``zq.client.outbox``, ...) does
not load ZeroMQ and asyncio through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zq.client.client import Client, default_endpoint
    from zq.client.consumer import Consumer
    from zq.client.message import Message

__all__ = ["Client", "Consumer", "Message", "default_endpoint"]

_HOMES = {"Client": "zq.client.client", "default_endpoint": "zq.client.client",
          "Consumer": "zq.client.consumer", "Message": "zq.client.message"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'zq.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
