"""``fulmen dashboard`` end to end in a real headless Chromium (Debian's, driven by Playwright;
no browser is downloaded): the page served on loopback shows what the store holds (episode
counts, rewards, token counts), updates live, filters, opens an episode's token viewer and
compares two checkpoints; screenshots are taken and checked.

Skipped when ``/usr/bin/chromium`` (``apt-get install -y chromium``) or Playwright is missing,
unless ``FULMEN_REQUIRE_BROWSER=1`` (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _dashboard_data import DemoRun, make_run
from _observe_data import train_row
from _policy_run import VERSIONS, make_policy_run
from fulmen.observe.dashboard import CreditSource, Dashboard, DashboardData, TokenText
from fulmen.protocol import Episode, EpisodeStatus, Reward, Task, TerminationReason
from fulmen.store.sqlite import SQLiteStore
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 20_000


def _unavailable(reason: str) -> None:
    if os.environ.get("FULMEN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FULMEN_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable("Debian's chromium is not installed (/usr/bin/chromium: apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (uv sync --locked installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return make_run(tmp_path_factory.mktemp("dashboard-browser"))


def _start(demo: DemoRun, token: str | None = None) -> Dashboard:
    data = DashboardData(
        store_path=demo.store_path,
        run_dir=demo.run_dir,
        credit=CreditSource.from_config(demo.config),
        tokens=TokenText(demo.tokenizer),
    )
    dashboard = Dashboard(data, port=0, auth_token=token)
    dashboard.start_in_thread()
    return dashboard


@pytest.fixture(scope="module")
def served(demo: DemoRun) -> Iterator[Dashboard]:
    dashboard = _start(demo)
    try:
        yield dashboard
    finally:
        dashboard.stop_thread()


class Page:
    """A page of the dashboard that records every request and every script error."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page: Any = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "console", lambda m: self.errors.append(m.text) if m.type == "error" else None
        )

    def open(self, fragment: str) -> Any:
        self.page.goto(f"{self.base}/{fragment}")
        return self.page

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).first.inner_text()).strip()

    def wait_text(self, selector: str, expected: str) -> None:
        self.page.wait_for_function(
            "([s, t]) => { const n = document.querySelector(s); return n && n.textContent.trim() === t; }",
            arg=[selector, expected],
        )

    def close(self) -> None:
        local = [u for u in self.requests if not u.startswith((self.base, "data:"))]
        assert local == [], f"the page reached beyond the dashboard: {local}"
        assert self.errors == [], f"script errors: {self.errors}"
        self.context.close()


@pytest.fixture
def page(browser: Any, served: Dashboard) -> Iterator[Page]:
    p = Page(browser, served.url)
    yield p
    p.close()


def _check_png(path: Path, size: tuple[int, int] | None = None) -> Image.Image:
    """A real screenshot: a PNG of the expected size that is not blank (many colours)."""
    assert path.stat().st_size > 5_000
    image = Image.open(path).convert("RGB")
    if size is not None:
        assert image.size == size
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 30, f"{path} looks blank ({len(colours)} colours)"
    return image


def _finished(demo: DemoRun) -> list[Episode]:
    with SQLiteStore(demo.store_path) as store:
        return store.finished_episodes()


def test_curves_page_shows_the_run(page: Page, demo: DemoRun, tmp_path: Path) -> None:
    started = time.monotonic()
    p = page.open("#/")
    page.wait_text("#finished-count", str(len(_finished(demo))))
    page.wait_text("#step", "2")
    assert page.text("#running-count") == "0"
    assert page.text('[data-metric="reward"] .value') == "1"
    assert p.locator('.alarm[data-kind="no_reward_variance"]').count() == 1
    assert "critical" in page.text('.alarm[data-kind="no_reward_variance"]')
    p.wait_for_function("document.querySelectorAll('.chart .main-svg').length >= 5")
    reward = p.evaluate("document.getElementById('chart-reward').data.map(t => [t.name, t.x, t.y])")
    assert reward[0] == ["reward (train mean)", [1, 2], [0.5, 1.0]]
    assert reward[2] == ["held-out success", [0, 2], [0.0, 1.0]]
    assert page.text("#agents").count("planner") == 1
    assert p.locator("#policies").count() == 0  # a run without [[policy]]
    shot = tmp_path / "curves.png"
    p.screenshot(path=str(shot))
    _check_png(shot, (VIEWPORT["width"], VIEWPORT["height"]))
    print(f"curves page checked in {time.monotonic() - started:.1f} s")


