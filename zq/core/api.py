"""What queue and task operations (MANAGE) get from the core: a table type, handed in.

The operations live in ``zq.manage``; the core never imports them. A handler gets
the core (typed here by what operations may use of it), the operation's
arguments, ``now``, the session that asked and the request's ``req``; it returns
the reply map, or None when it answers later (a ``wait``). No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[Any, dict[str, Any], float, Any, int], "dict[str, Any] | None"]
Status = Callable[[Any, str, int, float], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Operations:
    """MANAGE operations by name; those that only read (their reply never waits for a
    write that failed); and how a timed-out ``wait`` is answered."""

    handlers: Mapping[str, Handler] = field(default_factory=dict)
    read_only: frozenset[str] = frozenset()
    status: Status | None = None


NO_OPERATIONS = Operations()
