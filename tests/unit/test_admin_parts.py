"""The admin listener's parts without a broker: histograms and their quantiles, recent
windows, the settings' checks, the routes (503 while recovering), and the HTTP server
driven over a real loopback socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from zq.admin import settings
from zq.admin.http import AdminServer, Reply, Request, json_reply, literal_host
from zq.admin.routes import Routes
from zq.admin.windows import WINDOW_S, Recent
from zq.config import BrokerConfig
from zq.core.histogram import LATENCY_BOUNDS, Histogram, quantile


def test_histogram_weights_buckets_and_cumulative_counts() -> None:
    h = Histogram()
    h.observe(0.0003, 10)  # le 0.0005
    h.observe(0.002)  # le 0.0025
    h.observe(1000.0)  # past every bound: +Inf
    assert (h.count, round(h.sum, 6)) == (12, round(0.003 + 0.002 + 1000.0, 6))
    cum = dict(h.cumulative())
    assert (cum["0.00025"], cum["0.0005"], cum["0.0025"]) == (0, 10, 11)
    assert (cum["60.0"], cum["+Inf"]) == (11, 12)
    assert list(cum) == [repr(float(b)) for b in LATENCY_BOUNDS] + ["+Inf"]


def test_quantile_interpolates_within_the_bucket() -> None:
    bounds = (1.0, 2.0, 4.0)
    assert quantile(bounds, [0, 0, 0, 0], 0.99) is None
    assert quantile(bounds, [0, 10, 0, 0], 0.5) == pytest.approx(1.5)
    assert quantile(bounds, [90, 0, 10, 0], 0.99) == pytest.approx(2.0 + 2.0 * 9 / 10)
    assert quantile(bounds, [0, 0, 0, 5], 0.5) == 4.0  # +Inf: the last bound


def test_recent_quantiles_cover_the_last_window_only() -> None:
    h = Histogram()
    r = Recent(h)
    h.observe(5.0, 100)  # long ago: slow
    assert r.quantiles(0.0)["count"] == 100  # the first reading: all there is
    t = WINDOW_S * 3
    h.observe(0.001, 50)
    first = r.quantiles(t)  # base: the snapshot at 0 (the newest before the window)
    assert first["count"] == 50
    assert first["p99"] is not None
    assert first["p99"] <= 0.001
    later = r.quantiles(t + 2.0)  # base: the snapshot at t
    assert (later["count"], later["p99"]) == (0, None)


def _cfg(**kw: Any) -> BrokerConfig:
    return BrokerConfig(**kw)


def test_settings_checks() -> None:
    assert settings.address("9100") == ("127.0.0.1", 9100)
    assert settings.address("[::1]:0") == ("::1", 0)
    for bad in ("", "x", "127.0.0.1:", "1.2.3.4:70000", "a/b:1"):
        with pytest.raises(ValueError, match="must look like"):
            settings.address(bad)
    _cfg(admin_bind="127.0.0.1:9100")
    _cfg(admin_bind="localhost:9100")
    with pytest.raises(ValueError, match="not a loopback"):
        _cfg(admin_bind="0.0.0.0:9100")
    _cfg(admin_bind="0.0.0.0:9100", admin_token="/t")  # a token makes it acceptable
    with pytest.raises(ValueError, match="needs --admin-bind"):
        _cfg(admin_token="/t")


def test_read_token(tmp_path: Any) -> None:
    f = tmp_path / "t"
    f.write_text("a" * 16 + "\nignored\n")
    f.chmod(0o600)
    assert settings.read_token(str(f)) == "a" * 16
    f.write_text("\ufeff" + "b" * 16 + "\n", encoding="utf-8")  # a BOM is not the token's
    assert settings.read_token(str(f)) == "b" * 16
    for bad in ("short\n", "pässwörd-1234567890\n", "with space 0123456789\n"):
        f.write_text(bad, encoding="utf-8")
        with pytest.raises(ValueError, match="at least 16"):
            settings.read_token(str(f))
    f.write_text("a" * 16)
    f.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        settings.read_token(str(f))
    assert settings.read_token("") == ""


def test_literal_host() -> None:
    for ok in ("", "127.0.0.1", "127.0.0.1:9100", "localhost:9100", "LOCALHOST", "[::1]:9100",
               "10.0.0.5:80"):
        assert literal_host(ok), ok
    for bad in ("evil.example.com", "evil.example.com:9100", "127.0.0.1.nip.io:9100", "[x]"):
        assert not literal_host(bad), bad


def _routes(ready: list[bool]) -> Routes:
    async def metrics() -> bytes:
        return b"m 1\n"

    return Routes({"/api/overview": lambda: {"ok": 1}}, metrics=metrics,
                  health=lambda: (ready[0], {"kind": "broker"}),
                  queue=lambda name: {"name": name} if name == "q" else None,
                  explain=lambda mid: {"id": mid})


def _req(path: str) -> Request:
    return Request("GET", path, {}, {})


async def test_routes_answer_503_while_recovering_then_serve() -> None:
    ready = [False]
    routes = _routes(ready)

    async def r(path: str) -> Reply:
        return await routes(_req(path))

    assert (await r("/health")).status == 503
    assert (await r("/metrics")).status == 503
    assert (await r("/api/overview")).status == 503
    assert (await r("/")).status == 200  # the page itself loads, and shows it is starting
    ready[0] = True
    assert (await r("/health")).status == 200
    assert (await r("/metrics")).body == b"m 1\n"
    assert json.loads((await r("/api/queues/q")).body) == {"name": "q"}
    assert (await r("/api/queues/x")).status == 404
    assert json.loads((await r("/api/messages/42/explain")).body) == {"id": 42}
    assert (await r("/api/messages/-1/explain")).status == 400
    assert (await r("/nothing")).status == 404


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return out


async def test_server_keeps_alive_guards_with_a_token_and_survives_a_failing_handler(
) -> None:
    def route(req: Request) -> Reply:
        if req.path == "/boom":
            raise RuntimeError("handler bug")
        return json_reply({"path": req.path, "q": req.query})

    server = AdminServer(route, token="t" * 16, public=lambda p: p == "/open")
    await server.start("127.0.0.1", 0)
    port = int(server.address.rsplit(":", 1)[1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):  # one connection, three requests
            writer.write(b"GET /open?a=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert json.loads(await reader.readexactly(length)) == {"path": "/open",
                                                                   "q": {"a": ["1"]}}
        writer.close()
        assert (await _exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                ).startswith(b"HTTP/1.1 401")
        ok = await _exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             + b"t" * 16 + b"\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")
        boom = await _exchange(port, b"GET /boom HTTP/1.1\r\nHost: x\r\nAuthorization: "
                               b"bearer " + b"t" * 16 + b"\r\n\r\n")
        assert boom.startswith(b"HTTP/1.1 500")
        assert server.requests == 6
    finally:
        await server.close()


async def test_metrics_render_once_for_many_scrapers_and_explain_is_rate_limited() -> None:
    renders: list[int] = []

    async def metrics() -> bytes:
        renders.append(1)
        await asyncio.sleep(0.01)
        return b"m %d\n" % len(renders)

    routes = Routes({}, metrics=metrics, health=lambda: (True, {}),
                    explain=lambda mid: {"id": mid})
    bodies = await asyncio.gather(*(routes(_req("/metrics")) for _ in range(8)))
    assert {b.body for b in bodies} == {b"m 1\n"}
    assert len(renders) == 1
    statuses = [(await routes(_req(f"/api/messages/{i}/explain"))).status for i in range(25)]
    assert statuses == [200] * 20 + [429] * 5
