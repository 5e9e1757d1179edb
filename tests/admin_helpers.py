"""Reading a real process's admin listener in tests: GET with a deadline, and
``/metrics`` parsed by prometheus-client's own parser into {(name, labels): value}."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10.0) as reply:
            return reply.status, dict(reply.headers.items()), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


async def get(url: str, headers: dict[str, str] | None = None
              ) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` in a thread (urllib blocks): status, headers, body."""
    return await asyncio.to_thread(_get, url, headers)


async def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    status, _, body = await get(url, headers)
    assert status == 200, f"GET {url}: {status} {body[:300]!r}"
    return json.loads(body)


async def scrape(base: str, headers: dict[str, str] | None = None) -> Samples:
    status, hdrs, body = await get(base + "/metrics", headers)
    assert status == 200, f"/metrics: {status} {body[:300]!r}"
    assert hdrs.get("Content-Type", "").startswith("text/plain; version=")
    out: Samples = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no series {name}{labels}; have " + ", ".join(
        sorted({n for n, _ in samples if n.startswith(name[:12])}))
    return samples[key]
