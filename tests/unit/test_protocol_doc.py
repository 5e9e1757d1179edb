"""docs/PROTOCOL.md is normative: its frame and error tables must match the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from zq import core, errors, history
from zq.config import BrokerConfig
from zq.core import _FATAL
from zq.errors import InvalidArgument, ProtocolViolation, SessionUnknown, ZqError
from zq.manage import manage, moves
from zq.manage import queues as admin
from zq.policies import make_dispatch
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.session import State, next_state
from zq.settings import FIELDS, QueueSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
FRAME_HEADER = "| Frame | Opcode | Direction | Header (msgpack) | Bodies |"
ERROR_HEADER = "| Code | Name | Retriable | Meaning |"
SESSION_HEADER = "| State | Frame received | Result |"
OPTION_HEADER = "| Option | Type | Range | Meaning |"
SETTING_HEADER = "| Setting | Default | Meaning |"
OPERATION_HEADER = "| Operation | Arguments | Result |"

# One representative instance of every frame, by the spec's name.
SAMPLES: dict[str, f.Frame] = {
    "HELLO": f.Hello("worker-1", 500, starts=True, producer=b"p" * 16,
                     link={"cluster": "demo", "version": 2, "router": "r1"}, user="alice"),
    "WELCOME": f.Welcome("b-1", 1000, 3, 1000, 100_000, 64 * 1024 * 1024, starts=True,
                         cluster={"id": "demo", "version": 2, "node": "b1", "role": "broker"}),
    "HEARTBEAT": f.Heartbeat(),
    "BYE": f.Bye("done"),
    "PUBLISH": f.Publish("jobs", 7, [b"a", b"", b"c"], [{"k": "v"}, None, {"n": 1}],
                         f.Options(priority=2, tenant="acme")),
    "CONFIRM": f.Confirm([(7, 1, 3), (8, 4, 1)]),
    "CREDIT": f.Credit("jobs", 10),
    "CANCEL": f.Cancel("jobs"),
    "DELIVER": f.Deliver("jobs", [1, 2], [1, 3], [b"x", b"y"], [None, {"trace": b"\x00"}]),
    "ACK": f.Ack([1, 2], [1, 1]),
    "NACK": f.Nack([3], [2], False, 250, "bad input"),
    "RELEASE": f.Release([4, 5]),
    "EXTEND": f.Extend([4, 5], [1, 2], 30_000),
    "START": f.Start([4, 5], [1, 2]),
    "STATS": f.Stats(42),
    "STATS_REPLY": f.StatsReply(42, {"broker": "b-1", "counters": {"published": 3}}),
    "MANAGE": f.Manage(43, "declare", {"queue": "jobs", "settings": {"max_length": 10}}),
    "MANAGE_REPLY": f.ManageReply(43, {"queue": "jobs", "created": True}),
    "ERROR": f.Error(22, "MOVED", "held elsewhere", f.PUBLISH, 7,
                     {"queue": "jobs", "broker": "b2", "endpoint": "tcp://h:1", "version": 2}),
    "LOCATE": f.Locate(44, "jobs"),
    "LOCATION": f.Location(44, {"queue": "jobs", "broker": "b2", "endpoint": "tcp://h:1",
                                "version": 2, "exists": True}),
    "FORWARD": f.Forward(b"zq-client", codec.encode(f.Publish("jobs", 9, [b"a"]))),
    "CATALOG": f.Catalog(1, "snapshot", ["jobs", "mail"]),
}
# Frames whose OPTIONAL trailing header elements may be left out: the shorter form.
SHORT_SAMPLES: dict[str, f.Frame] = {
    "PUBLISH": f.Publish("jobs", 8, [b"a"]),
}


def table(header: str) -> list[list[str]]:
    """The rows of the one table in the doc whose header line is ``header``."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    assert len(starts) == 1, f"expected exactly one table headed {header!r} in {DOC}"
    rows: list[list[str]] = []
    for line in lines[starts[0] + 2:]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("`").strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == header.count("|") - 1, f"bad row: {line!r}"
        rows.append(cells)
    assert rows, f"table {header!r} has no rows"
    return rows


