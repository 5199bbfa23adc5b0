"""The ``fulmen`` command line: gateway, episodes, show, and its error messages."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from fulmen.cli import main
from fulmen.context import EpisodeContext
from fulmen.protocol import Task
from fulmen.runner import Runner
from fulmen_testkit.harness import running_stack
from fulmen_testkit.vllm_double import VllmDouble


def _record_one(db: Path) -> str:
    async def agent(task: Task, ctx: EpisodeContext) -> str:
        async with openai.AsyncOpenAI(base_url=ctx.base_url, api_key="x", timeout=30) as client:
            out = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hello there"}], max_tokens=6
            )
        return out.choices[0].message.content or ""

    async def run() -> str:
        async with running_stack(db) as stack:
            [result] = await Runner(stack.gateway, reward_fn=lambda t, o, c: 0.5).arun(
                agent, [Task(id="greet")]
            )
            return result.episode.id

    return asyncio.run(run())


def test_episodes_and_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: rich folds cells in narrow ones
    db = tmp_path / "f.db"
    episode_id = _record_one(db)
    assert main(["episodes", "--store", str(db)]) == 0
    table = capsys.readouterr().out
    assert episode_id in table and "succeeded" in table and "0.5" in table
    assert main(["episodes", "--store", str(db), "--json", "--status", "failed"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["show", episode_id, "--store", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "hello there" in shown and "transition 0" in shown and "response (" in shown
    assert main(["show", episode_id, "--store", str(db), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    [t] = data["transitions"]
    assert t["response_token_ids"] and len(t["response_logprobs"]) == len(t["response_token_ids"])
    # the terminal view prints each response token id with its logprob
    first = t["response_token_ids"][0]
    assert f"{first}({t['response_logprobs'][0]:.2f})" in shown


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["episodes", "--store", str(tmp_path / "nope.db")]) == 2
    assert "no store at" in capsys.readouterr().err
    db = tmp_path / "f.db"
    _record_one(db)
    assert main(["show", "ep-000000000000", "--store", str(db)]) == 2
    assert "fulmen episodes --store" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nentry = "a:b"\n[data]\ntrain = "x"\n[model]\npath = "m"\n[train]\nstpes = 3\n')
    assert main(["train", str(bad)]) == 2
    assert "[train] stpes: unknown key. Did you mean 'steps'?" in capsys.readouterr().err


def test_gateway_command_serves_and_stops(tmp_path: Path) -> None:
    async def serve_double() -> None:
        double = VllmDouble()
        url = await double.start()
        (tmp_path / "url").write_text(url)
        await asyncio.sleep(60)

    import threading

    threading.Thread(target=lambda: asyncio.run(serve_double()), daemon=True).start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "url").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    upstream = (tmp_path / "url").read_text()
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen(
        [sys.executable, "-m", "fulmen.cli", "gateway", "--upstream", upstream,
         "--store", str(tmp_path / "g.db"), "--port", str(port)],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        body = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        assert body, "gateway did not come up"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            assert json.loads(r.read())["data"][0]["id"] == "tiny"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert proc.stderr is not None
    assert f"127.0.0.1:{port}" in proc.stderr.read()


# --------------------------------------------------------------------------- one error line

VALID = """\
[run]
output_dir = "{out}"
[agent]
entry = "pkg.agent:solve"
[data]
train = "pkg.agent:tasks"
[model]
path = "{out}/model"
[train]
steps = 1
[batch]
mode = "per_call"
[alarms]
entropy_floor = 0.01
[credit]
assigner = "grpo"
[local]
threads = 1
[verl]
nnodes = 1
"""

BROKEN: dict[str, tuple[str, str]] = {
    # kind: (how the valid config is broken, text the one line must hold)
    **{
        f"unknown key in [{table}]": (f"[{table}]\n", f"[{table}]\nzzz_unknown = 1\n")
        for table in ("run", "agent", "data", "model", "train", "batch", "alarms", "local", "verl")
    },
    "unknown credit option": ('assigner = "grpo"\n', 'assigner = "grpo"\nomega = 2\n'),
    "unknown table": ("[train]\n", "[trian]\n"),
    "wrong type": ("steps = 1\n", 'steps = "ten"\n'),
    "not finite": ("steps = 1\n", "steps = 1\nlearning_rate = nan\n"),
    "out of range": ("steps = 1\n", "steps = 0\n"),
    "unknown assigner": ('assigner = "grpo"\n', 'assigner = "ppo"\n'),
    "unknown backend": ("[run]\n", 'backend = "tpu_farm"\n[run]\n'),
    "backend typo": ("[run]\n", 'backend = "lcoal"\n[run]\n'),
    "typo in [local]": ("threads = 1\n", "thredas = 1\n"),
    "typo in [verl]": ("nnodes = 1\n", "nnode = 1\n"),
    "bad [local] value": ("threads = 1\n", 'threads = 1\ndevice = "tpu"\n'),
    "missing section": ('[model]\npath = "{out}/model"\n', ""),
    "invalid TOML": ("[train]\n", "[train\n"),
}
EXPECTED = {
    "unknown credit option": "has no option 'omega'",
    "unknown table": "Did you mean 'train'?",
    "wrong type": "steps: expected an integer, got 'ten'",
    "not finite": "learning_rate: expected a finite number",
    "out of range": "steps = 0: must be at least 1",
    "unknown assigner": "unknown assigner 'ppo'",
    "unknown backend": "no training backend named 'tpu_farm' is installed",
    "backend typo": "Did you mean 'local'?",
    "typo in [local]": "Did you mean 'threads'?",
    "typo in [verl]": "Did you mean 'nnodes'?",
    "bad [local] value": 'device = "tpu"',
    "missing section": "missing section [model]",
    "invalid TOML": "invalid TOML",
}

# Every verb `fulmen --help` lists, with the arguments that make it read a config (None: it reads
# none). A new verb must be added here, so that it is walked too.
CONFIG_VERBS: dict[str, list[str] | None] = {
    "train": ["train", "{config}"],
    "eval": ["eval", "{config}"],
    "merge": ["merge", "{config}", "--checkpoint", "{out}", "--out", "{out}/merged"],
    "dashboard": ["dashboard", "--config", "{config}", "{out}"],
    "gateway": None,
    "episodes": None,
    "show": None,
    "adapters": None,
    "watch": None,
    "export-otel": None,
}
# The verbs that read no config, each with a bad argument of its own.
BAD_ARGUMENTS: dict[str, list[str]] = {
    "gateway": ["gateway", "--upstream", "http://127.0.0.1:9", "--store", "/dev/null/x/f.db"],
    "episodes": ["episodes", "--store", "{out}/nope.db"],
    "show": ["show", "ep-1", "--store", "{out}/nope.db"],
    "watch": ["watch", "{out}/no-such-run", "--once"],
    "export-otel": ["export-otel", "--endpoint", "http://127.0.0.1:9", "--store", "{out}/nope.db"],
}


def _verbs() -> set[str]:
    from fulmen.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def _one_error_line(verb: str, err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"fulmen {verb}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert expected in errors[0], err
    assert "Traceback" not in err
    assert all(line.startswith(f"fulmen {verb}: ") for line in lines), err  # warnings: one line


def test_every_verb_is_walked() -> None:
    assert _verbs() == set(CONFIG_VERBS)
    assert {v for v, args in CONFIG_VERBS.items() if args is None} == set(BAD_ARGUMENTS) | {"adapters"}


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize("verb", sorted(v for v, args in CONFIG_VERBS.items() if args))
def test_a_broken_config_is_one_error_line_and_exit_2(
    verb: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = BROKEN[kind]
    valid = VALID.format(out=tmp_path)
    good, bad = good.format(out=tmp_path), bad.format(out=tmp_path)
    assert good in valid, kind
    config = tmp_path / "train.toml"
    config.write_text(valid.replace(good, bad, 1))
    args = [a.format(config=config, out=tmp_path) for a in CONFIG_VERBS[verb] or []]
    if kind == "unknown backend" and verb == "dashboard":
        pytest.skip("the dashboard needs no backend: an uninstalled one is not an error there")
    assert main(args) == 2
    expected = EXPECTED.get(kind, "zzz_unknown: unknown key")
    _one_error_line(verb, capsys.readouterr().err, expected)


@pytest.mark.parametrize("verb", sorted(BAD_ARGUMENTS))
def test_verbs_without_a_config_report_bad_input_in_one_line(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.format(out=tmp_path) for a in BAD_ARGUMENTS[verb]]) == 2
    _one_error_line(verb, capsys.readouterr().err, "")
