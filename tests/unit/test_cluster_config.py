"""The cluster file (zq.cluster.config) and where new queue names go (zq.cluster.placement).

No I/O but writing small TOML files to tmp_path.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zq.cluster import BrokerEntry, ClusterConfig, load, place, spread
from zq.cluster import placement as placement_mod

EXAMPLE = """\
cluster_id = "demo"
version = 1
[[brokers]]
id = "b1"
endpoint = "tcp://127.0.0.1:5601"
weight = 1
state = "active"
[[brokers]]
id = "b2"
endpoint = "tcp://127.0.0.1:5602"
weight = 2.5
state = "draining"
[[brokers]]
id = "b3"
endpoint = "ipc:///tmp/zq-b3"
[pins]
"billing." = "b1"
"orders" = "b2"
"""

NAMES = [f"q{i}" for i in range(1000)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def cluster(*weights: float, draining: Sequence[int] = (),
            pins: tuple[tuple[str, str], ...] = ()) -> ClusterConfig:
    """Brokers b1..bN with the given weights; ``draining`` lists 1-based positions."""
    brokers = tuple(
        BrokerEntry(f"b{i}", f"tcp://127.0.0.1:{5600 + i}", w,
                    "draining" if i in draining else "active")
        for i, w in enumerate(weights, 1))
    return ClusterConfig("demo", 1, brokers, pins)


def share(counts: dict[str, int], total: int) -> dict[str, float]:
    return {k: 100 * v / total for k, v in counts.items()}


# ------------------------------------------------------------------ the file


def test_the_example_file_is_read_field_by_field(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, EXAMPLE))
    assert cfg.cluster_id == "demo"
    assert cfg.version == 1
    assert cfg.ids == ("b1", "b2", "b3")
    assert cfg.brokers[0] == BrokerEntry("b1", "tcp://127.0.0.1:5601", 1.0, "active")
    assert cfg.brokers[1] == BrokerEntry("b2", "tcp://127.0.0.1:5602", 2.5, "draining")
    assert cfg.brokers[2] == BrokerEntry("b3", "ipc:///tmp/zq-b3", 1.0, "active")
    assert type(cfg.brokers[0].weight) is float  # the file's int 1 becomes 1.0
    assert [b.active for b in cfg.brokers] == [True, False, True]
    assert cfg.pins == (("billing.", "b1"), ("orders", "b2"))
    assert cfg.broker("b2") is cfg.brokers[1]
    assert cfg.broker("b9") is None


def test_weight_and_state_default_to_1_and_active(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, 'cluster_id = "c"\nversion = 3\n'
                                '[[brokers]]\nid = "x"\nendpoint = "inproc://x"\n'))
    assert cfg.brokers == (BrokerEntry("x", "inproc://x", 1.0, "active"),)
    assert cfg.pins == ()
    assert cfg.version == 3


def test_to_dict_round_trips(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, EXAMPLE))
    assert ClusterConfig.from_dict(cfg.to_dict()) == cfg


def test_a_missing_file_is_a_value_error_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ValueError, match=r"nope\.toml"):
        load(path)


def test_a_toml_syntax_error_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, 'cluster_id = "demo\nversion = 1\n')
    with pytest.raises(ValueError, match="TOML syntax error") as info:
        load(path)
    assert str(path) in str(info.value)


def test_a_validation_error_from_a_file_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("version = 1", "version = 0"))
    with pytest.raises(ValueError, match="version") as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("edit", "key"), [
    (lambda d: d.update(brokerz=[]), "brokerz"),
    (lambda d: d["brokers"][0].update(wieght=2), "wieght"),
    (lambda d: d["brokers"][1].update(status="active"), "status"),
])
def test_unknown_keys_are_refused_by_name(edit: Any, key: str) -> None:
    d = cluster(1, 1).to_dict()
    edit(d)
    with pytest.raises(ValueError, match=f"unknown key '{key}'"):
        ClusterConfig.from_dict(d)


@pytest.mark.parametrize("key", ["cluster_id", "version", "brokers"])
def test_missing_top_level_keys_are_named(key: str) -> None:
    d = cluster(1).to_dict()
    del d[key]
    with pytest.raises(ValueError, match=f"missing key '{key}'"):
        ClusterConfig.from_dict(d)


@pytest.mark.parametrize("key", ["id", "endpoint"])
def test_missing_broker_keys_are_named(key: str) -> None:
    d = cluster(1).to_dict()
    del d["brokers"][0][key]
    with pytest.raises(ValueError, match=rf"brokers\[0\]: missing key '{key}'"):
        ClusterConfig.from_dict(d)


# ------------------------------------------------------------------ validation, one rule each

B1 = BrokerEntry("b1", "tcp://h:1")
B2 = BrokerEntry("b2", "tcp://h:2")


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"cluster_id": ""}, "cluster_id"),
    ({"cluster_id": 7}, "cluster_id"),
    ({"cluster_id": "a b"}, "cluster_id"),
    ({"cluster_id": "a\x00b"}, "cluster_id"),
    ({"cluster_id": "x" * 256}, "cluster_id"),
    ({"version": 0}, "version"),
    ({"version": True}, "version"),
    ({"version": 1.0}, "version"),
    ({"version": "1"}, "version"),
    ({"brokers": ()}, "brokers"),
    ({"brokers": [B1]}, "brokers"),
    ({"brokers": (B1, BrokerEntry("b1", "tcp://h:9"))}, "duplicate id"),
    ({"brokers": (B1, BrokerEntry("b2", "tcp://h:1"))}, "duplicate endpoint"),
    ({"brokers": (BrokerEntry("b1", "tcp://h:1", state="draining"),)}, "active"),
    ({"pins": (("billing.", "b9"),)}, "pins"),
    ({"pins": (("", "b1"),)}, "pins"),
    ({"pins": (("é" * 128, "b1"),)}, "pins"),  # 128 characters, 256 octets
    ({"pins": (("a", "b1"), ("a", "b2"))}, "pins: duplicate key"),
    ({"pins": (("a", 1),)}, "pins"),
])
def test_each_cluster_rule(kwargs: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {"cluster_id": "demo", "version": 1, "brokers": (B1, B2)} | kwargs
    with pytest.raises(ValueError, match=key):
        ClusterConfig(**args)


def test_a_pin_key_of_255_octets_is_fine() -> None:
    ClusterConfig("demo", 1, (B1,), (("é" * 127 + "a", "b1"),))


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"id": ""}, "id"),
    ({"id": "b 1"}, "id"),
    ({"id": "b/1"}, "id"),
    ({"id": "x" * 65}, "id"),
    ({"id": 1}, "id"),
    ({"endpoint": ""}, "endpoint"),
    ({"endpoint": "tcp://"}, "endpoint"),
    ({"endpoint": "udp://h:1"}, "endpoint"),
    ({"endpoint": None}, "endpoint"),
    ({"weight": 0}, "weight"),
    ({"weight": -1.0}, "weight"),
    ({"weight": float("inf")}, "weight"),
    ({"weight": float("nan")}, "weight"),
    ({"weight": True}, "weight"),
    ({"weight": "2"}, "weight"),
    ({"state": "paused"}, "state"),
    ({"state": "Active"}, "state"),
])
def test_each_broker_rule(kwargs: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {"id": "b1", "endpoint": "tcp://h:1"} | kwargs
    with pytest.raises(ValueError, match=key):
        BrokerEntry(**args)


def test_broker_ids_may_use_letters_digits_dot_dash_underscore() -> None:
    assert BrokerEntry("A.z-9_" + "x" * 58, "ipc://s").id.startswith("A.z-9_")


# ------------------------------------------------------------------ placement


def test_three_equal_brokers_share_a_thousand_names_evenly() -> None:
    for pct in share(spread(NAMES, cluster(1, 1, 1)), 1000).values():
        assert abs(pct - 100 / 3) <= 5


def test_four_equal_brokers_share_a_thousand_names_evenly() -> None:
    for pct in share(spread(NAMES, cluster(1, 1, 1, 1)), 1000).values():
        assert abs(pct - 25) <= 4


def test_a_new_broker_only_takes_names_and_takes_about_a_quarter() -> None:
    three, four = cluster(1, 1, 1), cluster(1, 1, 1, 1)
    moved = [n for n in NAMES if place(n, three) != place(n, four)]
    assert all(place(n, four) == "b4" for n in moved)
    assert abs(100 * len(moved) / 1000 - 25) <= 5


def test_a_draining_broker_gets_no_new_names_and_only_its_names_move() -> None:
    before, after = cluster(1, 1, 1, 1), cluster(1, 1, 1, 1, draining=[3])
    assert spread(NAMES, after)["b3"] == 0
    for n in NAMES:
        if place(n, before) != "b3":
            assert place(n, after) == place(n, before)
        else:
            assert place(n, after) in ("b1", "b2", "b4")


def test_weights_1_1_2_get_a_quarter_a_quarter_and_a_half() -> None:
    pct = share(spread([f"q{i}" for i in range(4000)], cluster(1, 1, 2)), 4000)
    assert abs(pct["b1"] - 25) <= 5
    assert abs(pct["b2"] - 25) <= 5
    assert abs(pct["b3"] - 50) <= 5


def test_pins_match_exact_names_and_prefixes_and_the_longest_wins() -> None:
    cfg = cluster(1, 1, 1, pins=(("billing.", "b1"), ("billing.eu.", "b2"), ("orders", "b3")))
    assert place("orders", cfg) == "b3"
    assert place("orders.dlq", cfg) == "b3"  # a key is a prefix too
    assert place("billing.us", cfg) == "b1"
    assert place("billing.eu.invoices", cfg) == "b2"
    assert place("billing.eu.", cfg) == "b2"
    assert place("billing", cfg) == place("billing", cluster(1, 1, 1))  # no pin matches
    assert cfg.placement("billing.eu.x") == "b2"


def test_a_pin_to_a_draining_broker_is_honoured() -> None:
    cfg = cluster(1, 1, draining=[2], pins=(("audit", "b2"),))
    assert place("audit.log", cfg) == "b2"
    assert place("other", cfg) == "b1"


def test_pin_order_does_not_matter() -> None:
    pins = (("a", "b1"), ("ab", "b2"), ("abc", "b3"))
    assert {place("abcd", cluster(1, 1, 1, pins=p)) for p in (pins, pins[::-1])} == {"b3"}


def test_placement_is_pinned_down_so_a_changed_hash_is_caught() -> None:
    cfg = cluster(1, 1, 1)
    assert [place(n, cfg) for n in ("orders", "billing.invoices", "q0")] == ["b1", "b2", "b3"]
    assert spread(NAMES, cfg) == {"b1": 301, "b2": 361, "b3": 338}


def test_placement_does_not_depend_on_broker_order() -> None:
    cfg = cluster(1, 2, 3)
    flipped = dataclasses.replace(cfg, brokers=cfg.brokers[::-1])
    assert all(place(n, cfg) == place(n, flipped) for n in NAMES)


def test_draws_are_strictly_between_0_and_1() -> None:
    for n in NAMES[:100]:
        assert 0.0 < placement_mod.draw("b1", n) < 1.0


def test_spread_lists_every_broker() -> None:
    assert spread([], cluster(1, 1, draining=[2])) == {"b1": 0, "b2": 0}


@st.composite
def clusters(draw: st.DrawFn) -> ClusterConfig:
    ids = draw(st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
                        min_size=1, max_size=8, unique=True))
    active = draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))
    active[draw(st.integers(0, len(ids) - 1))] = True
    weights = draw(st.lists(st.floats(1e-3, 1e3), min_size=len(ids), max_size=len(ids)))
    brokers = tuple(BrokerEntry(i, f"tcp://h:{n}", w, "active" if a else "draining")
                    for n, (i, w, a) in enumerate(zip(ids, weights, active, strict=True)))
    keys = draw(st.lists(st.text(min_size=1, max_size=4), max_size=4, unique=True))
    pins = tuple((k, draw(st.sampled_from(ids))) for k in keys)
    return ClusterConfig("c", 1, brokers, pins)


@given(cfg=clusters(), name=st.text(max_size=12))
def test_place_returns_an_active_broker_or_the_longest_pin(cfg: ClusterConfig,
                                                           name: str) -> None:
    got = place(name, cfg)
    matching = [(k, t) for k, t in cfg.pins if name.startswith(k)]
    if matching:
        assert got == max(matching, key=lambda p: len(p[0]))[1]
    else:
        entry = cfg.broker(got)
        assert entry is not None
        assert entry.active


# ------------------------------------------------------------------ fingerprint


def test_the_same_content_has_the_same_fingerprint(tmp_path: Path) -> None:
    a = load(write(tmp_path, EXAMPLE))
    assert a.fingerprint() == ClusterConfig.from_dict(a.to_dict()).fingerprint()
    reordered = dataclasses.replace(a, brokers=a.brokers[::-1], pins=a.pins[::-1])
    assert reordered.fingerprint() == a.fingerprint()
    assert len(a.fingerprint()) == 16
    int(a.fingerprint(), 16)


def test_the_fingerprint_is_stable_across_processes() -> None:
    assert cluster(1, 1, 1).fingerprint() == "e85a7988a0bed2d6"


@pytest.mark.parametrize("change", [
    lambda c: dataclasses.replace(c, brokers=(dataclasses.replace(c.brokers[0], weight=2.0),
                                                     *c.brokers[1:])),
    lambda c: dataclasses.replace(c, version=2),
    lambda c: dataclasses.replace(c, cluster_id="other"),
    lambda c: dataclasses.replace(c, pins=(("x", "b1"),)),
    lambda c: cluster(1, 1, 1, draining=[1]),
])
def test_a_change_changes_the_fingerprint(change: Any) -> None:
    cfg = cluster(1, 1, 1)
    assert change(cfg).fingerprint() != cfg.fingerprint()


# ------------------------------------------------------------------ purity


def test_importing_zq_cluster_loads_no_io_module() -> None:
    code = ("import sys, zq.cluster; print(','.join(m for m in "
            "('asyncio', 'zmq', 'aiosqlite', 'sqlite3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == ""
