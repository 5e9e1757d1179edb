"""The shop's e-mail templates, rendered with :class:`string.Template`."""

from __future__ import annotations

from string import Template
from typing import Any

TEMPLATES: dict[str, tuple[str, str]] = {
    "welcome": (
        "Welcome to the shop, $name!",
        "Hello $name,\n\nthanks for signing up. Your account $email is ready.\n\n"
        "-- The shop team\n",
    ),
    "order_shipped": (
        "Your order $order is on its way",
        "Hello $name,\n\norder $order left our warehouse today; it should arrive "
        "within $days days.\n\n-- The shop team\n",
    ),
    "digest": (
        "Mailer digest: $count mails in the outbox",
        "The outbox holds $count mails; the latest went to $latest.\n",
    ),
}


class UnknownTemplate(Exception):
    pass


def render(template: str, context: dict[str, Any]) -> tuple[str, str]:
    """``(subject, text)`` of ``template`` filled in from ``context``."""
    try:
        subject, text = TEMPLATES[template]
    except KeyError:
        raise UnknownTemplate(f"no template named {template!r}") from None
    return Template(subject).substitute(context), Template(text).substitute(context)
