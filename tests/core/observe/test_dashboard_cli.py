"""``fulmen dashboard`` as a user runs it: a real process serving a run directory (its token from
``$FULMEN_AUTH_TOKEN``, as the gateway's), left with Ctrl-C, and its error messages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _dashboard_data import DemoRun, make_run


def _dashboard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fulmen.cli", "dashboard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or dict(os.environ),
    )


@pytest.fixture
def demo(tmp_path: Path) -> DemoRun:
    return make_run(tmp_path)


def _start(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``fulmen dashboard ARGS --port 0`` running, and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fulmen.cli", "dashboard", *args, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            proc.wait(10)
            pytest.fail("fulmen dashboard exited before printing its URL")
        if line.startswith("open "):
            return proc, line.split()[1]
    proc.kill()
    pytest.fail("fulmen dashboard printed no URL within 60 s")


def _summary(url: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{url.split('?')[0].rstrip('/')}/api/summary", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serves_a_run_until_ctrl_c(demo: DemoRun) -> None:
    env = {**os.environ, "FULMEN_AUTH_TOKEN": "tok-123"}
    proc, url = _start(str(demo.run_dir), "--config", str(demo.config), env=env)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/?token=tok-123")
        summary = _summary(url, "tok-123")
        assert summary["finished"] == 9 and summary["step"] == 2
        assert summary["tokenizer"] == str(demo.tokenizer)  # found in the newest checkpoint
        assert summary["credit"]["agents"] == ["solver"]
        # the config's [alarms] apply: 1 failure in 9 is under its infra_failure_rate of 0.5
        assert [a["kind"] for a in summary["alarms"]] == ["no_reward_variance"]
    finally:
        assert _stop(proc) == 0


def test_before_the_first_checkpoint_the_base_models_tokenizer(demo: DemoRun, tmp_path: Path) -> None:
    base = tmp_path / "base-model"
    base.mkdir()
    shutil.move(demo.tokenizer, base / "tokenizer.json")
    config = tmp_path / "base.toml"
    config.write_text(demo.config.read_text().replace('path = "model"', f"path = {json.dumps(str(base))}"))
    proc, url = _start(str(demo.run_dir), "--config", str(config), env=dict(os.environ))
    try:
        assert _summary(url)["tokenizer"] == str(base / "tokenizer.json")
    finally:
        assert _stop(proc) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "pass a run directory (fulmen dashboard runs/NAME) or --store PATH"),
        (("nowhere",), "no run directory 'nowhere'"),
        (("--store", "missing.db"), "no store at 'missing.db'"),
        (("{run}", "--tokenizer", "{run}/nothing"), "--tokenizer: no tokenizer.json at"),
        (("{run}", "--config", "{run}/missing.toml"), "cannot read config"),
        (("{run}", "--threshold", "nope=1"), "threshold 'nope=1': expected NAME=VALUE"),
        (("{run}", "--port", "70000"), "--port 70000: expected 0..65535"),
    ],
)
def test_bad_input_is_one_clear_line(demo: DemoRun, args: tuple[str, ...], message: str) -> None:
    done = _dashboard(*(a.replace("{run}", str(demo.run_dir)) for a in args))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.startswith("fulmen dashboard: error: ")


def test_a_port_in_use_is_one_clear_line(demo: DemoRun) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _dashboard(str(demo.run_dir), "--port", str(port))
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
