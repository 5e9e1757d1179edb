"""The uplink's settings (zq.uplink.settings) as BrokerConfig checks them, and from a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zq.config import SETTING_HELP, BrokerConfig, broker_config
from zq.uplink import settings

EP = "tcp://10.0.0.5:5555"


def cfg(**kw: Any) -> BrokerConfig:
    return BrokerConfig(**kw)


def test_an_uplink_with_queues_is_accepted() -> None:
    c = cfg(uplink=f"{EP}, tcp://10.0.0.6:5555,,", uplink_queues="orders.#, metrics.*")
    assert settings.endpoints(c) == [EP, "tcp://10.0.0.6:5555"]
    assert [p.text for p in settings.patterns(c)] == ["orders.#", "metrics.*"]
    assert settings.endpoints(cfg()) == []
    assert settings.patterns(cfg()) == ()


@pytest.mark.parametrize("ep", ["ipc:///tmp/zq-centre",
                                "tcp://centre.example.com:5555", "tcp://[::1]:5555"])
def test_endpoints_that_can_be_connected_to(ep: str) -> None:
    assert settings.endpoints(cfg(uplink=ep, uplink_queues="q")) == [ep]


def test_an_uplink_needs_queues_and_queues_need_an_uplink() -> None:
    with pytest.raises(ValueError, match="--uplink needs --uplink-queues"):
        cfg(uplink=EP)
    with pytest.raises(ValueError, match="--uplink needs --uplink-queues"):
        cfg(uplink=EP, uplink_queues=" , ")
    with pytest.raises(ValueError, match="needs --uplink ENDPOINT"):
        cfg(uplink_queues="orders.#")
    with pytest.raises(ValueError, match="needs --uplink ENDPOINT"):
        cfg(uplink_curve_secret="edge.secret", uplink_server_key="centre.key")


def test_an_uplink_needs_a_store_on_disk() -> None:
    with pytest.raises(ValueError, match="--storage sqlite"):
        cfg(uplink=EP, uplink_queues="orders.#", storage="memory")
    cfg(uplink=EP, uplink_queues="orders.#", storage="sqlite")


@pytest.mark.parametrize("kw", [
    {"cluster": "cluster.toml", "id": "b1"},
    {"ha": "etcd://127.0.0.1:2379", "id": "b1"},
])
def test_an_uplink_is_for_a_broker_of_its_own(kw: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not with --cluster or --ha"):
        cfg(uplink=EP, uplink_queues="orders.#", **kw)


@pytest.mark.parametrize(("ep", "why"), [
    ("tcp://host", "needs a host and a port"),
    ("tcp://*:5555", "needs a host and a port"),
    ("http://x", "is not an endpoint"),
    ("10.0.0.5:5555", "is not an endpoint"),
    ("tcp://", "is not an endpoint"),
    ("inproc://centre", "is not an endpoint"),  # another process is never in this one
    ("tcp://127.0.0.1:0", "a port"),
    ("tcp://127.0.0.1:65536", "a port"),
    ("tcp://127.0.0.1:x", "a port"),
    ("tcp://127.0.0.1:1;tcp://127.0.0.1:2", "separated by commas"),
])
def test_an_endpoint_that_cannot_be_connected_to_is_refused(ep: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"--uplink: .*{why}"):
        cfg(uplink=ep, uplink_queues="orders.#")
    with pytest.raises(ValueError, match=why):  # one bad among good ones
        cfg(uplink=f"{EP},{ep}", uplink_queues="orders.#")


@pytest.mark.parametrize("pattern", ["orders..a", "orders.a b", "orders.#,a+b", "é" * 300])
def test_a_bad_pattern_is_refused_naming_the_setting(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"^--uplink-queues: "):
        cfg(uplink=EP, uplink_queues=pattern)


def test_curve_needs_both_keys() -> None:
    with pytest.raises(ValueError, match="go together"):
        cfg(uplink=EP, uplink_queues="q", uplink_curve_secret="edge.secret")
    with pytest.raises(ValueError, match="go together"):
        cfg(uplink=EP, uplink_queues="q", uplink_server_key="centre.key")
    cfg(uplink=EP, uplink_queues="q", uplink_curve_secret="edge.secret",
        uplink_server_key="centre.key")


@pytest.mark.parametrize(("name", "forwarded"), [
    ("orders", True), ("orders.eu", True), ("orders.eu.paris", True),
    ("metrics.cpu", True), ("metrics", False), ("metrics.cpu.0", False),
    ("other", False), ("ordersx", False),
    ("orders.dlq", False), ("orders.eu.dlq", False), ("metrics.dlq", False),
])
def test_which_queues_are_forwarded(name: str, forwarded: bool) -> None:
    pats = settings.patterns(cfg(uplink=EP, uplink_queues="orders.#,metrics.*"))
    assert settings.forwarded(pats, name) is forwarded


def test_every_uplink_setting_has_help() -> None:
    fields = {"uplink", "uplink_queues", "uplink_curve_secret", "uplink_server_key",
              "uplink_timeout"}
    assert set(settings.HELP) == fields
    assert all(SETTING_HELP[k] for k in fields)


# ------------------------------------------------------------------ from a file


def test_a_toml_list_is_joined_with_commas(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text('uplink = ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]\n'
                    'uplink_queues = ["orders.#", "metrics.*"]\n')
    c = broker_config(file=path, env={})
    assert c.uplink == "tcp://127.0.0.1:1,tcp://127.0.0.1:2"
    assert c.uplink_queues == "orders.#,metrics.*"
    assert settings.endpoints(c) == ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]


def test_a_broker_table_with_a_string_and_an_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text('[broker]\nuplink = "tcp://127.0.0.1:1"\n'
                    '[queues.orders]\nmax_length = 10\n')
    c = broker_config(file=path, env={"ZQ_BROKER_UPLINK_QUEUES": "orders.#"})
    assert (c.uplink, c.uplink_queues) == ("tcp://127.0.0.1:1", "orders.#")
    with pytest.raises(ValueError, match="--uplink needs --uplink-queues"):
        broker_config(file=path, env={})


def test_a_toml_list_of_other_things_is_not_joined(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text('uplink = [1, 2]\nuplink_queues = "q"\n')
    with pytest.raises(ValueError, match="--uplink"):
        broker_config(file=path, env={})


def test_the_brokers_own_bind_and_twice_the_same_endpoint_are_refused() -> None:
    with pytest.raises(ValueError, match="own --bind"):
        cfg(bind="tcp://127.0.0.1:7001", uplink="tcp://127.0.0.1:7001", uplink_queues="q")
    with pytest.raises(ValueError, match="given twice"):
        cfg(uplink=f"{EP},{EP}", uplink_queues="q")


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf"), 3601.0])
def test_an_uplink_timeout_out_of_range_is_refused(t: float) -> None:
    with pytest.raises(ValueError, match="uplink_timeout"):
        cfg(uplink=EP, uplink_queues="q", uplink_timeout=t)