def test_episode_list_numbers_and_filters(page: Page, demo: DemoRun) -> None:
    p = page.open("#/episodes")
    total = str(len(_finished(demo)))
    page.wait_text("#total-count", total)
    assert page.text("#matching-count") == total
    assert p.locator("#episode-table tr[data-episode-id]").count() == int(total)
    with SQLiteStore(demo.store_path) as store:
        outcome = next(r.value for r in store.rewards("ep-s1-a") if r.name is None)
    assert page.text('tr[data-episode-id="ep-s1-a"] td.reward') == f"{outcome:g}"
    p.fill('#filters input[name="task"]', "calc-1")
    p.click('#filters button[type="submit"]')
    page.wait_text("#matching-count", "2")
    rows = p.locator("#episode-table tr[data-episode-id]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.episodeId)")) == ["ep-s1-a", "ep-s1-b"]
    p.select_option('#filters select[name="status"]', "failed")
    p.fill('#filters input[name="task"]', "")
    p.click('#filters button[type="submit"]')
    page.wait_text("#matching-count", "1")
    assert page.text("#episode-table tr[data-episode-id] td:nth-child(2)") == "ep-s2-fail"


def test_episode_token_viewer(page: Page, demo: DemoRun, tmp_path: Path) -> None:
    with SQLiteStore(demo.store_path) as store:
        record = store.record("ep-s1-a")
    planner, solver = record.transitions
    p = page.open("#/episodes")
    p.click('tr[data-episode-id="ep-s1-a"] a')
    p.wait_for_selector('.call[data-seq="1"] .tok.resp')
    assert p.url.endswith("#/episode/ep-s1-a")
    assert p.locator(".call").count() == len(record.transitions)
    values = p.locator("#rewards .reward-value").all_inner_texts()
    assert values == [f"{r.value:g}" for r in record.rewards]
    # the solver trains; the planner is masked by [credit] agents = ["solver"]
    assert "trains" in page.text('.call[data-seq="1"] .badge.trains')
    assert "agent not selected" in page.text('.call[data-seq="0"] .badge.masked')
    # every response token, in order, coloured by its logprob; the planner's shown masked
    tokens = p.locator('.call[data-seq="1"] .tok.resp')
    assert tokens.count() == len(solver.response_token_ids)
    assert page.text('.call[data-seq="1"] .resp-count') == str(len(solver.response_token_ids))
    assert tokens.all_inner_texts() == ["4", "2", "<|im_end|>"]
    lps = tokens.evaluate_all("ts => ts.map(t => Number(t.dataset.logprob))")
    assert lps == pytest.approx(list(solver.response_logprobs or ()))
    colours = tokens.evaluate_all("ts => ts.map(t => getComputedStyle(t).backgroundColor)")
    assert len(set(colours)) == 3 and all(c.startswith("rgb(") for c in colours)
    masked = p.locator('.call[data-seq="0"] .tok.resp.masked')
    assert masked.count() == len(planner.response_token_ids)
    prompt = p.locator('.call[data-seq="1"] .tok.prompt')
    assert prompt.count() == len(solver.prompt_token_ids)
    assert p.locator('.call[data-seq="1"] .boundary').count() == 1  # prompt | response
    total = sum(len(t.response_token_ids) for t in record.transitions)
    assert page.text(".response-total") == str(total)
    viewer = tmp_path / "token-viewer.png"
    p.locator('.call[data-seq="1"]').screenshot(path=str(viewer))
    image = _check_png(viewer)
    box = p.locator('.call[data-seq="1"]').bounding_box()
    assert abs(image.size[0] - box["width"]) <= 2 and abs(image.size[1] - box["height"]) <= 2
    # the token colours are on the screenshot: strongly red/green pixels (probabilities)
    pixels: list[tuple[int, tuple[int, int, int]]] = image.getcolors(1 << 20) or []  # pyright: ignore[reportAssignmentType]  # RGB: pixels are triples
    reds = sum(n for n, (r, g, b) in pixels if r > 200 and g < 190 and b < 190)
    assert reds > 20
    full = tmp_path / "episode.png"
    p.screenshot(path=str(full), full_page=True)
    assert _check_png(full).size[1] > VIEWPORT["height"]


