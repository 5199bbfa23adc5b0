"""``python -m fulmen_local.server MODEL_DIR``: serving a saved model by hand."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from fulmen_local.model.build import save_model
from fulmen_local.server.__main__ import main


def test_cli_refuses_a_directory_without_a_model(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_serves_a_saved_model(tmp_path: Path, random_model, tokenizer) -> None:
    save_model(random_model, tokenizer, tmp_path / "tiny")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fulmen_local.server",
            str(tmp_path / "tiny"),
            "--port",
            "0",
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        line = ""
        while not line.startswith("serving"):
            line = lines.get(timeout=120)
        url = line.split(" at ")[1].strip()  # http://127.0.0.1:PORT/v1
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        req = urllib.request.Request(
            f"{url}/chat/completions",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            data = json.loads(resp.read())
        assert data["model"] == "tiny" and data["usage"]["completion_tokens"] <= 3
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
