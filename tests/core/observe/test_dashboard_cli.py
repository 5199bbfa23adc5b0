"""``fulmen dashboard`` as a user runs it: a real process serving a run directory (its token from
``$FULMEN_AUTH_TOKEN``, as the gateway's), left with Ctrl-C, and its error messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def test_serves_a_run_until_ctrl_c(demo: DemoRun) -> None:
    env = {**os.environ, "FULMEN_AUTH_TOKEN": "tok-123"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fulmen.cli", "dashboard", str(demo.run_dir), "--port", "0",
         "--config", str(demo.config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        url = ""
        while not url and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "fulmen dashboard exited before printing its URL"
            if line.startswith("open "):
                url = line.split()[1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/?token=tok-123")
        base = url.split("/?")[0]
        request = urllib.request.Request(
            f"{base}/api/summary", headers={"Authorization": "Bearer tok-123"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            summary = json.loads(response.read())
        assert summary["finished"] == 9 and summary["step"] == 2
        assert summary["tokenizer"] == str(demo.tokenizer)  # found in the newest checkpoint
        assert summary["credit"]["agents"] == ["solver"]
        # the config's [alarms] apply: 1 failure in 9 is under its infra_failure_rate of 0.5
        assert [a["kind"] for a in summary["alarms"]] == ["no_reward_variance"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


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
