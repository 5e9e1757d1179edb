"""The cluster file (``cluster.toml``): which brokers exist, and which names are pinned.

Users write it, so every key is checked and an unknown one is an error that names
it (a mistyped ``wieght`` must not silently mean the default)::

    cluster_id = "demo"
    version = 1
    [[brokers]]
    id = "b1"
    endpoint = "tcp://127.0.0.1:5601"
    weight = 1            # optional, default 1
    state = "active"      # optional: active | draining
    [pins]                # optional: a queue name or a name prefix -> broker id
    "billing." = "b1"

No I/O except :func:`load` reading the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from zq.cluster.placement import place
from zq.protocol.limits import MAX_QUEUE_NAME

STATES = ("active", "draining")
SCHEMES = ("tcp://", "ipc://", "inproc://")
MAX_CLUSTER_ID = 255
_BROKER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOP_KEYS = ("cluster_id", "version", "brokers", "pins")
_BROKER_KEYS = ("id", "endpoint", "weight", "state")


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True, slots=True)
class BrokerEntry:
    id: str
    endpoint: str
    weight: float = 1.0
    state: str = "active"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _BROKER_ID.fullmatch(self.id):
            raise ValueError(f"broker id must be 1-64 characters of A-Z a-z 0-9 . _ -, "
                             f"got {self.id!r}")
        where = f"broker {self.id!r}"
        if not (isinstance(self.endpoint, str)
                and any(self.endpoint.startswith(s) and len(self.endpoint) > len(s)
                        for s in SCHEMES)):
            raise ValueError(f"{where}: endpoint must start with {', '.join(SCHEMES)}, "
                             f"got {self.endpoint!r}")
        if not (_number(self.weight) and math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"{where}: weight must be a finite number > 0, got {self.weight!r}")
        if self.state not in STATES:
            raise ValueError(f"{where}: state must be one of {', '.join(STATES)}, "
                             f"got {self.state!r}")
        object.__setattr__(self, "weight", float(self.weight))

    @property
    def active(self) -> bool:
        """Whether the hash may place new names on this broker."""
        return self.state == "active"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    cluster_id: str
    version: int
    brokers: tuple[BrokerEntry, ...]
    pins: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        cid = self.cluster_id
        if not (isinstance(cid, str) and 0 < len(cid) <= MAX_CLUSTER_ID and cid.isprintable()
                and not any(c.isspace() for c in cid)):
            raise ValueError(f"cluster_id must be 1-{MAX_CLUSTER_ID} printable characters "
                             f"without whitespace, got {cid!r}")
        if type(self.version) is not int or self.version < 1:
            raise ValueError(f"version must be an integer >= 1, got {self.version!r}")
        self._check_brokers()
        self._check_pins()

    def _check_brokers(self) -> None:
        bs = self.brokers
        if not isinstance(bs, tuple) or not all(isinstance(b, BrokerEntry) for b in bs):
            raise ValueError("brokers must be a tuple of BrokerEntry")
        if not bs:
            raise ValueError("brokers: at least one broker is needed")
        for key in ("id", "endpoint"):
            seen: set[str] = set()
            for b in bs:
                value = getattr(b, key)
                if value in seen:
                    raise ValueError(f"brokers: duplicate {key} {value!r}")
                seen.add(value)
        if not any(b.active for b in bs):
            raise ValueError("brokers: at least one broker must have state 'active'")

    def _check_pins(self) -> None:
        ids = set(self.ids)
        keys: set[str] = set()
        for pin in self.pins:
            if not (isinstance(pin, tuple) and len(pin) == 2
                    and all(isinstance(p, str) for p in pin)):
                raise ValueError(f"pins: each pin must be a (key, broker id) pair, got {pin!r}")
            key, target = pin
            if not 0 < len(key.encode("utf-8", "surrogatepass")) <= MAX_QUEUE_NAME:
                raise ValueError(f"pins: key must be 1-{MAX_QUEUE_NAME} octets of UTF-8, "
                                 f"got {key!r}")
            if key in keys:
                raise ValueError(f"pins: duplicate key {key!r}")
            keys.add(key)
            if target not in ids:
                raise ValueError(f"pins: {key!r} points to unknown broker id {target!r}")

    @property
    def ids(self) -> tuple[str, ...]:
        """The broker ids, in file order."""
        return tuple(b.id for b in self.brokers)

    def broker(self, id: str) -> BrokerEntry | None:
        return next((b for b in self.brokers if b.id == id), None)

    def placement(self, name: str) -> str:
        """The broker id for a new queue ``name`` (see :func:`zq.cluster.placement.place`)."""
        return place(name, self)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the file's shape; :meth:`from_dict` reads it back."""
        return {
            "cluster_id": self.cluster_id,
            "version": self.version,
            "brokers": [{"id": b.id, "endpoint": b.endpoint, "weight": b.weight,
                         "state": b.state} for b in self.brokers],
            "pins": dict(self.pins),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClusterConfig:
        """Build from parsed TOML (or :meth:`to_dict`); unknown or missing keys are errors."""
        if not isinstance(d, Mapping):
            raise ValueError(f"the cluster file must be a table, got {type(d).__name__}")
        _known(d, _TOP_KEYS, "top level")
        _need(d, ("cluster_id", "version", "brokers"), "top level")
        raw = d["brokers"]
        if not isinstance(raw, list):
            raise ValueError("brokers must be an array of tables ([[brokers]])")
        pins = d.get("pins", {})
        if not isinstance(pins, Mapping):
            raise ValueError("pins must be a table of name or prefix = broker id")
        return cls(cluster_id=d["cluster_id"], version=d["version"],
                   brokers=tuple(_broker(i, b) for i, b in enumerate(raw)),
                   pins=tuple(pins.items()))

    def fingerprint(self) -> str:
        """16 hex digits over the canonical content (brokers by id, pins by key): equal
        for the same cluster, whatever the order or layout of the file."""
        canon = self.to_dict()
        canon["brokers"] = sorted(canon["brokers"], key=lambda b: b["id"])
        text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return blake2b(text.encode(), digest_size=8).hexdigest()


def _known(d: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in d:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(allowed)})")


def _need(d: Mapping[str, Any], required: tuple[str, ...], where: str) -> None:
    for key in required:
        if key not in d:
            raise ValueError(f"{where}: missing key {key!r}")


def _broker(i: int, b: object) -> BrokerEntry:
    where = f"brokers[{i}]"
    if not isinstance(b, Mapping):
        raise ValueError(f"{where} must be a table, got {b!r}")
    _known(b, _BROKER_KEYS, where)
    _need(b, ("id", "endpoint"), where)
    return BrokerEntry(id=b["id"], endpoint=b["endpoint"], weight=b.get("weight", 1.0),
                       state=b.get("state", "active"))


def load(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate a cluster file; every error is a ValueError naming the path."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{os.fspath(path)}: cannot read cluster file: "
                         f"{exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{os.fspath(path)}: TOML syntax error: {exc}") from None
    try:
        return ClusterConfig.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None