@pytest.fixture(scope="module")
def frame_rows() -> dict[str, list[str]]:
    rows = table(FRAME_HEADER)
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), f"duplicate rows: {names}"
    return {r[0]: r for r in rows}


def test_frame_table_lists_every_frame_once(frame_rows: dict[str, list[str]]) -> None:
    assert set(frame_rows) == set(f.NAMES.values())
    assert set(SAMPLES) == set(f.NAMES.values())


def test_frame_table_opcodes_match_code(frame_rows: dict[str, list[str]]) -> None:
    by_name = {name: op for op, name in f.NAMES.items()}
    for name, row in frame_rows.items():
        assert re.fullmatch(r"0x[0-9A-Fa-f]{2}", row[1]), f"{name}: opcode {row[1]!r}"
        assert int(row[1], 16) == by_name[name], name
        assert f.OPCODES[type(SAMPLES[name])] == by_name[name], name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_frame_round_trips(name: str) -> None:
    frame = SAMPLES[name]
    parts = codec.encode(frame)
    assert parts[0] == b"ZQ" + bytes((f.VERSION, f.OPCODES[type(frame)]))
    assert codec.decode(parts) == frame


def test_direction_column_agrees_with_session_table(frame_rows: dict[str, list[str]]) -> None:
    """C→B and both: a broker accepts the frame in some state; B→C: it never does."""
    for name, row in frame_rows.items():
        op = f.OPCODES[type(SAMPLES[name])]
        accepted = []
        for state in (State.NEW, State.READY):
            try:
                next_state(state, op)
            except ProtocolViolation:
                accepted.append(False)
            except ZqError:  # SESSION_UNKNOWN: allowed once a session exists
                accepted.append(True)
            else:
                accepted.append(True)
        assert row[2] in ("C→B", "B→C", "both"), f"{name}: direction {row[2]!r}"
        assert any(accepted) == (row[2] != "B→C"), f"{name}: {row[2]} vs session table"


def _split_top(inner: str) -> list[str]:
    """Split ``a: x, b: [y, z]`` at the commas that are not nested."""
    out, depth, cur = [], 0, ""
    for ch in inner:
        if ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def _doc_shape(cell: str) -> tuple[str, Any]:
    if cell == "nil":
        return ("nil", None)
    if cell.startswith("{") and cell.endswith("}"):
        return ("map", {item.split(":")[0].strip() for item in _split_top(cell[1:-1])})
    if cell.startswith("array of [") and cell.endswith("]"):
        return ("array of arrays", len(_split_top(cell[len("array of ["):-1])))
    if cell.startswith("[") and cell.endswith("]"):
        items = _split_top(cell[1:-1])
        names = [item.split(":")[0].strip() for item in items]
        optional = [n.endswith("?") for n in names]
        first = optional.index(True) if any(optional) else len(items)
        assert all(optional[first:]), f"only trailing elements may be optional: {cell!r}"
        return ("array", (first, len(items)))
    raise AssertionError(f"cannot read header layout {cell!r}")


def test_header_column_matches_what_the_codec_encodes(
        frame_rows: dict[str, list[str]]) -> None:
    samples = [(name, SAMPLES[name]) for name in frame_rows]
    samples += list(SHORT_SAMPLES.items())
    for name, sample in samples:
        if name == "FORWARD":  # no header of its own: it carries a whole frame
            continue
        row = frame_rows[name]
        parts = codec.encode(sample)
        header_part = parts[2] if name in ("PUBLISH", "DELIVER") else parts[1]
        header = msgpack.unpackb(header_part, raw=False)
        kind, detail = _doc_shape(row[3])
        if kind == "nil":
            assert header is None, name
        elif kind == "map":
            assert isinstance(header, dict), name
            assert set(header) == detail, name
        elif kind == "array of arrays":
            assert isinstance(header, list), name
            assert header, name
            assert all(isinstance(e, list) and len(e) == detail for e in header), name
        else:
            assert isinstance(header, list), name
            least, most = detail
            full = sample is SAMPLES[name]
            assert len(header) == (most if full else least), name


