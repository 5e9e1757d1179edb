"""One frozen config dataclass per process kind, validated on construction.

Values come from, in rising precedence: defaults, a TOML file (``--config``),
environment variables (``ZQ_BROKER_<FIELD>``), then command-line flags. That
merge happens in :func:`broker_config` and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zq import policies
from zq.admin import settings as admin_settings
from zq.errors import ZqError
from zq.security import settings as security_settings
from zq.settings import check_policies, from_map
from zq.uplink import settings as uplink_settings

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
STORAGE_KINDS = ("sqlite", "memory")
FSYNC_MODES = ("full", "normal")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    bind: str = DEFAULT_ENDPOINT
    data: str = "./zq-data"
    storage: str = "sqlite"
    fsync: str = "full"  # synchronous=FULL; "normal" may lose the last commits at power loss
    max_db_bytes: int = 0  # database file cap (0: none); past it publishes get STORAGE_FULL
    checkpoint_interval: float = 30.0  # seconds between WAL checkpoints while writing
    # Disk space kept free in the data folder (a ballast file, given back when the disk
    # fills so that acks still commit); at most 1/16 of the filesystem. 0: none.
    reserve_bytes: int = 16 * 1024 * 1024
    window: int = 20_000  # ready messages per queue kept in memory; the rest stay on disk
    window_bytes: int = 64 * 1024 * 1024  # ... and at most this many body bytes per queue
    commit_max: int = 50_000  # messages published per transaction before the pass commits
    heartbeat: float = 1.0  # seconds between heartbeats, both ways
    liveness: int = 3  # heartbeats missed before a peer is dropped
    max_batch: int = 1000  # messages per DELIVER frame
    max_credit: int = 100_000  # credit window limit per (consumer, queue)
    max_frame: int = 16 * 1024 * 1024  # bytes per multipart message (and, plus 64 KiB, per part)
    max_header: int = 4 * 1024 * 1024  # bytes of a frame's msgpack header, checked before decoding
    max_publish_batch: int = 10_000  # bodies per PUBLISH frame
    dispatch: str = "round-robin"
    send_hwm: int = 100_000  # queued outgoing messages per peer before sends fail
    listen_backlog: int = 1024  # pending TCP connections (libzmq's default 100 drops bursts)
    drain_max: int = 2000  # frames read per loop pass before committing and dispatching
    shutdown_grace: float = 3.0  # seconds to finish in-flight frames on SIGTERM
    # Idempotent producers: PUBLISH frames remembered per producer id, and for how long
    # after its last publish (a resent frame among them is confirmed, not stored again).
    producer_window: int = 20_000
    producer_ttl: float = 600.0
    # In a cluster: the cluster file and this broker's id in it (PROTOCOL.md section 17).
    cluster: str = ""
    id: str = ""
    # High availability (docs/HA.md): etcd, and this node's part in serving --id.
    ha: str = ""  # etcd://HOST:PORT; empty: not replicated
    ha_cluster: str = "zq"  # keys live under /zq/<ha_cluster>/brokers/<id>/
    ha_node: str = ""  # this node's name (default: one kept in the data folder)
    ha_bind: str = ""  # the replication endpoint (default: --bind's host, a free port)
    ha_advertise: str = ""  # the replication endpoint standbys connect to (default: ha_bind's)
    ha_ttl: int = 5  # seconds of the leader lease
    ha_liveness: float = 1.0  # seconds of silence before the standby is dropped
    ha_strict: bool = False  # no standby in sync: refuse publishes instead of confirming alone
    # Security (docs/SECURITY.md): CURVE keys, permissions, and bounds on every peer.
    curve_secret: str = ""  # this server's secret key file (zq keys generate); "": no CURVE
    authorized_keys: str = ""  # directory of the public keys (NAME.key) that may connect
    permissions: str = ""  # TOML file of what each key may do; "": every key everything
    insecure: bool = False  # serve a non-loopback address without CURVE
    max_sessions: int = 10_000  # sessions the broker holds at once (links count)
    max_sessions_per_key: int = 1_000  # ... for one key (with CURVE)
    hello_timeout: float = 10.0  # seconds a connection may stay without a session
    malformed_budget: int = 10  # malformed frames a connection may send before it is cut
    # The admin HTTP listener (docs/MANAGEMENT.md): off unless admin_bind is given.
    admin_bind: str = ""  # HOST:PORT, or PORT for loopback
    admin_token: str = ""  # a file holding the bearer token it asks for
    # The uplink (docs/EDGE.md): forward some queues to a central cluster. Comma-separated.
    uplink: str = ""  # the centre's endpoints (routers, or a lone broker)
    uplink_queues: str = ""  # patterns of the queues to forward
    uplink_curve_secret: str = ""  # CURVE to the centre: this edge's secret key file
    uplink_server_key: str = ""  # ... and the centre's public key file
    uplink_timeout: float = 15.0  # seconds a frame may wait for the centre's answer
    # Queue settings from the config file's [queues.NAME] tables, applied at start.
    queues: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_numbers()
        for name, settings in self.queues.items():
            try:
                check_policies(from_map(settings))
            except ZqError as exc:
                raise ValueError(f"[queues.{name}]: {exc.message}") from None

    def _check_choices(self) -> None:
        alone = self.id and not (self.cluster or self.ha or self.uplink)
        if (self.cluster and not self.id) or alone:
            raise ValueError("a broker in a cluster needs both --cluster FILE and --id NAME "
                             "(--id alone names an edge broker with --uplink)")
        if "://" not in self.bind:
            raise ValueError(
                f"bind must be a ZeroMQ endpoint like {DEFAULT_ENDPOINT}, got {self.bind!r}")
        if self.storage not in STORAGE_KINDS:
            raise ValueError(
                f"storage must be one of {', '.join(STORAGE_KINDS)}, got {self.storage!r}")
        if self.fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, got {self.fsync!r}")
        policies.check("dispatch", self.dispatch)  # a built-in or a zq.policies plugin
        security_settings.check(self, [self.bind, self.ha_bind])
        admin_settings.check(self)
        uplink_settings.check(self)
        if self.ha:
            self._check_ha()

    def _check_ha(self) -> None:
        if not self.id:
            raise ValueError("a replicated broker (--ha) needs --id NAME")
        if self.storage != "sqlite":
            raise ValueError("a replicated broker (--ha) needs --storage sqlite")
        etcd_address(self.ha)
        if self.ha_ttl < 2:
            raise ValueError("ha_ttl must be at least 2 seconds (etcd's shortest lease)")
        if not 0.05 <= self.ha_liveness <= self.ha_ttl:
            raise ValueError("ha_liveness must be between 0.05 s and ha_ttl")
        for name in ("ha_cluster", "id", "ha_node"):
            if "/" in getattr(self, name):
                raise ValueError(f"{name} must not contain '/'")

    def _check_numbers(self) -> None:
        for name in ("heartbeat", "checkpoint_interval", "shutdown_grace", "producer_ttl"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number of seconds")
        if not 0.01 <= self.heartbeat <= 3600:
            raise ValueError("heartbeat must be between 0.01 and 3600 seconds")
        if not 1 <= self.liveness <= 100:
            raise ValueError("liveness must be between 1 and 100")
        for name in ("max_batch", "max_credit", "max_publish_batch", "send_hwm", "drain_max",
                     "listen_backlog", "producer_window",
                     "window", "window_bytes", "commit_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        self._check_sizes()
        if self.shutdown_grace < 0:
            raise ValueError("shutdown_grace must be >= 0")
        if self.max_db_bytes < 0 or self.checkpoint_interval <= 0:
            raise ValueError("max_db_bytes must be >= 0 and checkpoint_interval > 0")
        if self.reserve_bytes < 0:
            raise ValueError("reserve_bytes must be >= 0")
        if self.producer_ttl <= 0:
            raise ValueError("producer_ttl must be > 0 seconds")


    def _check_sizes(self) -> None:
        if self.max_frame < 1024:
            raise ValueError("max_frame must be >= 1024 bytes")
        if not 256 <= self.max_header <= 4 * 1024 * 1024:
            raise ValueError("max_header must be between 256 bytes and 4 MiB")


def etcd_address(url: str) -> tuple[str, int]:
    """``etcd://HOST:PORT`` as (host, port); ValueError says what is wrong."""
    if not url.startswith("etcd://"):
        raise ValueError(f"--ha must look like etcd://127.0.0.1:2379, got {url!r}")
    host, _, port = url[len("etcd://"):].rstrip("/").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--ha must look like etcd://127.0.0.1:2379, got {url!r}")
    return host.strip("[]"), int(port)


