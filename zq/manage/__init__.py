"""MANAGE operations: queue operations (``queues``), task operations (``tasks``), topic
operations (``topics``) and ``explain`` (why a message is where it is).

They build on the broker core's interface and are handed to the core as a table,
``OPERATIONS``; the core never imports this package.
"""

from __future__ import annotations

from typing import Any

from zq.core.api import Handler, Operations
from zq.errors import InvalidArgument
from zq.manage import cluster, explain, moves, nodes, queues, streams, tasks, topics


def _queue_op(name: str) -> Handler:
    def handler(core: Any, args: dict[str, Any], now: float, peer: Any, req: int
                ) -> dict[str, Any]:
        return queues.OPERATIONS[name](core, args, now)  # looked up at call: patchable

    return handler


def _peer_op(name: str) -> Handler:
    def handler(core: Any, args: dict[str, Any], now: float, peer: Any, req: int
                ) -> dict[str, Any]:
        return tasks.PEER_OPERATIONS[name](core, args, now, peer)

    return handler


def _move_op(name: str) -> Handler:
    def handler(core: Any, args: dict[str, Any], now: float, peer: Any, req: int
                ) -> dict[str, Any]:
        return moves.OPERATIONS[name](core, args, now)

    return handler


def _topic_op(name: str) -> Handler:
    def handler(core: Any, args: dict[str, Any], now: float, peer: Any, req: int
                ) -> dict[str, Any]:
        return topics.OPERATIONS[name](core, args, now)

    return handler


def _stream_op(name: str) -> Handler:
    def handler(core: Any, args: dict[str, Any], now: float, peer: Any, req: int
                ) -> dict[str, Any]:
        op = streams.PEER_OPERATIONS.get(name)
        if op is not None:
            return op(core, args, now, peer)
        return streams.OPERATIONS[name](core, args, now)

    return handler


OPERATIONS = Operations(
    handlers={**{name: _queue_op(name) for name in queues.OPERATIONS},
              **{name: _peer_op(name) for name in tasks.PEER_OPERATIONS},
              **{name: _move_op(name) for name in moves.OPERATIONS},
              **{name: _topic_op(name) for name in topics.OPERATIONS},
              **{name: _stream_op(name) for name in (*streams.OPERATIONS,
                                                     *streams.PEER_OPERATIONS)},
              "wait": tasks.wait,
              "explain": lambda core, args, now, peer, req: explain.explain_op(core, args, now),
              "reload": lambda core, args, now, peer, req: core.reload_hook(),
              "node": lambda core, args, now, peer, req: nodes.report(core, args, now),
              "cluster_config": lambda core, args, now, peer, req: cluster.cluster_config(
                  core, args, now)},
    # These change nothing: their reply goes out even when the commit it waited for
    # fails (an operation that changed something gets the storage error instead).
    read_only=frozenset({"info", "list", "peek", "status", "schedule_ls", "move_status",
                         "reload", "node", "explain", "topics", "streams"}),
    # Answered at once: it tells by name a message waiting for its commit or for the
    # standby, and would otherwise wait behind that very commit to say so.
    at_once=frozenset({"explain"}),
    status=tasks.status_of,
)



def manage(core: Any, frame: Any, now: float, peer: Any = None) -> dict[str, Any] | None:
    """Run one MANAGE frame's operation through zq's table (tests and tools call this;
    the broker core calls the table's handlers itself)."""
    handler = OPERATIONS.handlers.get(frame.op)
    if handler is None:
        raise InvalidArgument(f"unknown operation {frame.op!r}; known: "
                              f"{', '.join(OPERATIONS.handlers)}")
    result: dict[str, Any] | None = handler(core, frame.args, now, peer,
                                            getattr(frame, "req", 0))
    return result


__all__ = ["OPERATIONS", "cluster", "explain", "manage", "moves", "nodes", "queues", "tasks"]
