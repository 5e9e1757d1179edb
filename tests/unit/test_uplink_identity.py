"""The edge's producer id file (zq.uplink.identity): kept across restarts, made anew when
the database went back in time past what was sent."""

from __future__ import annotations

from pathlib import Path

from zq.uplink.identity import ID_FILE, Identity


def test_the_same_id_across_restarts_and_the_highest_id_sent_kept(tmp_path: Path) -> None:
    a = Identity(str(tmp_path), "shop-7", next_id=1)
    assert a.producer == f"shop-7/{a.nonce}".encode()
    a.sent(120)
    a.sent(90)  # never goes down
    a.save(now=10.0)
    assert (tmp_path / ID_FILE).read_text().split() == [a.nonce, "120"]
    b = Identity(str(tmp_path), "shop-7", next_id=122)  # after a crash: ids went on
    assert b.producer == a.producer
    assert b.high == 120


def test_a_database_older_than_what_was_sent_gets_a_new_id(tmp_path: Path) -> None:
    a = Identity(str(tmp_path), "", next_id=1)
    a.sent(500)
    a.save(now=0.0, force=True)
    b = Identity(str(tmp_path), "", next_id=400)  # restored: id 400 would be given again
    assert b.nonce != a.nonce
    assert b.producer == b.nonce.encode()
    assert (tmp_path / ID_FILE).read_text().split() == [b.nonce, "0"]
    c = Identity(str(tmp_path), "", next_id=400)  # and it stays that one from then on
    assert c.nonce == b.nonce


def test_writes_at_most_once_a_second_unless_forced(tmp_path: Path) -> None:
    a = Identity(str(tmp_path), "", next_id=1)
    a.sent(10)
    a.save(now=100.0)
    a.sent(20)
    a.save(now=100.5)
    assert (tmp_path / ID_FILE).read_text().split()[1] == "10"
    a.save(now=100.6, force=True)
    assert (tmp_path / ID_FILE).read_text().split()[1] == "20"


def test_a_damaged_file_gives_a_new_id(tmp_path: Path) -> None:
    (tmp_path / ID_FILE).write_text("not hex at all\n")
    a = Identity(str(tmp_path), "", next_id=1)
    assert len(a.nonce) == 16
    assert (tmp_path / ID_FILE).read_text().split() == [a.nonce, "0"]
    (tmp_path / ID_FILE).write_bytes(b"\xff\xfe")
    assert Identity(str(tmp_path), "", next_id=1).nonce != a.nonce