# One line of help per BrokerConfig field (but ``queues``), shown by ``zq broker --help``.
# "{default}" stands for the field's default; text without it gets "[default: ...]"
# appended. ``zq broker`` makes a flag of every field, so a new field needs only a line here.
SETTING_HELP: dict[str, str] = {
    "bind": "Endpoint to bind. [default: {default}; tcp://127.0.0.1:* picks a free port]",
    "data": "Data folder for the store.",
    "storage": "Where messages live. 'sqlite': a database in --data, in WAL mode; a confirm "
               "means the message is on disk. 'memory': NO durability, a restart or crash "
               "loses every message.",
    "fsync": "sqlite only. 'full': every commit reaches the disk before its confirms "
             "(synchronous=FULL). 'normal': faster, and a power loss (not a crash of the "
             "broker) may lose the last commits.",
    "max_db_bytes": "sqlite only: cap the database file; past it publishes get STORAGE_FULL "
                    "until acks free space. [default: {default}, no cap]",
    "checkpoint_interval": "sqlite only: seconds between WAL checkpoints while writing.",
    "reserve_bytes": "sqlite only: disk space kept free in the data folder, given back when "
                     "the disk fills so that acks still commit (at most 1/16 of the "
                     "filesystem; 0: none).",
    "window": "Ready messages per queue kept in memory; the rest stay on disk.",
    "window_bytes": "Most body bytes per queue kept in memory; the rest stay on disk.",
    "commit_max": "Messages published per transaction before the broker commits.",
    "heartbeat": "Seconds between heartbeats, both ways.",
    "liveness": "Heartbeats a peer may miss before it is dropped and its messages requeued.",
    "max_batch": "Most messages in one DELIVER frame.",
    "max_credit": "Largest credit window per consumer and queue.",
    "max_frame": "Largest message in bytes, all parts together: a larger one gets "
                 "FRAME_TOO_LARGE; a single part more than 64 KiB over it is cut off by "
                 "ZeroMQ before it is read (the connection is closed).",
    "max_publish_batch": "Most bodies in one PUBLISH frame.",
    "max_header": "Largest msgpack header part of a frame, checked before decoding "
                  "(FRAME_TOO_LARGE past it; at most 4 MiB).",
    "dispatch": "How consumers of one queue share it.",
    "send_hwm": "Outgoing messages queued per peer before sends to it fail.",
    "listen_backlog": "Pending TCP connections the listening socket accepts.",
    "drain_max": "Frames read per loop pass before the broker commits and dispatches.",
    "shutdown_grace": "Seconds to finish the frames already received on SIGTERM.",
    "producer_window": "PUBLISH frames remembered per producer id, so that a frame resent "
                       "after a reconnect is confirmed with its first ids, not stored again "
                       "(keep it above the clients' publish window).",
    "producer_ttl": "Seconds a producer id is remembered after its last publish.",
    "cluster": "A cluster file (cluster.toml): this broker serves the queues it places "
               "on --id, and binds that entry's endpoint unless --bind is given.",
    "id": "This broker's id in the --cluster file (kept in the data folder: a folder "
          "of another id is refused); with --ha, the id the pair of nodes serves; with "
          "--uplink alone, the edge broker's name at the centre (kept the same way).",
    "ha": "Replicate: etcd://HOST:PORT of the etcd that chooses the primary of --id; two "
          "nodes (two data folders) serve it, a primary and a synchronous standby "
          "(docs/HA.md). [default: not replicated]",
    "ha_cluster": "With --ha: the name whose etcd keys (/zq/NAME/brokers/ID/) this broker uses.",
    "ha_node": "With --ha: this node's name. [default: one made once and kept in --data]",
    "ha_bind": "With --ha: the endpoint standbys replicate from. [default: --bind's host, "
               "a free port]",
    "ha_advertise": "With --ha: the replication endpoint standbys are told to connect to, "
                    "when it is not the bound one (a wildcard host, NAT, a proxy). "
                    "[default: the bound endpoint]",
    "ha_ttl": "With --ha: seconds of the primary's lease in etcd; a primary that cannot "
              "renew it stops confirming within it.",
    "ha_liveness": "With --ha: seconds of silence after which the primary drops its standby "
                   "from sync (and confirms alone, unless --ha-strict).",
    "ha_strict": "With --ha: while no standby is in sync, refuse publishes (UNAVAILABLE) "
                 "instead of confirming alone.",
    **security_settings.HELP,
    **admin_settings.HELP,
    **uplink_settings.HELP,
}