def test_bodies_column_matches_part_layout(frame_rows: dict[str, list[str]]) -> None:
    for name, row in frame_rows.items():
        parts = codec.encode(SAMPLES[name])
        if row[4] == "none":
            assert len(parts) == 2, name
        elif name == "MANAGE":  # none, but move_in's bodies (section 17.5)
            assert row[4].startswith("none (`move_in`: bodies"), name
            assert len(parts) == 2, name
            moving = f.Manage(1, "move_in", {"queue": "q"}, [b"a", b"b"])
            assert codec.encode(moving)[2:] == [b"a", b"b"]
            assert codec.decode(codec.encode(moving)) == moving
        elif name == "FORWARD":
            fwd = SAMPLES[name]
            assert parts[1:] == [fwd.key, *fwd.parts]  # type: ignore[union-attr]
        else:
            assert name in ("PUBLISH", "DELIVER"), name
            assert "queue" in row[4], name
            assert parts[1] == SAMPLES[name].queue.encode()  # type: ignore[union-attr]
            assert parts[3:] == SAMPLES[name].bodies  # type: ignore[union-attr]


def test_error_table_matches_error_classes() -> None:
    rows = table(ERROR_HEADER)
    doc = []
    for code, name, retriable, meaning in rows:
        assert retriable in ("yes", "no"), f"{name}: retriable {retriable!r}"
        assert meaning, name
        doc.append((int(code), name, retriable == "yes"))
    assert doc == [(c.code, c.name, c.retriable) for c in errors.all_error_classes()]


def test_fatal_errors_named_in_the_doc_are_the_brokers() -> None:
    text = DOC.read_text(encoding="utf-8")
    para = next(p for p in text.split("\n\n") if p.startswith("**Fatal errors.**"))
    named = set(re.findall(r"\b[A-Z]+(?:_[A-Z]+)+\b", para))
    assert named == set(_FATAL)


def test_optional_publish_options_are_documented_and_decoded(
        frame_rows: dict[str, list[str]]) -> None:
    assert _doc_shape(frame_rows["PUBLISH"][3]) == ("array", (2, 3))
    for sample in (SAMPLES["PUBLISH"], SHORT_SAMPLES["PUBLISH"]):
        assert codec.decode(codec.encode(sample)) == sample


# ------------------------------------------------------------------ session table


def _frames_in(cell: str) -> list[str]:
    return [name.strip() for name in cell.split(",")]


def test_session_table_matches_the_session_code() -> None:
    rows = table(SESSION_HEADER)
    by_name = {name: op for op, name in f.NAMES.items()}
    seen: dict[str, list[str]] = {"NEW": [], "READY": []}
    for state_name, frames, result in rows:
        state = State[state_name]
        for name in _frames_in(frames):
            seen[state_name].append(name)
            try:
                after = next_state(state, by_name[name])
            except SessionUnknown:
                assert "SESSION_UNKNOWN" in result, (state_name, name, result)
                assert result.startswith("ERROR"), (state_name, name, result)
            except ProtocolViolation:
                assert result.startswith("ERROR PROTOCOL_VIOLATION"), (state_name, name)
            else:
                assert result.startswith(after.name), (state_name, name, result)
    for state_name, names in seen.items():
        assert sorted(names) == sorted(f.NAMES.values()), state_name  # each frame once


def test_session_table_says_which_frames_are_fenced_without_a_session() -> None:
    """ACK, NACK and EXTEND without a session get STALE/UNKNOWN for their ids first."""
    fenced = [_frames_in(r[1]) for r in table(SESSION_HEADER)
              if r[0] == "NEW" and "STALE_DELIVERY" in r[2]]
    assert fenced == [["ACK", "NACK", "EXTEND"]]


# ------------------------------------------------------------------ options


def _bound(text: str) -> int:
    text = text.replace(",", "")
    if text == "C":
        return codec._MS_MAX
    if "^" in text:
        base, exp = text.split("^")
        return int(int(base) ** int(exp))
    return int(text)


