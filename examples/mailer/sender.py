"""A fake SMTP server: no network, mail lands as ``.eml`` files in an outbox folder.

Like a real relay it sometimes refuses for a moment (``TemporaryFailure``, as an
SMTP 451 reply), which the task retries, and it refuses some recipients for good
(``PermanentFailure``, as an SMTP 550 reply: any address at ``invalid.example``).

Settings come from the environment, so the worker and the producer agree:

* ``MAILER_OUTBOX``: the outbox folder (default ``./mailer-outbox``).
* ``MAILER_FAILURE_RATE``: the share of sends refused for a moment (default 0.3).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

SENDER = "Example Shop <noreply@shop.example>"


class TemporaryFailure(Exception):
    """451: try again later."""


class PermanentFailure(Exception):
    """550: this mailbox does not exist; retrying will not help."""


def outbox() -> Path:
    return Path(os.environ.get("MAILER_OUTBOX", "mailer-outbox"))


def failure_rate() -> float:
    return float(os.environ.get("MAILER_FAILURE_RATE", "0.3"))


def send(to: str, subject: str, text: str) -> str:
    """Deliver one mail to the outbox; return its Message-ID."""
    time.sleep(0.02)  # a relay's round trips
    if to.endswith("@invalid.example"):
        raise PermanentFailure(f"550 5.1.1 <{to}>: recipient address rejected")
    if random.random() < failure_rate():
        raise TemporaryFailure("451 4.3.0 mail server busy, try again later")
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@shop.example>"
    msg.set_content(text)
    folder = outbox()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time():.6f}-{to.replace('@', '_at_')}.eml"
    tmp = folder / f".{name}.tmp"  # written whole, then renamed: readers never see half a mail
    tmp.write_bytes(bytes(msg))
    tmp.rename(folder / name)
    return str(msg["Message-ID"])


def sent() -> list[Path]:
    """The mails in the outbox, oldest first."""
    folder = outbox()
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []
