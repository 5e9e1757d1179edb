"""MANAGE operations of queue moves (PROTOCOL.md section 17.5): ``move`` and
``move_status`` for operators, ``move_in`` between brokers. Arguments are checked
here; the core (``zq.core.moves``) does the work.
"""

from __future__ import annotations

from typing import Any

from zq.errors import InvalidArgument
from zq.manage.queues import _name

PHASES = ("begin", "ship", "done")


def _text(args: dict[str, Any], key: str) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not v or len(v) > 200:
        raise InvalidArgument(f"{key} must be a non-empty string of at most 200 characters")
    return v


def move(core: Any, args: dict[str, Any], now: float) -> dict[str, Any]:
    """Move a queue to broker ``to``: answered once the move is recorded; it goes on in
    the background (``move_status`` tells how far)."""
    name = _name(args)
    if name in core.streams:
        raise InvalidArgument(f"{name!r} is a stream: streams do not move between brokers "
                              f"yet", queue=name)
    bound = sorted({t.name for t in core.topics.values() for b in t.bindings
                    if b.queue == name})
    if bound:
        raise InvalidArgument(f"queue {name!r} is bound to topic(s) {', '.join(bound)}: a "
                              f"topic and its queues stay on one broker (unbind it first)",
                              queue=name)
    result: dict[str, Any] = core.start_move(name, _text(args, "to"), now)
    return result


def move_status(core: Any, args: dict[str, Any], now: float) -> dict[str, Any]:
    result: dict[str, Any] = core.move_status(_name(args))
    return result


def move_in(core: Any, args: dict[str, Any], now: float) -> dict[str, Any]:
    """From the source broker of a move: ``phase`` begin (make the queue), ship (store
    a batch: ``messages`` and the body parts), done (list the queue)."""
    name, move_id = _name(args), _text(args, "move")
    phase = args.get("phase")
    result: dict[str, Any]
    if phase == "begin":
        settings = args.get("settings") or {}
        if not isinstance(settings, dict):
            raise InvalidArgument("settings must be a map")
        result = core.move_in_begin(name, _text(args, "from"), move_id, settings,
                                    bool(args.get("paused", False)))
    elif phase == "ship":
        entries, keys = args.get("messages"), args.get("keys") or []
        if type(entries) is not list or type(keys) is not list:
            raise InvalidArgument("messages and keys must be arrays")
        core.move_in_keys(name, move_id, keys, now)
        result = core.move_in_ship(name, move_id, entries, list(args.get("bodies") or []),
                                   now)
    elif phase == "done":
        result = core.move_in_done(name, move_id)
    else:
        raise InvalidArgument(f"phase must be one of {', '.join(PHASES)}")
    return result


OPERATIONS = {"move": move, "move_status": move_status, "move_in": move_in}
