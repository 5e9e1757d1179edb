"""CURVE key files: make a key pair, read a public key, a secret pair, a folder of keys.

The files are pyzmq's (and czmq's) certificate format, read with
:func:`zmq.auth.load_certificate`: ``NAME.key`` holds the public key and may be given
to anyone; ``NAME.key_secret`` holds the public and the secret key and must stay
private (mode 0600). Keys are Z85 text, 40 characters for 32 bytes.

The files are written here, not with :func:`zmq.auth.create_certificates`: that opens
the secret file with a plain ``open(..., "w")``, so it is made with the process's
umask (0644 under the usual 022) and is readable by everyone until a later chmod, and
it overwrites what is there. Here the secret file is created with mode 0600 from the
start, and an existing file is refused unless ``force``.

Every error is a :class:`ValueError` whose message names the file.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import struct
from datetime import datetime
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
KEY_LENGTH = 40  # Z85 characters of a 32-byte CURVE key
MAX_NAME = 100
MAX_KEY_FILE = 64 * 1024  # a certificate is a few hundred bytes; more is not a key file

# Not starting with "." (a hidden file, "..") nor "-" (read as an option by cp, rm, ...).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

_PUBLIC_BANNER = """\
#   ****  Generated on {now} by zq  ****
#   ZeroMQ CURVE Public Certificate
#   Give this file to the peers that must accept (or reach) this key.

metadata
curve
    public-key = "{public}"
"""

_SECRET_BANNER = """\
#   ****  Generated on {now} by zq  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

metadata
curve
    public-key = "{public}"
    secret-key = "{secret}"
"""


class KeyFileExists(ValueError):
    """:func:`generate` would overwrite a key file (and ``force`` was not given)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists; not overwriting it")
        self.path = path


def check_name(name: str) -> str:
    """``name`` if it is a plain file name for a key pair, else a ValueError."""
    if len(name) > MAX_NAME:
        raise ValueError(f"key name {name!r} is longer than {MAX_NAME} characters")
    if not _NAME.fullmatch(name):
        raise ValueError(f"key name {name!r} must be letters, digits, '-', '_' and '.', "
                         "not starting with '.' or '-'")
    return name


def generate(name: str, directory: str | Path, *, force: bool = False) -> tuple[Path, Path]:
    """Make a CURVE key pair as ``DIRECTORY/NAME.key`` and ``DIRECTORY/NAME.key_secret``.

    The folder is made (mode 0700) if missing. The secret file is created with mode
    0600, never wider even for a moment. An existing file of either name is refused
    (:class:`KeyFileExists`) unless ``force``, which replaces both. Returns the paths
    (public, secret).
    """
    check_name(name)
    folder = Path(directory)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{folder}: cannot make the key folder: {_reason(exc)}") from None
    public_path = folder / (name + PUBLIC_SUFFIX)
    secret_path = folder / (name + SECRET_SUFFIX)
    if not force:
        for path in (public_path, secret_path):
            if path.exists() or path.is_symlink():
                raise KeyFileExists(path)
    public, secret = zmq.curve_keypair()
    now = datetime.now().replace(microsecond=0)
    texts = {
        secret_path: (_SECRET_BANNER.format(now=now, public=public.decode(),
                                            secret=secret.decode()), 0o600),
        public_path: (_PUBLIC_BANNER.format(now=now, public=public.decode()), 0o644),
    }
    written: list[Path] = []
    try:
        for path, (text, mode) in texts.items():  # the secret first: no orphan public key
            if force:
                _replace(path, text, mode)
            else:
                _write_new(path, text, mode)
            written.append(path)
    except BaseException:
        if not force:  # what this call created; force has already replaced the old pair
            for path in written:
                path.unlink(missing_ok=True)
        raise
    return public_path, secret_path


def public_key(path: str | Path) -> bytes:
    """The Z85 public key of a ``.key`` or ``.key_secret`` file."""
    return _load(Path(path))[0]


