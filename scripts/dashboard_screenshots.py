"""Screenshots of ``fulmen dashboard`` on a run directory, for the docs (``docs/img/``).

    uv run --locked python scripts/dashboard_screenshots.py runs/calculator docs/img \
        [--config examples/calculator/train.toml]

Serves the dashboard in-process on loopback, opens it in Debian's headless chromium
(``/usr/bin/chromium``, driven by Playwright; no browser download) and saves
``dashboard-curves.png`` (curves page), ``dashboard-episode.png`` (a rewarded training episode
that called a tool, whole page with its token viewer) and ``dashboard-compare.png`` (the first and last
policy versions on one held-out task), as palette PNGs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fulmen.observe.dashboard import (
    CreditSource,
    Dashboard,
    DashboardData,
    TokenText,
    find_tokenizer,
)
from fulmen.observe.dashboard.episodes import EpisodeFilter
from PIL import Image
from playwright.sync_api import sync_playwright

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _save(png: Path) -> None:
    """Rewrite ``png`` as a 256-colour palette PNG (a few times smaller, same look)."""
    image = Image.open(png).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(png, optimize=True)
    print(f"{png}: {png.stat().st_size // 1024} KB")


def _most_uncertain(data: DashboardData, episode_ids: list[str]) -> str:
    """The episode (among tool-using, rewarded ones) with a call that has the most response
    tokens of probability below one half: the token viewer has something to show."""
    best: tuple[int, str, int] = (-1, episode_ids[0], 0)
    for episode_id in episode_ids:
        detail = data.episode(episode_id)
        if not detail["summary"]["tool_calls"] or not detail["summary"]["outcome"]:
            continue
        for call in detail["calls"]:
            lps = call["tokens"]["response"]["logprobs"] or []
            unsure = sum(1 for lp in lps if lp is not None and lp < -0.69)
            best = max(best, (unsure, episode_id, call["seq"]))
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--config", help="the run's training config ([credit])")
    args = parser.parse_args()
    tokenizer = find_tokenizer(args.run_dir)
    data = DashboardData(
        store_path=args.run_dir / "episodes.db",
        run_dir=args.run_dir,
        credit=CreditSource.from_config(args.config) if args.config else None,
        tokens=TokenText(tokenizer) if tokenizer else None,
    )
    dashboard = Dashboard(data, port=0)
    base = dashboard.start_in_thread()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        listed = data.episodes(EpisodeFilter.from_query({"split": "train", "limit": "200"}))
        episode = _most_uncertain(data, [e["episode_id"] for e in listed["episodes"]])
        options = data.compare_options()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, timeout=60_000)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/#/")
            page.wait_for_function("document.querySelectorAll('.chart .main-svg').length >= 5")
            page.wait_for_timeout(500)
            page.screenshot(path=str(args.out_dir / "dashboard-curves.png"))
            page.goto(f"{base}/#/episode/{episode}")
            page.wait_for_selector(".call .tok.resp")
            page.screenshot(path=str(args.out_dir / "dashboard-episode.png"), full_page=True)
            if options["tasks"]:
                task = options["tasks"][0]
                a, b = task["versions"][0], task["versions"][-1]
                page.goto(f"{base}/#/compare?task={task['task_id']}&a={a}&b={b}")
                page.wait_for_selector("#compare-b .call")
                page.screenshot(path=str(args.out_dir / "dashboard-compare.png"))
            browser.close()
    finally:
        dashboard.stop_thread()
    for name in ("dashboard-curves.png", "dashboard-episode.png", "dashboard-compare.png"):
        if (args.out_dir / name).exists():
            _save(args.out_dir / name)


if __name__ == "__main__":
    main()
