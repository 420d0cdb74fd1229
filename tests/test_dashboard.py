"""The dashboard page in headless Chromium against the real system (Ray, Redis, PostgreSQL, Qdrant).

Every test also checks what the page sent: only requests the API's OpenAPI document describes,
to the page's own origin, never the admin token in a URL, never a cookie.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
import ray
from conftest import init_repo
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from ray import serve
from ray_fixtures import TOKEN, System, wait_for

from neo_ray.control.app import Control
from neo_ray.models import Stage
from neo_ray.stores import embedded as services
from neo_ray.stores.queue import Broker

pytestmark = [pytest.mark.browser, pytest.mark.ray]

API = "/api/v1/ingestion"
SCREENSHOT_ENV = "NEO_DASHBOARD_SCREENSHOT"  # where to keep the during-a-job screenshot


# Module scope: sync Playwright runs an event loop in this thread until it stops, which would
# get in the way of tests elsewhere that run their own (asyncio.run).
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's chromium is not installed: run scripts/system-deps.sh as root")
    browser = playwright.chromium.launch(executable_path=exe)
    yield browser
    browser.close()


def documented_routes(base: str) -> list[tuple[str, re.Pattern[str]]]:
    """(method, path pattern) for every route in the app's OpenAPI document."""
    spec = httpx.get(base + "/openapi.json", timeout=30).json()
    routes = []
    for path, ops in spec["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
        routes += [(method.upper(), re.compile(pattern + "$")) for method in ops]
    return routes


@dataclass
class Dashboard:
    """A page on the dashboard, with what it logged and requested."""

    page: Page
    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def check_requests(self, routes: list[tuple[str, re.Pattern[str]]], prefix: str = "") -> None:
        assert self.requests, "the page sent nothing"
        for method, url in self.requests:
            parts = urlsplit(url)
            assert f"{parts.scheme}://{parts.netloc}" == self.origin, url
            assert TOKEN not in url
            path = parts.path.removeprefix(prefix)
            assert any(m == method and p.match(path) for m, p in routes), (method, url)


def open_dashboard(chromium: Browser, url: str, width: int = 1280) -> Dashboard:
    context = chromium.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    parts = urlsplit(url)
    board = Dashboard(page, f"{parts.scheme}://{parts.netloc}")
    page.on("console", lambda m: board.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: board.errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: board.requests.append((r.method, r.url)))
    page.goto(url)
    expect(page.locator("#conn")).to_have_text(re.compile("^live"), timeout=20_000)
    return board


@pytest.fixture
def dashboard(neo_system: System, chromium: Browser) -> Iterator[Dashboard]:
    board = open_dashboard(chromium, neo_system.base + "/")
    yield board
    board.check_requests(documented_routes(neo_system.base))
    assert board.page.context.cookies() == []
    board.page.context.close()


def broker_of(neo: System) -> Broker:
    assert neo.settings.redis_url
    return Broker.connect(neo.settings.redis_url, prefix=neo.settings.redis_prefix)


def slow_repo(neo: System, name: str) -> Path:
    """A repository big enough (1,201 files) that the page sees its job running."""
    files = {f"pkg/m{i}.py": f"from pkg import m{(i * 7 + 1) % 1200}\n" for i in range(1200)}
    files["pkg/__init__.py"] = ""
    root = neo.repos / name
    init_repo(root, files)
    return root


MOVING = (Stage.PARSING, Stage.RESOLVING, Stage.TRAINING)


@contextlib.contextmanager
def frozen_mid_job(neo: System, url: str) -> Iterator[str]:
    """Hold the job for `url` still, past cloning, while the page is looked at.

    A fast machine runs the 1,201-file job in about a second, less than one refresh of the page,
    so the test catches the job in a stage with a count (polling Redis) and stops the worker's
    process there (SIGSTOP). Its heartbeat thread stops too: its last heartbeat is written again
    with a fresh TTL until the worker goes on, so the card stays as the worker left it.
    """
    broker = broker_of(neo)
    worker = ray.get_actor(neo.worker_name(), namespace="neo")
    pid = ray.get(worker.info.remote())["pid"]

    def running_job() -> str | None:
        return next((t.job_id for t in broker.processing() if t.repo_url == url), None)

    job_id: str = wait_for(running_job, 60, 0.01)

    def counting() -> bool:
        job = broker.get_job(job_id)
        return job is not None and job.stage in MOVING and job.total is not None

    wait_for(counting, 60, 0.002)
    os.kill(pid, signal.SIGSTOP)
    release = threading.Event()

    def keep_heartbeat() -> None:
        while not release.wait(0.5):
            for hb in broker.workers():
                if hb.worker_id == neo.worker_name():
                    broker.heartbeat(hb, ttl_s=neo.settings.heartbeat_ttl_s)

    keeper = threading.Thread(target=keep_heartbeat, daemon=True)
    keeper.start()
    try:
        job = broker.get_job(job_id)
        assert job is not None and job.stage in MOVING, f"the job moved on before the stop: {job}"
        yield job_id
    finally:
        release.set()
        keeper.join()
        os.kill(pid, signal.SIGCONT)


def keep_screenshots(page: Page) -> None:
    """With NEO_DASHBOARD_SCREENSHOT=x.png: the page mid-job at 1280 px (x.png) and 375 px."""
    target = os.environ.get(SCREENSHOT_ENV)
    if not target:
        return
    halfway = re.compile(r"(parsing|training|uploading) \d+ / \d+ · [1-9]\d?(\.\d)? %")
    with contextlib.suppress(AssertionError):  # the job is held: a picture of it will do
        expect(page.locator("#job-stage")).to_contain_text(halfway, timeout=5_000)
    page.screenshot(path=target, full_page=True)
    page.set_viewport_size({"width": 375, "height": 800})
    path = Path(target)
    page.screenshot(path=path.with_name(f"{path.stem}-375{path.suffix}"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_page_loads_without_console_error(neo_system: System, dashboard: Dashboard) -> None:
    page = dashboard.page
    card = page.locator("article.card").filter(has_text=neo_system.worker_name())
    # Idle, or Error when an earlier test of the session left a failed job behind.
    expect(card.locator(".badge")).to_have_text(re.compile("^(Idle|Error)$"))
    expect(card).to_contain_text("cpu")
    expect(card).to_contain_text(re.compile(r"\d+ s ago"))
    expect(page.locator("#q-dead")).to_have_text(re.compile(r"^\d+$"))
    reply = httpx.get(neo_system.base + "/", timeout=30)
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    # Refreshes update the page in place: the same elements, new text (no flicker).
    page.evaluate("window.card = document.querySelector('article.card')")
    before = page.inner_text("#updated")
    page.wait_for_timeout(4500)  # two more refreshes
    assert page.inner_text("#updated") != before
    assert page.evaluate("document.querySelector('article.card') === window.card")
    # No horizontal scrolling at a phone's width either.
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert dashboard.errors == []


def test_submitted_repository_shows_progress_and_lands_in_history(
    neo_system: System, dashboard: Dashboard
) -> None:
    page = dashboard.page
    repo = slow_repo(neo_system, f"dash-{uuid.uuid4().hex[:6]}")
    url = repo.resolve().as_uri()
    page.fill("#f-url", str(repo))
    page.fill("#f-token", TOKEN)
    page.click("#f-go")
    expect(page.locator("#submit-msg")).to_contain_text("Queued " + url)
    card = page.locator("article.card").filter(has_text=neo_system.worker_name())
    with frozen_mid_job(neo_system, url):
        expect(page.locator("#job-status")).to_have_text("running", timeout=20_000)
        expect(card.locator(".badge")).to_have_text("Training")
        # Past cloning: a stage with done / total and a percentage, on the job and on the card.
        moving = re.compile(r"(parsing|resolving|training) \d+ / \d+ · [\d.]+ %")
        expect(page.locator("#job-stage")).to_contain_text(moving)
        expect(card.locator("p.small")).to_contain_text(moving)
        bar = page.locator("#job-bar")
        assert 0 <= int(bar.get_attribute("aria-valuenow") or "-1") <= 100
        keep_screenshots(page)
    expect(page.locator("#job-status")).to_have_text("complete", timeout=180_000)
    expect(page.locator("#job-stage")).to_contain_text("1201 files")
    first = page.locator("#history tbody tr").first
    expect(first).to_contain_text(url)
    expect(first.locator(".badge")).to_have_text("complete")
    page.evaluate("window.row = document.querySelector('#history tbody tr')")
    page.wait_for_timeout(4500)  # history unchanged: its rows are left alone
    assert page.evaluate("document.querySelector('#history tbody tr') === window.row")
    # The token stays in this tab's sessionStorage; no cookie, no URL (checked at teardown).
    assert page.evaluate("sessionStorage.getItem('neo-ray.admin-token')") == TOKEN
    assert page.evaluate("document.cookie") == ""
    assert dashboard.errors == []


def test_wrong_token_shows_an_error_and_queues_nothing(
    neo_system: System, dashboard: Dashboard
) -> None:
    page = dashboard.page
    repo = neo_system.sample_repo(f"wrong-{uuid.uuid4().hex[:6]}")
    # Keyboard only: the skip link leads to the form, Tab moves through it, Enter submits.
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.locator("#f-url")).to_be_focused()
    page.keyboard.type(str(repo))
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.locator("#f-token")).to_be_focused()
    page.keyboard.type("not-the-token")
    page.keyboard.press("Enter")
    message = page.locator("#submit-msg")
    expect(message).to_contain_text("token was refused (401)")
    expect(message).to_contain_text("Nothing was queued")
    expect(page.locator("#job")).to_be_hidden()
    broker = broker_of(neo_system)
    url = repo.resolve().as_uri()
    assert all(t.repo_url != url for t in broker.queued() + broker.processing())
    assert all(r.repo_url != url for r in broker.history(100))
    # Only the browser's own note of the 401 response reached the console.
    assert all("status of 401" in e for e in dashboard.errors), dashboard.errors


def test_worker_card_turns_offline_when_heartbeats_stop(
    neo_system: System, dashboard: Dashboard
) -> None:
    page = dashboard.page
    broker = broker_of(neo_system)
    wait_for(lambda: broker.queue_size() == 0 and not broker.processing(), 180, 0.2)
    card = page.locator("article.card").filter(has_text=neo_system.worker_name())
    alive = re.compile("^(Idle|Error)$")
    expect(card.locator(".badge")).to_have_text(alive)
    worker = ray.get_actor(neo_system.worker_name(), namespace="neo")
    pid = ray.get(worker.info.remote())["pid"]
    os.kill(pid, signal.SIGSTOP)  # a frozen worker: alive to the OS, silent to Redis
    try:
        expect(card.locator(".badge")).to_have_text("Offline", timeout=20_000)
        expect(card).to_contain_text("Offline: last heartbeat")
        expect(page.locator("#overall")).to_have_text("Offline")
    finally:
        os.kill(pid, signal.SIGCONT)
    expect(card.locator(".badge")).to_have_text(alive, timeout=20_000)
    assert dashboard.errors == []


@pytest.fixture
def lonely_app(neo_system: System, service_dir: Path) -> Iterator[tuple[str, Path]]:
    """A control plane under a route prefix, on a Redis server this test may stop."""
    redis_url = services.start_redis(service_dir)
    settings = neo_system.settings.model_copy(
        update={"redis_url": redis_url, "redis_prefix": f"dash503-{uuid.uuid4().hex[:6]}:"}
    )
    serve.run(Control.bind(settings), name="dash503", route_prefix="/dash503")
    yield neo_system.base + "/dash503", service_dir
    serve.delete("dash503")


def test_page_keeps_working_and_says_so_while_the_api_answers_503(
    neo_system: System, chromium: Browser, lonely_app: tuple[str, Path]
) -> None:
    base, folder = lonely_app
    board = open_dashboard(chromium, base + "/")
    page = board.page
    expect(page.locator("#q-size")).to_have_text("0")
    port = int(urlsplit(services.start_redis(folder)).port or 0)
    services.stop_all(folder)
    conn = page.locator("#conn")
    expect(conn).to_contain_text("API unavailable", timeout=20_000)
    expect(conn).to_contain_text("(503)")
    expect(conn).to_contain_text("retrying every 2 s")
    expect(page.locator("#q-size")).to_have_text("0")  # the last answer stays on the page
    sent = len(board.requests)
    page.wait_for_timeout(4500)
    assert len(board.requests) > sent  # still polling
    services.start_redis(folder, port=port)
    expect(conn).to_have_text(re.compile("^live"), timeout=20_000)
    board.check_requests(documented_routes(neo_system.base), prefix="/dash503")
    assert all("status of 503" in e for e in board.errors), board.errors
    board.page.context.close()


def test_search_shows_similar_files_and_dependents(
    neo_system: System, dashboard: Dashboard
) -> None:
    paths = httpx.get(neo_system.base + "/openapi.json", timeout=30).json()["paths"]
    if "/api/v1/search/similar" not in paths or "/api/v1/graph/dependents" not in paths:
        pytest.skip("the search routes (issue 13) are not in this build yet")
    repo = neo_system.sample_repo(f"search-{uuid.uuid4().hex[:6]}")
    with neo_system.http() as http:
        source = quote(repo.resolve().as_uri(), safe="")
        reply = http.post(f"{API}/ingest/{source}", headers=neo_system.auth()).json()
    assert neo_system.wait_job(reply["job_id"])["status"] == "complete"
    page = dashboard.page
    page.fill("#f-token", TOKEN)
    page.fill("#s-repo", repo.resolve().as_uri())
    page.fill("#s-file", "shop/models/order.py")
    page.select_option("#s-mode", "hybrid")
    page.click("#s-go")
    expect(page.locator("#search-msg")).to_have_text("Results for shop/models/order.py.")
    similar = page.locator("#similar li")
    expect(similar.first).to_contain_text("score")
    assert similar.count() >= 3
    evidence = similar.locator(".ev").all_text_contents()
    assert all(re.match(r"graph distance \d+|no graph path", e) for e in evidence), evidence
    assert any("shared neighbours: " in e for e in evidence), evidence
    dependents = page.locator("#dependents")
    expect(dependents).to_contain_text("depth 1")
    expect(dependents).to_contain_text("shop/services/orders.py")
    assert dashboard.errors == []


def test_failed_job_shows_its_error_on_the_card_and_in_history(
    neo_system: System, dashboard: Dashboard
) -> None:
    page = dashboard.page
    repo = neo_system.sample_repo(f"no-ref-{uuid.uuid4().hex[:6]}")
    page.fill("#f-url", str(repo))
    page.fill("#f-ref", "no-such-branch")  # cloning fails for good: the job fails at once
    page.fill("#f-token", TOKEN)
    page.click("#f-go")
    expect(page.locator("#job-status")).to_have_text("failed", timeout=60_000)
    expect(page.locator("#job-stage")).to_contain_text("failed: ")
    card = page.locator("article.card").filter(has_text=neo_system.worker_name())
    expect(card.locator(".badge")).to_have_text("Error")
    error = card.locator("p.err")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Error: ")
    expect(error).to_contain_text("no-such-branch")
    first = page.locator("#history tbody tr").first
    expect(first).to_contain_text(repo.resolve().as_uri())
    expect(first.locator(".badge")).to_have_text("failed")
    record = broker_of(neo_system).history(1)[0]
    assert record.error and record.error[:40] in (first.locator("td.note").text_content() or "")
    assert dashboard.errors == []
