"""Topics in the SDK: where a publish to a topic goes, and the binding operations
(PROTOCOL.md section 20). ``TopicOps`` is a mixin of :class:`zq.Client`."""

from __future__ import annotations

from typing import Any

from zq.errors import InvalidArgument


def topic_target(queue: str | None, topic: str | None, key: str | None,
                 dedup_id: str | None) -> str:
    """The name frame 1 of the PUBLISH carries: the queue, or the topic (with ``key``)."""
    if topic is None:
        if key is not None:
            raise ValueError("key=... is the routing key of a publish to a topic: give "
                             "topic=... too")
        if queue is None:
            raise ValueError("publish needs a queue (or topic=...)")
        return queue
    if queue is not None:
        raise ValueError(f"publish to queue {queue!r} or to topic {topic!r}, not both")
    if dedup_id is not None:
        raise InvalidArgument("a publish to a topic takes no dedup_id: publish to a queue")
    if key is not None and (not isinstance(key, str) or len(key.encode()) > 255):
        raise InvalidArgument(f"key must be a string of 0..255 bytes, got {key!r:.80}")
    return topic


class TopicOps:
    """``bind``, ``unbind``, ``topics`` and ``set_topic`` (MANAGE operations)."""

    async def _manage(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # zq.Client's

    async def bind(self, topic: str, queue: str, pattern: str | None = None) -> bool:
        """Bind ``queue`` to ``topic``: it gets a copy of every publish to the topic whose
        key matches ``pattern`` (``orders.eu``, ``orders.*``, ``orders.#``; None: every
        key). Makes the topic (and the queue). True if the binding is new."""
        args: dict[str, Any] = {"topic": topic, "queue": queue}
        if pattern is not None:
            args["pattern"] = pattern
        return bool((await self._manage("bind", args))["created"])

    async def unbind(self, topic: str, queue: str, pattern: str | None = None) -> bool:
        """Remove that binding (the queue and its messages stay); True if there was one."""
        args: dict[str, Any] = {"topic": topic, "queue": queue}
        if pattern is not None:
            args["pattern"] = pattern
        return bool((await self._manage("unbind", args))["removed"])

    async def topics(self) -> list[dict[str, Any]]:
        """Every topic: its bindings, its ``unroutable`` rule and its counters."""
        out: list[dict[str, Any]] = (await self._manage("topics", {}))["topics"]
        return out

    async def set_topic(self, topic: str, *, unroutable: str) -> dict[str, Any]:
        """What a publish matching no binding gets: ``"refuse"`` (UNROUTABLE, the
        default) or ``"drop"`` (counted, confirmed with id 0)."""
        return await self._manage("topic_set", {"topic": topic, "unroutable": unroutable})
