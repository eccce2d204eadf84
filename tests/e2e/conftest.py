"""End-to-end fixtures: the real app (real models, real index) served by uvicorn, and Chromium.

Chromium is Debian's (`/usr/bin/chromium`, installed by `.ci/run`): `playwright install`
cannot download browsers here. The launch arguments stop every lookup outside this machine.
The server runs with `auth.cookie_secure = true`, as in production: Chromium treats
http://127.0.0.1 as a secure context and accepts `Secure` and `__Host-` cookies from it.

Playwright's own sync API, not the pytest-playwright plugin: the plugin parametrizes every
test that uses a fixture named `browser` (ours, in tests/fixtures/auth.py, is an HTTP
client), so it renamed a hundred unrelated tests `...[chromium]`. The fixture names below
follow the plugin's (`playwright`, `browser_type_launch_args`).

The browser, the Playwright driver and the server are package-scoped: they stop when the
e2e tests are done. (Session-scoped, the sync driver's event loop stayed "running" in the
main thread for every later test, and `asyncio.run()` there refused to start.)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser as PwBrowser
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    sync_playwright,
)

from appliance.auth.bootstrap import init
from appliance.core.runtime import Runtime, open_runtime
from appliance.main import create_app
from tests.fixtures.app import make_settings

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-pings",
    "--disable-features=AutofillServerCommunication,OptimizationHints,MediaRouter",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]


@pytest.fixture(scope="package")
def browser_type_launch_args() -> dict[str, Any]:
    """Launch arguments: Debian's Chromium, headless, no outside lookups."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does).")
    return {"executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """The Playwright driver for the session."""
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def chromium(
    playwright: Playwright, browser_type_launch_args: dict[str, Any]
) -> Iterator[PwBrowser]:
    """One Chromium for the session (each user gets an own context: own cookies)."""
    browser = playwright.chromium.launch(**browser_type_launch_args)
    yield browser
    browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    """The running appliance: its address, runtime and first admin's one-time password."""

    url: str
    rt: Runtime
    admin_password: str
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="package")
def site(
    tmp_path_factory: pytest.TempPathFactory, real_embedder: object, real_generator: object
) -> Iterator[Site]:
    """A fresh instance with the real bundled models, served on a free loopback port."""
    root = tmp_path_factory.mktemp("e2e-instance")
    settings = make_settings(root)
    report = init(settings)
    assert report.admin_password is not None
    # The real model's own output, undecorated: citations are what the appliance computes
    # by checking each sentence against the evidence, or nothing at all.
    rt = open_runtime(settings, embedder=real_embedder, generator=real_generator)  # type: ignore[arg-type]
    rt.settings.chat.answer_max_tokens = 40  # the 135M model on 2 cores: keep answers short
    rt.settings.chat.temperature = 0.0
    app = create_app(settings, runtime=rt, background=True)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="e2e-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped during start-up"
        time.sleep(0.05)
    yield Site(url=f"http://127.0.0.1:{port}", rt=rt, admin_password=report.admin_password)
    server.should_exit = True
    thread.join(30)
    rt.close()


class Watched:
    """A browser context whose pages record CSP violations, script errors and failed loads."""

    def __init__(self, context: BrowserContext, site: Site, name: str) -> None:
        self.context = context
        self.site = site
        self.name = name
        self.problems: list[str] = []
        context.on("page", self._watch)

    def _watch(self, page: Page) -> None:
        def console(msg: ConsoleMessage) -> None:
            text = msg.text
            if "Content Security Policy" in text or "Refused to" in text:
                self.problems.append(f"CSP: {text}")
            elif msg.type == "error" and "Failed to load resource" not in text:
                self.problems.append(f"console error: {text}")

        page.on("console", console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on(
            "requestfailed",
            lambda req: (
                None
                if req.url.startswith(self.site.url)
                else self.problems.append(f"outside request: {req.url}")
            ),
        )

    def new_page(self) -> Page:
        """A page in this context, watched."""
        page = self.context.new_page()
        page.set_default_timeout(20_000)
        return page


@pytest.fixture
def contexts(chromium: PwBrowser, site: Site) -> Iterator[Any]:
    """Make watched browser contexts (one per person); fail on CSP violations or JS errors."""
    made: list[Watched] = []

    def make(name: str, *, phone: bool = False) -> Watched:
        viewport = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
        context = chromium.new_context(
            base_url=site.url, viewport=viewport, reduced_motion="reduce"
        )
        watched = Watched(context, site, name)
        made.append(watched)
        return watched

    yield make
    problems = [f"{w.name}: {p}" for w in made for p in w.problems]
    for w in made:
        w.context.close()
    assert not problems, "\n".join(problems)


UNLABELLED = """() => {
  const name = (el) => (el.getAttribute("aria-label") || el.getAttribute("title") || "").trim()
    || [...(el.labels || [])].map((l) => l.textContent.trim()).join(" ")
    || (el.getAttribute("aria-labelledby") || "").split(" ").map(
         (id) => (document.getElementById(id) || {}).textContent || "").join(" ").trim();
  const out = [];
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (!name(el)) out.push(el.outerHTML.slice(0, 120));
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    if (!(el.textContent.trim() || name(el))) out.push(el.outerHTML.slice(0, 120));
  }
  return out;
}"""


def shot_of(part: Locator, name: str) -> None:
    """Save a screenshot of one part of a page (a scrolled list cuts it off in a full page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    part.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def shot(page: Page, name: str) -> None:
    """Save a full-page screenshot as a test artifact; every control must have a name."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    unlabelled = page.evaluate(UNLABELLED)
    assert not unlabelled, f"{name}: controls without an accessible name: {unlabelled}"
