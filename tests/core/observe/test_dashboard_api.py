"""``fulmen dashboard``'s JSON endpoints, served on loopback by the real server, against a run
directory written through the real store API (:mod:`_dashboard_data`): numbers against the
store, filters, the episode page (transcript, tool results, rewards, credit, tokens), the
checkpoint comparison, live updates, bad input and the gateway's bearer token."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _dashboard_data import DemoRun, encode, make_run
from _observe_data import train_row
from fulmen.observe.dashboard import CreditSource, Dashboard, DashboardData, TokenText
from fulmen.protocol import Episode, EpisodeStatus, Reward, Task, TerminationReason
from fulmen.store.sqlite import SQLiteStore


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            body = response.read()
            status, head = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        body, status, head = exc.read(), exc.code, dict(exc.headers)
    kind = head.get("Content-Type", "")
    return status, json.loads(body) if "json" in kind else body, head


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def demo(tmp_path: Path) -> DemoRun:
    return make_run(tmp_path)


def _serve(demo: DemoRun, **kwargs: Any) -> Dashboard:
    data = DashboardData(
        store_path=demo.store_path,
        run_dir=demo.run_dir,
        credit=CreditSource.from_config(demo.config),
        tokens=TokenText(demo.tokenizer),
        min_refresh_s=0.0,
    )
    dashboard = Dashboard(data, port=0, **kwargs)
    dashboard.start_in_thread()
    return dashboard


@pytest.fixture
def url(demo: DemoRun) -> Iterator[str]:
    dashboard = _serve(demo)
    try:
        yield dashboard.url
    finally:
        dashboard.stop_thread()


def test_summary_counts_match_the_store(url: str, demo: DemoRun) -> None:
    with SQLiteStore(demo.store_path) as store:
        finished = store.finished_episodes()
    status, s, _ = _get(f"{url}/api/summary")
    assert status == 200
    assert s["finished"] == len(finished) == 9 and s["running"] == 0
    assert s["statuses"] == {"succeeded": 8, "failed": 1}
    assert s["step"] == 2 and s["store_exists"] and s["tokenizer"] == str(demo.tokenizer)
    metrics = {m["label"]: m["value"] for m in s["step_metrics"]}
    assert metrics["reward"] == 1.0 and metrics["held-out"] == 1.0
    assert [(a["kind"], a["severity"], a["step"]) for a in s["alarms"]] == [
        ("no_reward_variance", "critical", 2),  # metrics: step 2's only group had no signal
        ("infra_failures", "warning", None),  # episodes: 1 of 9 failed upstream
    ]
    agents = {a["agent"]: a for a in s["agents"]}
    assert agents["planner"]["episodes"] == 5 and agents["planner"]["tool_calls"] == 4
    assert s["credit"] == {"origin": f"[credit] of {demo.config}", "agents": ["solver"]}


def test_curves_follow_the_metrics_file_live(url: str, demo: DemoRun) -> None:
    _, c, _ = _get(f"{url}/api/curves")
    series = {s["metric"]: s for chart in c["charts"] for s in chart["series"]}
    assert c["steps"] == 2
    assert (series["reward"]["x"], series["reward"]["y"]) == ([1, 2], [0.5, 1.0])
    assert series["eval:success_rate"]["x"] == [0, 2]
    assert series["rollout_tokens_per_s"]["y"] == [900.0, 1100.0]
    for metric in ("kl", "clip_fraction", "dropped_groups", "drift_breaks", "success"):
        assert len(series[metric]["x"]) == 2, metric
    with (demo.run_dir / "metrics.jsonl").open("a") as f:  # the run writes step 3, with a NaN
        f.write(json.dumps(train_row(3, reward_mean=0.75, kl=float("nan"))) + "\n")
    _, c, _ = _get(f"{url}/api/curves")
    series = {s["metric"]: s for chart in c["charts"] for s in chart["series"]}
    assert series["reward"]["y"] == [0.5, 1.0, 0.75]
    assert series["kl"]["x"] == [1, 2]  # a non-finite value is left out (JSON has no NaN)


def test_curves_read_the_schema_names_only() -> None:
    from fulmen.observe.dashboard.curves import curves_json

    rows = [  # rows without kind are train rows; a backend's own names are not translated
        {"step": s, "reward_mean": 0.1 * s, "kl": 0.01, "clip_fraction": 0.2,
         "dropped_groups": 2, "drift_breaks": s, "actor/entropy": 1.0,
         "batch/merge_breaks_retokenisation": 5.0}
        for s in (1, 2)
    ]
    series = {s["metric"]: s for c in curves_json(rows, [])["charts"] for s in c["series"]}
    assert series["kl"]["y"] == [0.01, 0.01] and series["clip_fraction"]["y"] == [0.2, 0.2]
    assert series["dropped_groups"]["y"] == [2.0, 2.0]
    assert series["drift_breaks"]["y"] == [1.0, 2.0]
    assert series["entropy"]["x"] == [] and series["rollout_tokens_per_s"]["x"] == []


def test_episode_list_filters(url: str) -> None:
    def ids(query: str) -> list[str]:
        status, body, _ = _get(f"{url}/api/episodes?{query}")
        assert status == 200, body
        return [e["episode_id"] for e in body["episodes"]]

    _, everything, _ = _get(f"{url}/api/episodes")
    assert everything["total"] == everything["matching"] == 9
    assert everything["episodes"][0]["episode_id"] == "ep-eval-2-v2"  # newest first
    assert everything["facets"] == {
        "agents": ["(unnamed)", "planner", "solver"],
        "statuses": ["failed", "succeeded"],
        "splits": ["eval", "train"],
    }
    assert ids("task=CALC-1") == ["ep-s1-b", "ep-s1-a"]
    assert ids("status=failed") == ["ep-s2-fail"]
    assert set(ids("agent=solver")) == {"ep-s1-a", "ep-s1-b", "ep-s2-a", "ep-s2-b"}
    assert ids("split=eval&min_reward=0.5") == ["ep-eval-2-v2", "ep-eval-1-v2"]
    assert ids("max_reward=0&split=train") == ["ep-s1-b"]
    assert ids("limit=2&offset=1") == ["ep-eval-1-v2", "ep-eval-2-v0"]
    first = everything["episodes"][-1]
    assert first["episode_id"] == "ep-s1-a" and first["outcome"] == 1.0
    assert first["tool_calls"] == ["calculator"] and first["agents"] == ["planner", "solver"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=exploded", "status: expected one of succeeded"),
        ("min_reward=abc", "min_reward: expected a number"),
        ("min_reward=nan", "min_reward: expected a finite number"),
        ("min_reward=2&max_reward=1", "min_reward 2 is above max_reward 1"),
        ("limit=0", "limit: expected an integer 1..500"),
        ("offset=-1", "offset: expected an integer >= 0"),
    ],
)
def test_bad_filters_are_400_with_the_fix(url: str, query: str, message: str) -> None:
    status, body, _ = _get(f"{url}/api/episodes?{query}")
    assert status == 400 and body["error"]["code"] == "bad_filter"
    assert message in body["error"]["message"]


def test_episode_page_transcript_rewards_credit_and_tokens(url: str, demo: DemoRun) -> None:
    with SQLiteStore(demo.store_path) as store:
        record = store.record("ep-s1-a")
    status, d, _ = _get(f"{url}/api/episodes/ep-s1-a")
    assert status == 200
    assert d["episode"]["task_id"] == "calc-1" and d["episode"]["output"] == "42"
    assert [(r["label"], r["value"]) for r in d["rewards"]] == [
        ("outcome", 1.0), ("format", 0.5), ("step 0 @planner", 0.25)
    ]
    planner, solver = d["calls"]
    # transcript: the solver's call shows only what is new to it; tool call and result shown
    assert [m["role"] for m in planner["messages"]] == ["system", "user"]
    assert planner["tool_calls"] == [
        {"id": "call-ep-s1-a-0", "name": "calculator", "arguments": '{"expression": "6*7"}'}
    ]
    assert planner["tool_results"][0]["output"] == "42" and planner["node"] == "tools"
    assert planner["step_rewards"][0]["value"] == 0.25
    assert solver["repeated_messages"] == 0  # another agent: its first call
    assert solver["messages"][-1] == {"role": "tool", "tool_call_id": "call-ep-s1-a-0", "content": "42"}
    # credit replayed with [credit] agents = ["solver"]: the planner is masked, the solver trains
    assert (planner["trains"], planner["skip_reason"], planner["masked"]) == (
        False, "agent_not_selected", True
    )
    assert solver["trains"] is True and solver["advantage"] > 0 and not solver["masked"]
    assert "[credit] agents" in planner["credit"]
    # tokens: the recorded ids, decoded one by one by the run's tokenizer, with logprobs
    t = record.transitions[1]
    tokens = solver["tokens"]
    assert tokens["response"]["ids"] == list(t.response_token_ids) == encode("42<|im_end|>")
    assert tokens["response"]["text"] == ["4", "2", "<|im_end|>"]
    assert tokens["response"]["logprobs"] == pytest.approx(list(t.response_logprobs or ()))
    assert "".join(tokens["prompt"]["text"]).endswith("<|im_start|>assistant\n")
    assert d["tokens"]["response"] == sum(len(x.response_token_ids) for x in record.transitions)
    assert d["tokens"]["masked_response"] == len(record.transitions[0].response_token_ids)


def test_masked_reasons_untrainable_no_signal_failed_and_held_out(url: str) -> None:
    _, b, _ = _get(f"{url}/api/episodes/ep-s1-b")
    assert b["calls"][1]["skip_reason"] == "untrainable" and b["calls"][1]["tokens"]["response"]["ids"] == []
    _, same, _ = _get(f"{url}/api/episodes/ep-s2-a")  # both episodes of step 2 scored 1.0
    assert same["calls"][1]["skip_reason"] == "no_signal"
    _, failed, _ = _get(f"{url}/api/episodes/ep-s2-fail")
    assert failed["calls"][0]["skip_reason"] == "failed_episode"
    assert failed["episode"]["error"] == "upstream returned 503"
    _, held_out, _ = _get(f"{url}/api/episodes/ep-eval-1-v0")
    assert held_out["calls"][0]["trains"] is None and not held_out["calls"][0]["masked"]
    assert held_out["tokens"]["trained_response"] == held_out["tokens"]["masked_response"] == 0
    assert "never trained" in held_out["credit"]["note"]


def test_non_finite_numbers_become_null(url: str, demo: DemoRun) -> None:
    with SQLiteStore(demo.store_path) as store:  # an adapter's metadata with a NaN in it
        store.add_episode(Episode(id="ep-nan", task=Task(id="calc-nan"), metadata={"score": float("nan")}))
    status, body, _ = _get(f"{url}/api/episodes/ep-nan")
    assert status == 200 and body["episode"]["metadata"] == {"score": None}


def test_unknown_episode_is_404(url: str) -> None:
    status, body, _ = _get(f"{url}/api/episodes/ep-nope")
    assert status == 404 and body["error"]["message"] == "no episode 'ep-nope'"


def test_compare_two_checkpoints_on_one_held_out_task(url: str) -> None:
    _, options, _ = _get(f"{url}/api/compare")
    assert options == {
        "versions": [0, 2],
        "success": {"0": 0.0, "2": 1.0},
        "tasks": [
            {"task_id": "calc-eval-1", "versions": [0, 2]},
            {"task_id": "calc-eval-2", "versions": [0, 2]},
        ],
    }
    _, pair, _ = _get(f"{url}/api/compare?task=calc-eval-1&a=0&b=2")
    a, b = pair["a"]["episode"], pair["b"]["episode"]
    assert (a["episode"]["id"], a["summary"]["outcome"]) == ("ep-eval-1-v0", 0.0)
    assert (b["episode"]["id"], b["summary"]["outcome"]) == ("ep-eval-1-v2", 1.0)
    assert b["calls"][0]["response"]["content"] == "72"
    _, missing, _ = _get(f"{url}/api/compare?task=calc-eval-1&a=0&b=5")
    assert missing["b"] == {"version": 5, "episode": None}
    status, body, _ = _get(f"{url}/api/compare?task=calc-eval-1&a=0&b=latest")
    assert status == 400 and "b: expected a policy version" in body["error"]["message"]


def test_new_episodes_show_up_live(url: str, demo: DemoRun) -> None:
    _, before, _ = _get(f"{url}/api/summary")
    with SQLiteStore(demo.store_path) as store:  # another process: the training loop
        store.add_episode(Episode(id="ep-late", task=Task(id="calc-9")))
        store.update_episode("ep-late", status=EpisodeStatus.RUNNING)
        _, running, _ = _get(f"{url}/api/summary")
        assert running["running"] == 1
        store.add_reward(Reward(episode_id="ep-late", value=0.75))
        store.update_episode(
            "ep-late", status=EpisodeStatus.SUCCEEDED, termination=TerminationReason.COMPLETED
        )
    time.sleep(0.05)
    _, after, _ = _get(f"{url}/api/summary")
    assert after["finished"] == before["finished"] + 1 and after["running"] == 0
    _, listed, _ = _get(f"{url}/api/episodes?task=calc-9")
    assert [(e["episode_id"], e["outcome"]) for e in listed["episodes"]] == [("ep-late", 0.75)]


def test_page_scripts_and_plotly_are_served_locally(url: str) -> None:
    status, html, head = _get(f"{url}/")
    assert status == 200 and b'src="/vendor/plotly.min.js"' in html
    assert "default-src 'self'" in head["Content-Security-Policy"]
    status, js, head = _get(f"{url}/vendor/plotly.min.js")
    assert status == 200 and head["Content-Type"].startswith("text/javascript")
    assert b"plotly.js v" in js[:200] and len(js) > 1_000_000
    for name in ("app.js", "episode.js", "style.css"):
        assert _get(f"{url}/static/{name}")[0] == 200
    assert _get(f"{url}/static/..%2Fserver.py")[0] == 404
    assert _get(f"{url}/static/server.py")[0] == 404


def test_the_gateways_bearer_token(demo: DemoRun) -> None:
    dashboard = _serve(demo, auth_token="s3cret")
    url = dashboard.url
    try:
        assert _get(f"{url}/healthz")[0] == 200  # like the gateway: health needs no token
        status, body, _ = _get(f"{url}/api/summary")
        assert status == 401 and "Authorization: Bearer" in body["error"]["message"]
        assert _get(f"{url}/api/summary", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(f"{url}/api/summary", {"Authorization": "Bearer s3cret"})[0] == 200
        assert _get(f"{url}/?token=wrong")[0] == 401
        # the URL the command prints: the token becomes a cookie, the browser goes back to /
        assert dashboard.login_url == f"{url}/?token=s3cret"
        status, _, head = _get(f"{url}/?token=s3cret&x=1")
        assert status == 303 and head["Location"] == "/?x=1"
        cookie = head["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in head["Set-Cookie"] and "SameSite=Strict" in head["Set-Cookie"]
        assert _get(f"{url}/api/episodes", {"Cookie": cookie})[0] == 200
        port = url.rsplit(":", 1)[1]
        # DNS rebinding: another Host name is refused on a loopback bind, even with the token
        status, body, _ = _get(
            f"{url}/api/summary", {"Authorization": "Bearer s3cret", "Host": f"evil.example:{port}"}
        )
        assert status == 403 and body["error"]["code"] == "forbidden_host"
        assert _get(f"{url}/api/summary", {"Cookie": cookie, "Host": f"localhost:{port}"})[0] == 200
    finally:
        dashboard.stop_thread()


def test_a_store_that_does_not_exist_yet(tmp_path: Path) -> None:
    data = DashboardData(store_path=tmp_path / "run" / "episodes.db", run_dir=tmp_path / "run")
    dashboard = Dashboard(data, port=0)
    dashboard.start_in_thread()
    try:
        _, s, _ = _get(f"{dashboard.url}/api/summary")
        assert (s["finished"], s["store_exists"], s["step_metrics"], s["alarms"]) == (0, False, [], [])
        assert _get(f"{dashboard.url}/api/episodes")[1]["total"] == 0
        assert _get(f"{dashboard.url}/api/episodes/ep-1")[0] == 404
    finally:
        dashboard.stop_thread()


def test_the_tokenizer_is_found_once_the_first_checkpoint_is_written(
    demo: DemoRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from fulmen.observe.dashboard import data as data_module

    monkeypatch.setattr(data_module, "_TOKENIZER_LOOK_S", 0.0)
    saved = tmp_path / "tokenizer.json"
    shutil.move(demo.tokenizer, saved)  # the run has not written a checkpoint yet
    data = DashboardData(store_path=demo.store_path, run_dir=demo.run_dir, find_tokens=True)
    try:
        assert data.summary()["tokenizer"] is None
        assert data.episode("ep-s1-a")["calls"][1]["tokens"]["response"]["text"] is None
        shutil.move(saved, demo.tokenizer)  # step 1's checkpoint
        assert data.summary()["tokenizer"] == str(demo.tokenizer)
        text = data.episode("ep-s1-a")["calls"][1]["tokens"]["response"]["text"]
        assert text == ["4", "2", "<|im_end|>"]
    finally:
        data.close()


def test_import_fulmen_loads_no_dashboard_dependency() -> None:
    code = (
        "import sys, fulmen, fulmen.cli; fulmen.cli.build_parser(); "
        "heavy = [m for m in ('plotly', 'tokenizers', 'playwright', 'aiohttp', 'torch') "
        "if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
