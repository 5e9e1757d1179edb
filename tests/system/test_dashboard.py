"""The web dashboard in a real headless browser (issue 16, acceptance: the dashboard).

Debian's ``chromium``, driven by Selenium through Debian's ``chromedriver``, opens the
page that a real broker (then a real router over two brokers) serves on its admin
listener. It must load with no console error and no request outside that listener,
show the queues, consumers and dead letters the test made (the router: both links up),
and its publish rate must change while the test publishes. A screenshot is saved under
the test's temporary folder. Nothing is installed at run time: without chromium or
chromedriver the tests fail and say what to install (scripts/test does, as root).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import zq
from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
from tests.helpers import eventually, free_port
from tests.procs import Proc
from zq.cluster import load, place

QUEUES = ["dash.orders", "dash.emails", "dash/invoices:eu"]  # "/" and ":" are allowed
REASON = "ValueError: no customer 4411"
BROWSER_WAIT = 20.0  # seconds for the page to show what the broker has


class Page:
    """A Chrome session on one admin listener; Selenium blocks, so each call runs in a
    thread and the test's event loop (and its publisher) goes on meanwhile."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` in the page. The tables are rebuilt every second, so tests read
        them this way rather than through element handles that go stale."""
        return await self.call(self.driver.execute_script, script, *args)

    async def open(self) -> None:
        await self.call(self.driver.get, self.base + "/")

    async def text(self, css: str) -> str | None:
        found: str | None = await self.js(
            "const e = document.querySelector(arguments[0]); return e && e.textContent;", css)
        return found

    async def rows(self, table: str, *attrs: str) -> list[list[str]]:
        """Each body row of ``table``: its data-ATTR values, then its cells' text."""
        rows: list[list[str]] = await self.js(
            "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
            ".filter(r => !r.querySelector('td.empty'))"
            ".map(r => arguments[1].map(a => r.dataset[a]).concat("
            "[...r.cells].map(c => c.textContent)))", table, list(attrs))
        return rows

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def displayed(self, css: str) -> bool:
        shown: bool = await self.js(
            "const e = document.querySelector(arguments[0]);"
            "return Boolean(e && e.offsetParent !== null);", css)
        return shown

    async def screenshot(self, path: Path) -> None:
        height = await self.js("return document.documentElement.scrollHeight")
        await self.call(self.driver.set_window_size, 1400, min(int(height) + 140, 3000))
        assert await self.call(self.driver.save_screenshot, str(path))
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG"
        assert len(data) > 20_000, f"the screenshot {path} is {len(data)} bytes: blank?"

    async def check_clean(self) -> None:
        """No console error, and every request the page made went to its listener."""
        logs = await self.call(self.driver.get_log, "browser")
        severe = [e for e in logs if e["level"] == "SEVERE"]
        assert not severe, f"console errors: {severe}"
        urls = set()
        for entry in await self.call(self.driver.get_log, "performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                urls.add(msg["params"]["request"]["url"])
        urls.update(await self.js(
            "return performance.getEntriesByType('resource').map(e => e.name)"))
        assert self.base + "/app.js" in urls, urls
        assert self.base + "/api/overview" in urls, urls
        outside = sorted(u for u in urls if not u.startswith(self.base + "/"))
        assert not outside, f"the page made requests outside its listener: {outside}"


def _binaries() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("the dashboard tests need Debian's chromium and chromium-driver "
                    f"(found chromium={chromium}, chromedriver={driver}): "
                    "apt-get install chromium chromium-driver (scripts/test does, as root)")
    return chromium, driver


@pytest.fixture
async def browser(monkeypatch: pytest.MonkeyPatch
                  ) -> AsyncIterator[Callable[[str], Awaitable[Page]]]:
    """Open pages in headless chromium (a test without it fails, never skips); each
    browser is closed at teardown."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    async def make(base: str) -> Page:
        chromium, chromedriver = _binaries()
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--window-size=1400,1000", "--disable-background-networking",
                    "--no-first-run", "--no-default-browser-check"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        driver = await asyncio.to_thread(
            webdriver.Chrome, service=Service(executable_path=chromedriver), options=opts)
        drivers.append(driver)
        driver.set_page_load_timeout(BROWSER_WAIT)
        return Page(driver, base)

    try:
        yield make
    finally:
        for d in drivers:
            await asyncio.to_thread(d.quit)


def _number(text: str | None) -> float | None:
    try:
        return float((text or "").replace(",", ""))
    except ValueError:
        return None  # a dash before the first answer


async def test_the_broker_dashboard_shows_queues_and_live_rates(
        tmp_path: Path, broker_factory: Callable[..., Awaitable[Proc]],
        browser: Callable[[str], Awaitable[Page]]) -> None:
    port = free_port()
    broker = await broker_factory("--admin-bind", f"127.0.0.1:{port}")
    page = await browser(f"http://127.0.0.1:{port}")
    async with zq.Client(broker.endpoint, name="dash-producer") as producer, \
            zq.Client(broker.endpoint, name="dash-worker") as worker:
        for q in QUEUES:
            await producer.publish(q, b"first")
        async with worker.consume("dash.orders", prefetch=1) as failing:
            async for m in failing:
                await m.nack(requeue=False, reason=REASON, wait=True)
                break
        async with worker.consume("dash.emails", prefetch=4):  # holds "first" unacked
            await page.open()

            async def queues_shown() -> bool:
                rows = await page.rows("#queues", "queue")
                return set(QUEUES) <= {r[0] for r in rows}

            await eventually(queues_shown, "every queue in #queues", BROWSER_WAIT, 0.1)
            assert await page.displayed("#queues")
            assert not await page.displayed("#links")
            before = [r[0] for r in await page.rows("#queues", "queue")]
            await page.click("#queues th[data-key='name']")  # sorted by name: now reversed

            async def resorted() -> bool:
                return [r[0] for r in await page.rows("#queues", "queue")] == before[::-1]

            await eventually(resorted, "a click on 'queue' to reverse the order", 5.0, 0.1)

            async def consumer_shown() -> bool:
                rows = await page.rows("#consumers", "queue")
                # queue attr, then cells: consumer, queue, in flight, credit, state
                return any(r[0] == "dash.emails" and r[1] == "dash-worker" and r[3] == "1"
                           for r in rows)

            await eventually(consumer_shown, "the held delivery in #consumers",
                             BROWSER_WAIT, 0.1)

            async def dead_shown() -> bool:
                rows = await page.rows("#dead", "queue")
                return any(r[0] == "dash.orders.dlq" and REASON in " ".join(r) for r in rows)

            await eventually(dead_shown, "the dead letter and its error in #dead",
                             BROWSER_WAIT, 0.1)

            first = await page.text("#rate-publish")
            stop = asyncio.Event()
            published = 0

            async def publish_until_stopped() -> None:
                nonlocal published
                while not stop.is_set():
                    q = QUEUES[published // 100 % len(QUEUES)]
                    await producer.publish_many(q, [b"m%d" % (published + i) for i in range(100)])
                    published += 100
                    await asyncio.sleep(0.01)  # pacing: the browser needs the CPU too

            async def rate_moved() -> bool:  # up: not the setup's few messages decaying
                value = _number(await page.text("#rate-publish"))
                return value is not None and value > (_number(first) or 0.0)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(publish_until_stopped())
                try:
                    await eventually(rate_moved, f"#rate-publish to change from {first!r} "
                                     "while publishing", BROWSER_WAIT, 0.1)
                    await page.screenshot(tmp_path / "dashboard.png")
                finally:
                    stop.set()
            assert published > 0
            assert await page.text("#status") == "live"
    await page.check_clean()


async def test_the_router_dashboard_shows_each_broker_link_up(
        tmp_path: Path, browser: Callable[[str], Awaitable[Page]]) -> None:
    file = tmp_path / "cluster.toml"
    write_cluster(file, ["b1", "b2"])
    cfg = load(file)
    names = [f"dash{i}" for i in range(12)]
    owner = {n: place(n, cfg) for n in names}
    assert set(owner.values()) == {"b1", "b2"}, "twelve names all placed on one broker?"
    procs: list[Proc] = []
    try:
        procs += [await start_cluster_broker(tmp_path, file, b) for b in ("b1", "b2")]
        port = free_port()
        procs.append(await start_router(tmp_path, file, "--admin-bind", f"127.0.0.1:{port}"))
        page = await browser(f"http://127.0.0.1:{port}")
        await page.open()

        async def both_up() -> bool:
            rows = await page.rows("#links", "broker", "state")
            # data-broker, data-state, then cells: broker, state, endpoint, ...
            return sorted((r[0], r[1], r[3]) for r in rows) == [("b1", "up", "up"),
                                                                  ("b2", "up", "up")]

        await eventually(both_up, "both brokers up in #links", BROWSER_WAIT, 0.1)
        assert await page.displayed("#links")
        assert not await page.displayed("#queues")
        async with zq.Client(procs[-1].endpoint) as c:  # the links are up: no UNAVAILABLE
            for n in names:
                await c.publish(n, b"x")

        async def placed() -> bool:
            rows = await page.rows("#queue-map", "queue", "broker")
            return {r[0]: r[1] for r in rows} == owner

        await eventually(placed, "each queue with its broker in #queue-map", BROWSER_WAIT, 0.1)
        assert await page.text("#links-up") == "2 / 2"
        await page.screenshot(tmp_path / "dashboard-router.png")
        await page.check_clean()
    finally:
        unclean: list[AssertionError] = []
        for p in reversed(procs):  # every one stopped, then the first unclean exit told
            try:
                await p.terminate_and_expect_exit(0)
            except AssertionError as exc:
                unclean.append(exc)
        if unclean:
            raise unclean[0]
