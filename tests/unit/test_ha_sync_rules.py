"""Who may lead a replicated broker id (zq.ha.lease.Sync.may_lead), and the --ha settings
a broker is refused or accepted with (zq.config)."""

from __future__ import annotations

from typing import Any

import pytest

from zq.config import BrokerConfig, broker_config, etcd_address
from zq.ha.lease import Sync

ETCD = "etcd://127.0.0.1:2379"

# ------------------------------------------------------------------ Sync.may_lead


def test_the_standby_in_sync_and_the_primary_that_wrote_it_may_lead() -> None:
    s = Sync(standby="node-b", term=4, revision=17, primary="node-a")
    assert s.may_lead("node-b")
    assert s.may_lead("node-a")


@pytest.mark.parametrize("node", ["node-c", "", "node-b ", "NODE-B", "node"])
def test_nobody_else_may_lead(node: str) -> None:
    assert not Sync(standby="node-b", term=4, revision=17, primary="node-a").may_lead(node)


def test_a_primary_alone_may_lead_again_and_nobody_else() -> None:
    s = Sync(standby=None, term=2, revision=5, primary="node-a")
    assert s.may_lead("node-a")
    assert not s.may_lead("node-b")
    assert not s.may_lead("None")


def test_a_sync_without_names_lets_nobody_lead() -> None:
    s = Sync(standby=None, term=2, revision=5)
    assert not s.may_lead("node-a")
    assert not s.may_lead("")


def test_without_a_named_primary_only_the_standby_may_lead() -> None:
    s = Sync(standby="node-b", term=2, revision=5)
    assert s.may_lead("node-b")
    assert not s.may_lead("node-a")


# ------------------------------------------------------------------ BrokerConfig --ha


def ha(**kw: Any) -> BrokerConfig:
    return BrokerConfig(**{"ha": ETCD, "id": "B1", **kw})


def test_a_replicated_broker_with_an_id_is_accepted_without_a_cluster_file() -> None:
    cfg = ha()
    assert (cfg.ha, cfg.id, cfg.cluster, cfg.storage) == (ETCD, "B1", "", "sqlite")
    assert not cfg.ha_strict


def test_an_id_without_a_cluster_or_ha_is_still_refused() -> None:
    with pytest.raises(ValueError, match="needs both --cluster FILE and --id NAME"):
        BrokerConfig(id="B1")


def test_ha_needs_an_id() -> None:
    with pytest.raises(ValueError, match="needs --id NAME"):
        BrokerConfig(ha=ETCD)


def test_ha_needs_sqlite() -> None:
    with pytest.raises(ValueError, match="needs --storage sqlite"):
        ha(storage="memory")


@pytest.mark.parametrize("ttl", [-1, 0, 1])
def test_ha_ttl_under_two_seconds_is_refused(ttl: int) -> None:
    with pytest.raises(ValueError, match="ha_ttl must be at least 2"):
        ha(ha_ttl=ttl, ha_liveness=0.5)


def test_ha_ttl_of_two_seconds_is_accepted() -> None:
    assert ha(ha_ttl=2, ha_liveness=2.0).ha_ttl == 2


@pytest.mark.parametrize("liveness", [0.0, 0.049, -1.0, 5.01, 60.0, float("nan")])
def test_ha_liveness_out_of_range_is_refused(liveness: float) -> None:
    with pytest.raises(ValueError, match="ha_liveness must be between"):
        ha(ha_ttl=5, ha_liveness=liveness)


@pytest.mark.parametrize("liveness", [0.05, 1.0, 5.0])
def test_ha_liveness_in_range_is_accepted(liveness: float) -> None:
    assert ha(ha_ttl=5, ha_liveness=liveness).ha_liveness == liveness


@pytest.mark.parametrize("field", ["ha_cluster", "id", "ha_node"])
def test_a_slash_in_a_key_name_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must not contain '/'"):
        ha(**{field: "a/b"})


def test_names_without_a_slash_are_accepted() -> None:
    cfg = ha(ha_cluster="prod-1", ha_node="node.a")
    assert (cfg.ha_cluster, cfg.ha_node) == ("prod-1", "node.a")


@pytest.mark.parametrize(("url", "want"), [
    ("etcd://127.0.0.1:2379", ("127.0.0.1", 2379)),
    ("etcd://[::1]:2379", ("::1", 2379)),
    ("etcd://etcd.local:1", ("etcd.local", 1)),
    ("etcd://h:65535/", ("h", 65535)),
])
def test_etcd_urls_that_are_accepted(url: str, want: tuple[str, int]) -> None:
    assert etcd_address(url) == want
    assert ha(ha=url).ha == url


@pytest.mark.parametrize("url", [
    "http://x:1", "etcd://x", "etcd://x:0", "etcd://x:99999", "etcd://x:65536",
    "etcd://:2379", "etcd://x:", "etcd://x:-1", "etcd://x:port", "127.0.0.1:2379",
    "ETCD://x:1",
])
def test_etcd_urls_that_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="--ha must look like etcd://"):
        etcd_address(url)
    with pytest.raises(ValueError, match="--ha must look like etcd://"):
        ha(ha=url)


# ------------------------------------------------------------------ broker_config


@pytest.mark.parametrize(("raw", "want"), [
    ("yes", True), ("1", True), ("true", True), ("ON", True),
    ("0", False), ("no", False), ("false", False), ("off", False)])
def test_ha_strict_from_the_environment(raw: str, want: bool) -> None:
    cfg = broker_config(env={"ZQ_BROKER_HA_STRICT": raw}, id="B1", ha=ETCD)
    assert cfg.ha_strict is want


def test_ha_strict_that_is_not_a_truth_value_is_refused() -> None:
    with pytest.raises(ValueError, match="ha_strict: cannot read 'maybe'"):
        broker_config(env={"ZQ_BROKER_HA_STRICT": "maybe"}, id="B1", ha=ETCD)


def test_ha_settings_from_the_environment_are_checked() -> None:
    env = {"ZQ_BROKER_HA": ETCD, "ZQ_BROKER_ID": "B1", "ZQ_BROKER_HA_TTL": "3",
           "ZQ_BROKER_HA_LIVENESS": "0.5"}
    cfg = broker_config(env=env)
    assert (cfg.ha, cfg.id, cfg.ha_ttl, cfg.ha_liveness) == (ETCD, "B1", 3, 0.5)
    with pytest.raises(ValueError, match="ha_ttl must be at least 2"):
        broker_config(env={**env, "ZQ_BROKER_HA_TTL": "1"})
    with pytest.raises(ValueError, match="needs --id NAME"):
        broker_config(env={"ZQ_BROKER_HA": ETCD})