def test_option_table_matches_the_codec() -> None:
    rows = table(OPTION_HEADER)
    assert [r[0] for r in rows] == list(f.OPTION_KEYS)
    text = DOC.read_text(encoding="utf-8")
    assert "`C` is 3,153,600,000,000" in text
    assert codec._MS_MAX == 3_153_600_000_000

    def decode(key: str, value: Any) -> f.Options | None:
        frame = codec.decode([codec.command(f.PUBLISH), b"q",
                              msgpack.packb([1, [], {key: value}]), b"b"])
        assert isinstance(frame, f.Publish)
        return frame.opts

    for key, kind, bounds, meaning in rows:
        assert meaning, key
        lo_text, hi_text = bounds.split(" ")[0].split("..")
        lo, hi = _bound(lo_text), _bound(hi_text)
        if kind == "uint":
            for ok in (lo, hi):
                assert getattr(decode(key, ok), key) == ok, (key, ok)
            for bad in (lo - 1, hi + 1, str(lo)):
                with pytest.raises(InvalidArgument):
                    decode(key, bad)
        else:
            assert kind == "str", key
            assert bounds.endswith("octets"), key
            for text_ok in ("x" * lo, "x" * hi):
                assert getattr(decode(key, text_ok), key) == text_ok, key
            for bad in ("x" * (hi + 1), *([""] if lo else []), 5):
                with pytest.raises(InvalidArgument):
                    decode(key, bad)


# ------------------------------------------------------------------ queues


def _default(cell: str) -> Any:
    if cell.startswith('"') and cell.endswith('"'):
        return cell[1:-1]
    if cell == "{}":
        return {}
    return float(cell)


def test_setting_table_matches_queue_settings() -> None:
    rows = table(SETTING_HEADER)
    assert [r[0] for r in rows] == list(FIELDS)
    defaults = QueueSettings().to_map()
    for name, default, meaning in rows:
        assert meaning, name
        assert _default(default) == defaults[name], name


def test_operation_table_matches_admin() -> None:
    """Every operation is documented, with the keys of the result it really returns."""
    rows = table(OPERATION_HEADER)
    assert [r[0] for r in rows] == list(admin.OPERATIONS)
    broker = core.BrokerCore(BrokerConfig(), make_dispatch("round-robin"), "b")
    for op, args, result in rows:
        admin.declare(broker, {"queue": "q"}, 0.0)  # again after delete
        kind, keys = _doc_shape(result)
        assert kind == "map", op
        call = {} if args.startswith("none") else {"queue": "q"}
        if not args.startswith("none"):
            assert args.startswith("queue"), op
        got = manage(broker, f.Manage(1, op, call), 0.0)
        assert set(got) == (keys - {""}), op


def test_broker_headers_are_the_documented_ones() -> None:
    text = DOC.read_text(encoding="utf-8")
    for header in (core.HISTORY, core.ORIGIN, core.REASON, core.DEAD_AT, history.OMITTED):
        assert f"`{header}`" in text, header
    assert "At most 50 entries" in text
    assert history.MAX_HISTORY == 50
    for outcome in ("nacked", "consumer lost", "time limit", "expired", "dropped"):
        assert f"`{outcome}`" in text, outcome


def test_move_operations_are_the_documented_ones() -> None:
    rows = table("| Operation | Sent to | Arguments | Result |")
    assert [r[0] for r in rows] == list(moves.OPERATIONS)


CONTROL_HEADER = "| Op | From | Fields | Meaning |"


def test_replication_control_table_matches_the_wire() -> None:
    """Section 18.1 lists every control op the nodes exchange, with its fields and
    types, as zq.ha.wire checks them."""
    from zq.ha.wire import OPS

    text = DOC.read_text(encoding="utf-8")
    start = text.index(CONTROL_HEADER)
    rows: dict[str, dict[str, str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        op, _, fields, _ = (c.strip() for c in line.strip("|").split("|"))
        rows[op] = dict(tuple(part.strip().split(": ")) for part in fields.split(","))
    assert rows == {op: {name: kind.__name__ for name, kind in fields.items()}
                    for op, fields in OPS.items()}
