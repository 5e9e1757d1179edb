"""CURVE key files (zq.security.keys) and ``zq keys generate|show``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner, Result

from zq.cli import main
from zq.security.keys import (
    KeyFileExists,
    generate,
    key_names,
    public_key,
    secret_pair,
    server_key,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def zq(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["keys", *map(str, args)])


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: files get exactly the mode they are created with."""
    old = os.umask(0)
    yield
    os.umask(old)


# --- generate ---------------------------------------------------------------------


def test_generate_writes_a_loadable_pair_with_private_secret(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "keys"
    result = zq("generate", "alice", "--dir", folder)
    assert result.exit_code == 0, result.output
    pub, sec = folder / "alice.key", folder / "alice.key_secret"
    public, none = zmq.auth.load_certificate(pub)
    public2, secret = zmq.auth.load_certificate(sec)
    assert none is None
    assert secret is not None
    assert public == public2
    assert zmq.curve_public(secret) == public
    assert mode(sec) == 0o600
    assert mode(folder) & 0o077 == 0
    assert str(pub) in result.output
    assert str(sec) in result.output
    assert public.decode() in result.output
    assert secret.decode() not in result.output


def test_the_secret_file_is_never_wider_than_0600_whatever_the_umask(
        tmp_path: Path, umask_zero: None) -> None:
    """zmq.auth.create_certificates would make it 0666 here (a plain open())."""
    pub, sec = generate("srv", tmp_path)
    assert mode(sec) == 0o600
    assert mode(pub) == 0o644


def test_dir_defaults_to_the_current_folder(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert zq("generate", "here").exit_code == 0
    assert {p.name for p in tmp_path.iterdir()} == {"here.key", "here.key_secret"}


@pytest.mark.parametrize("existing", ["bob.key", "bob.key_secret"])
def test_generate_refuses_to_overwrite_either_file(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("mine")
    with pytest.raises(KeyFileExists, match=existing):
        generate("bob", tmp_path)
    result = zq("generate", "bob", "--dir", tmp_path)
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert "--force" in result.output
    assert [p.name for p in tmp_path.iterdir()] == [existing]  # nothing written
    assert (tmp_path / existing).read_text() == "mine"


def test_force_replaces_the_pair_and_an_open_secret_file_comes_back_private(
        tmp_path: Path) -> None:
    old_pub, old_sec = generate("carol", tmp_path)
    old_key = public_key(old_pub)
    old_sec.chmod(0o644)
    result = zq("generate", "carol", "--dir", tmp_path, "--force")
    assert result.exit_code == 0, result.output
    new_key = public_key(old_pub)
    assert new_key != old_key
    assert secret_pair(old_sec)[0] == new_key
    assert mode(old_sec) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carol.key", "carol.key_secret"]


@pytest.mark.parametrize("name", ["", ".hidden", "..", "a/b", "../up", "a b", "tab\tname",
                                  "new\nline", "caf\u00e9", "x" * 101, "back\\slash", "-x"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        generate(name, tmp_path)
    result = zq("generate", "--dir", tmp_path, "--", name)
    assert result.exit_code == 2
    assert "Invalid value for 'NAME'" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["a", "web-1", "svc_2.prod", "_x", "0", "A" * 100])
def test_plain_names_are_taken(tmp_path: Path, name: str) -> None:
    pub, sec = generate(name, tmp_path)
    assert (pub.name, sec.name) == (f"{name}.key", f"{name}.key_secret")


# --- show ---------------------------------------------------------------------------


def test_show_prints_the_public_key_of_either_file(tmp_path: Path) -> None:
    pub, sec = generate("dave", tmp_path)
    key = zmq.auth.load_certificate(pub)[0].decode()
    for path in (pub, sec):
        result = zq("show", path)
        assert result.exit_code == 0, result.output
        assert result.stdout == key + "\n"
        assert len(key) == 40


@pytest.mark.parametrize(("content", "why"), [
    (None, "No such file"),
    (b"", "no public-key line"),
    (b"\x00\xff garbage \x89PNG\r\n", "no public-key line"),
    (b"curve\n    public-key\n", "no public-key line"),
    (b'curve\n    public-key = "short"\n', "bad public key"),
    (b'curve\n    public-key = "' + b"#" * 40 + b'"\n', "bad public key"),
    (b'curve\n    public-key = "' + b"~" * 40 + b'"\n', "bad public key"),
    (b"x" * 100_000, "not a key file"),
])
def test_show_on_a_missing_or_garbled_file_is_one_line_and_exit_1(
        tmp_path: Path, content: bytes | None, why: str) -> None:
    path = tmp_path / "bad.key"
    if content is not None:
        path.write_bytes(content)
    result = zq("show", path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert str(path) in result.stderr
    assert why in result.stderr
    assert "Traceback" not in result.output


def test_show_on_a_folder_is_an_error(tmp_path: Path) -> None:
    result = zq("show", tmp_path)
    assert result.exit_code == 1
    assert "not a regular file" in result.stderr


def test_a_secret_file_whose_keys_do_not_match_is_refused(tmp_path: Path) -> None:
    pub, sec = generate("eve", tmp_path)
    other, _ = generate("other", tmp_path)
    text = sec.read_text().replace(public_key(pub).decode(), public_key(other).decode())
    sec.write_text(text)
    with pytest.raises(ValueError, match="does not belong"):
        secret_pair(sec)
    assert zq("show", sec).exit_code == 1


# --- secret_pair, server_key --------------------------------------------------------


def test_secret_pair_reads_both_keys(tmp_path: Path) -> None:
    pub, sec = generate("frank", tmp_path)
    public, secret = secret_pair(sec)
    assert public == public_key(pub)
    assert zmq.curve_public(secret) == public


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_secret_pair_refuses_a_file_others_may_read(tmp_path: Path, bad_mode: int) -> None:
    _, sec = generate("gina", tmp_path)
    sec.chmod(bad_mode)
    with pytest.raises(ValueError, match=rf"{bad_mode:04o}.*chmod 600 .*gina\.key_secret"):
        secret_pair(sec)


def test_secret_pair_refuses_a_public_file(tmp_path: Path) -> None:
    pub, _ = generate("hal", tmp_path)
    with pytest.raises(ValueError, match=r"hal\.key holds no secret key"):
        secret_pair(pub)


def test_server_key_from_a_file_or_given_directly(tmp_path: Path) -> None:
    pub, _ = generate("broker", tmp_path)
    key = public_key(pub)
    assert server_key(pub) == key
    assert server_key(str(pub)) == key
    assert server_key(key.decode()) == key
    with pytest.raises(ValueError, match="bad key"):
        server_key("#" * 40)  # Z85 characters, but beyond 32 bytes
    with pytest.raises(ValueError, match="No such file"):
        server_key(str(tmp_path / "missing.key"))


# --- key_names ----------------------------------------------------------------------


def test_key_names_maps_each_public_key_to_its_name(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    a, _ = generate("alice", keys)
    b, _ = generate("bob.web", keys)
    (keys / "README").write_text("not a key")
    (keys / ".alice.key.swp").write_text("editor junk")
    (keys / ".hidden.key").write_text("hidden, ignored")
    (keys / "sub.key").mkdir()
    assert key_names(keys) == {public_key(a): "alice", public_key(b): "bob.web"}


def test_key_names_of_an_empty_or_missing_folder(tmp_path: Path) -> None:
    assert key_names(tmp_path) == {}
    with pytest.raises(ValueError, match="missing"):
        key_names(tmp_path / "missing")


def test_key_names_rejects_a_key_given_twice(tmp_path: Path) -> None:
    a, _ = generate("alice", tmp_path)
    (tmp_path / "alice2.key").write_bytes(a.read_bytes())
    with pytest.raises(ValueError, match=r"alice2\.key holds the same key as .*alice\.key"):
        key_names(tmp_path)


def test_key_names_names_a_bad_file(tmp_path: Path) -> None:
    generate("alice", tmp_path)
    (tmp_path / "broken.key").write_text("hello")
    with pytest.raises(ValueError, match=r"broken\.key"):
        key_names(tmp_path)


def test_key_names_rejects_a_secret_in_a_public_file(tmp_path: Path) -> None:
    _, sec = generate("alice", tmp_path / "src")
    (tmp_path / "leak.key").write_bytes(sec.read_bytes())
    with pytest.raises(ValueError, match=r"leak\.key holds a secret key"):
        key_names(tmp_path)


# --- the keys work --------------------------------------------------------------------


def test_a_generated_pair_makes_a_curve_handshake(tmp_path: Path) -> None:
    _, server_sec = generate("server", tmp_path)
    _, client_sec = generate("client", tmp_path)
    server_public, server_secret = secret_pair(server_sec)
    client_public, client_secret = secret_pair(client_sec)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    try:
        router.curve_server = True
        router.curve_publickey = server_public
        router.curve_secretkey = server_secret
        router.bind("tcp://127.0.0.1:*")
        endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        dealer.curve_serverkey = server_key(tmp_path / "server.key")
        dealer.curve_publickey = client_public
        dealer.curve_secretkey = client_secret
        dealer.connect(endpoint)
        dealer.send(b"hello")
        assert router.poll(10_000), "no message through the CURVE handshake"
        peer, body = router.recv_multipart()
        assert body == b"hello"
        router.send_multipart([peer, b"welcome"])
        assert dealer.poll(10_000)
        assert dealer.recv() == b"welcome"
    finally:
        dealer.close(linger=0)
        router.close(linger=0)
        ctx.term()