def test_compare_two_checkpoints(page: Page, tmp_path: Path) -> None:
    p = page.open("#/compare?task=calc-eval-1&a=0&b=2")
    p.wait_for_selector('#compare-b [data-field="outcome"]')
    assert page.text('#compare-a [data-field="outcome"]') == "0"
    assert page.text('#compare-b [data-field="outcome"]') == "1"
    assert page.text('#compare-a [data-field="policy version"]') == "0"
    assert page.text('#compare-b [data-field="policy version"]') == "2"
    assert "72" in page.text('#compare-b .call[data-seq="0"] .msg.assistant')
    assert page.text("#compare-success").endswith("v0 0 % · v2 100 %")
    shot = tmp_path / "compare.png"
    p.screenshot(path=str(shot))
    _check_png(shot, (VIEWPORT["width"], VIEWPORT["height"]))


def test_per_policy_metrics_and_the_policy_of_every_call(browser: Any, tmp_path: Path) -> None:
    run = make_policy_run(tmp_path)
    dashboard = Dashboard(DashboardData(store_path=run.store_path, run_dir=run.run_dir), port=0)
    dashboard.start_in_thread()
    p = Page(browser, dashboard.url)
    try:
        page = p.open("#/")
        p.wait_text("#step", "2")
        page.wait_for_selector('#policies tr[data-policy="solver"]')
        names = page.locator("#policies tr[data-policy]").evaluate_all("rs => rs.map(r => r.dataset.policy)")
        assert names == ["planner", "solver", "(base)"]
        assert p.text('#policies tr[data-policy="solver"] td[data-key="loss"]') == "0.5"
        assert p.text('#policies tr[data-policy="planner"] td[data-key="loss"]') == "–"  # not updated
        assert p.text('#policies tr[data-policy="planner"] td:nth-child(3)') == f"v{max(VERSIONS)}"
        page.wait_for_function("document.getElementById('chart-policy-loss') && document.getElementById('chart-policy-loss').data")
        loss = page.evaluate("document.getElementById('chart-policy-loss').data.map(t => [t.name, t.x, t.y])")
        assert loss == [["planner", [1], [-0.125]], ["solver", [1, 2], [0.25, 0.5]]]
        page.screenshot(path=str(tmp_path / "policies.png"))
        _check_png(tmp_path / "policies.png", (VIEWPORT["width"], VIEWPORT["height"]))
        # the token viewer names the policy and the adapter version of every call
        page.goto(f"{dashboard.url}/#/episode/ep-p1")
        page.wait_for_selector('.call[data-seq="2"] .call-policy')
        labels = page.locator(".call .call-policy").all_inner_texts()
        assert labels == ["by planner v1", "by solver v1", "by (base) v1"]
        assert "planner v1" in p.text('.call[data-seq="0"] h3')
    finally:
        p.close()
        dashboard.stop_thread()


def test_token_in_the_printed_url_logs_the_browser_in(browser: Any, demo: DemoRun) -> None:
    dashboard = _start(demo, token="s3cret-token")
    try:
        anonymous = Page(browser, dashboard.url)
        body = anonymous.open("#/").locator("body").inner_text()
        assert "missing or wrong token" in body
        anonymous.errors.clear()  # the 401 itself is logged by the browser
        anonymous.close()
        p = Page(browser, dashboard.url)
        p.page.goto(dashboard.login_url)
        p.wait_text("#step", "2")
        assert "token" not in p.page.url  # redirected away: the token is in the cookie only
        p.close()
    finally:
        dashboard.stop_thread()


def test_live_updates_while_the_run_writes(page: Page, demo: DemoRun) -> None:
    p = page.open("#/")
    page.wait_text("#step", "2")
    before = int(page.text("#finished-count"))
    with (demo.run_dir / "metrics.jsonl").open("a") as f:  # the training loop finishes step 3
        f.write(json.dumps(train_row(3, reward_mean=0.25)) + "\n")
    with SQLiteStore(demo.store_path) as store:
        store.add_episode(Episode(id="ep-live", task=Task(id="calc-live")))
        store.update_episode("ep-live", status=EpisodeStatus.RUNNING)
        store.add_reward(Reward(episode_id="ep-live", value=1.0))
        store.update_episode(
            "ep-live", status=EpisodeStatus.SUCCEEDED, termination=TerminationReason.COMPLETED
        )
    page.wait_text("#step", "3")
    page.wait_text("#finished-count", str(before + 1))
    p.wait_for_function("document.getElementById('chart-reward').data[0].x.length === 3")
    assert p.evaluate("document.getElementById('chart-reward').data[0].y[2]") == 0.25