def secret_pair(path: str | Path) -> tuple[bytes, bytes]:
    """The Z85 (public, secret) keys of a ``.key_secret`` file.

    Refused, as ssh refuses a private key, if the file may be read or written by its
    group or others: the secret would already be known to them.
    """
    p = Path(path)
    public, secret = _load(p)
    if secret is None:
        raise ValueError(f"{p} holds no secret key (a public {PUBLIC_SUFFIX} file?); "
                         f"give the {SECRET_SUFFIX} file")
    if os.name == "posix":  # Windows has no group/other mode bits to check
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise ValueError(f"{p}: permissions {mode:04o} are too open for a secret key "
                             f"file; it must be private to its owner: chmod 600 {p}")
    return public, secret


def server_key(value: str | Path) -> bytes:
    """The Z85 public key of a server: from a ``.key`` file, or given as the 40 Z85
    characters themselves.

    A string is read as a key only if it is 40 Z85 characters, does not end in ``.key``
    or ``.key_secret`` and names no existing file; a :class:`~pathlib.Path` is always
    a file.
    """
    if (isinstance(value, str) and len(value) == KEY_LENGTH and value.isascii()
            and all(ord(c) in z85.Z85CHARS for c in value)
            and not value.endswith((PUBLIC_SUFFIX, SECRET_SUFFIX))
            and not Path(value).exists()):
        key = value.encode("ascii")
        _check_key(key, f"server key {value!r}", "key")
        return key
    return public_key(value)


def key_names(directory: str | Path) -> dict[bytes, str]:
    """The authorized keys of a folder: each ``*.key`` file's Z85 public key mapped to
    its name (the file name without ``.key``).

    Other files (``.key_secret`` files among them) and hidden files are ignored. A
    ``.key`` file that cannot be read, holds a secret key, or repeats another file's
    key is a ValueError naming it.
    """
    folder = Path(directory)
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ValueError(f"{folder}: cannot list the key folder: {_reason(exc)}") from None
    names: dict[bytes, str] = {}
    for path in entries:
        if path.suffix != PUBLIC_SUFFIX or path.name.startswith(".") or not path.is_file():
            continue
        public, secret = _load(path)
        if secret is not None:
            raise ValueError(f"{path} holds a secret key; an authorized key file must hold "
                             "only the public key (the .key file of a pair)")
        name = path.name[:-len(PUBLIC_SUFFIX)]
        if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise ValueError(f"{path}: a key's name (the file name without .key) is 1 to "
                             f"{MAX_NAME} letters, digits, '_', '.' and '-', not starting "
                             f"with '-' or '.'")
        if public in names:
            raise ValueError(f"{path} holds the same key as "
                             f"{folder / (names[public] + PUBLIC_SUFFIX)}")
        names[public] = name
    return names


def _load(path: Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) of a key file, both checked to be Z85 CURVE keys."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read key file: {_reason(exc)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path}: not a key file (not a regular file)")
    if info.st_size > MAX_KEY_FILE:
        raise ValueError(f"{path}: not a key file ({info.st_size} bytes)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read key file: {_reason(exc)}") from None
    except (ValueError, IndexError):  # no public-key line; a key line without "="
        raise ValueError(f"{path}: not a CURVE key file (no public-key line)") from None
    _check_key(public, str(path), "public key")
    if secret is not None:
        _check_key(secret, str(path), "secret key")
        if zmq.curve_public(secret) != public:
            raise ValueError(f"{path}: the secret key does not belong to the public key")
    return public, secret


def _check_key(key: bytes, where: str, what: str) -> None:
    if len(key) == KEY_LENGTH and all(c in z85.Z85CHARS for c in key):
        try:
            if len(z85.decode(key)) == 32:
                return
        except (ValueError, struct.error):  # a group of 5 beyond 2**32
            pass
    raise ValueError(f"{where}: bad {what}: not {KEY_LENGTH} Z85 characters of a CURVE key")


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode`` (less the umask) from the first byte; refuse if it
    exists (a symbolic link included)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileExists(path) from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot write key file: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ValueError(f"{path}: cannot write key file: {_reason(exc)}") from None


def _replace(path: Path, text: str, mode: int) -> None:
    """Write a new file beside ``path`` and rename it over ``path``: the old file's mode
    (a 0644 secret, say) is not kept, and no reader sees half a key."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _write_new(tmp, text, mode)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{path}: cannot replace key file: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
