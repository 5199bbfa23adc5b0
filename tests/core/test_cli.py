"""The ``fulmen`` command line: gateway, episodes, show, and its error messages."""

from __future__ import annotations

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
from fulmen.testing.harness import running_stack
from fulmen.testing.vllm_double import VllmDouble


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
    assert "unknown key 'stpes'. Did you mean 'steps'?" in capsys.readouterr().err


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
