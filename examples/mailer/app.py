"""The mailer app: three tasks that render and send the shop's e-mails.

* ``render`` fills in a template. A plain function: the worker runs it in its
  thread pool.
* ``send`` hands a mail to the relay (a fake one, see ``sender.py``). The relay
  is sometimes busy; the task then raises and the worker retries it with
  exponential backoff (0.2 s, 0.4 s, 0.8 s). A mailbox that does not exist
  fails every attempt, and after the fourth the task is dead: the producer's
  ``result()`` raises ``zq.TaskFailed`` with the worker's traceback. (Now and
  then a busy relay refuses all four attempts too: retries are not forever.)
* ``digest`` reports on the outbox to the operators. The schedule in
  ``schedule.py`` runs it periodically; it queues a ``send`` itself.

Run a worker for it from the repository root::

    zq worker examples.mailer.app:app --concurrency 4

The endpoint comes from ``$ZQ_ENDPOINT``, else ``tcp://127.0.0.1:5555``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zq
from examples.mailer import sender, templates

app = zq.App(name="mailer")

OPERATORS = "ops@shop.example"


@app.task(queue="mail.render")
def render(template: str, to: str, context: dict[str, Any]) -> dict[str, str]:
    """The mail ``template`` for ``to``: ``{"to", "subject", "text"}``."""
    subject, text = templates.render(template, context)
    return {"to": to, "subject": subject, "text": text}


@app.task(queue="mail.send", max_attempts=4, retry=zq.Retry("exponential", base=0.2, cap=5.0))
async def send(to: str, subject: str, text: str) -> str:
    """Send one mail; return its Message-ID. A busy relay raises and is retried."""
    return await asyncio.to_thread(sender.send, to, subject, text)


@app.task(queue="mail.render")
async def digest() -> int:
    """Mail the operators how many mails the outbox holds; return that number."""
    mails = sender.sent()
    latest = mails[-1].name.split("-", 1)[1].removesuffix(".eml").replace("_at_", "@") \
        if mails else "nobody"
    subject, text = templates.render("digest", {"count": len(mails), "latest": latest})
    await send.delay(OPERATORS, subject, text)
    return len(mails)