def setting_help(name: str) -> str:
    """The help line of BrokerConfig field ``name``, with its default."""
    default = {f.name: f.default for f in dataclasses.fields(BrokerConfig)}[name]
    text = SETTING_HELP.get(name, name.replace("_", " ").capitalize() + ".")
    if "{default}" in text:
        return text.replace("{default}", str(default))
    if "[default:" in text:
        return text
    return f"{text} [default: {default}]"


def _coerce(field: dataclasses.Field[Any], raw: Any) -> Any:
    if field.type in (bool, "bool"):
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(raw).lower() in ("1", "true", "yes", "on")
        raise ValueError(f"{field.name}: cannot read {raw!r} as true or false")
    if isinstance(raw, list) and field.type in (str, "str") and all(
            isinstance(x, str) for x in raw):
        return ",".join(raw)  # a TOML list for a comma-separated setting
    kind = field.type if isinstance(field.type, type) else {"str": str, "int": int, "float": float}[
        str(field.type)
    ]
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{field.name}: cannot read {raw!r} as {kind.__name__}") from None


def _from_file(file: str | Path, fields: dict[str, dataclasses.Field[Any]]) -> dict[str, Any]:
    with open(file, "rb") as fh:
        doc = tomllib.load(fh)
    section = doc.get("broker", {} if "queues" in doc else doc)
    queues = doc.get("queues", {})
    if not isinstance(queues, dict) or not all(isinstance(v, dict) for v in queues.values()):
        raise ValueError(f"{file}: [queues.NAME] must be tables of queue settings")
    values: dict[str, Any] = {"queues": queues} if queues else {}
    for key, raw in section.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ValueError(f"{file}: unknown broker setting {key!r}")
        values[name] = _coerce(fields[name], raw)
    return values


def broker_config(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> BrokerConfig:
    """Merge defaults < file < environment < flags (flags that are None are unset)."""
    fields = {f.name: f for f in dataclasses.fields(BrokerConfig)}
    values: dict[str, Any] = {} if file is None else _from_file(file, fields)
    source: Mapping[str, str] = os.environ if env is None else env
    for name, field in fields.items():
        raw = None if name == "queues" else source.get(f"ZQ_BROKER_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(field, raw)
    for name, raw in flags.items():
        if name not in fields:
            raise ValueError(f"unknown broker setting {name!r}")
        if raw is not None:
            values[name] = _coerce(fields[name], raw)
    if values.get("cluster") and "bind" not in values:
        values["bind"] = _cluster_endpoint(values["cluster"], values.get("id", ""))
    return BrokerConfig(**values)


def _cluster_endpoint(file: str, broker_id: str) -> str:
    """The endpoint the cluster file gives broker ``broker_id`` (what it binds)."""
    from zq.cluster.config import load

    entry = load(file).broker(broker_id)
    if entry is None:
        raise ValueError(f"{file}: no broker with id {broker_id!r}")
    return entry.endpoint
