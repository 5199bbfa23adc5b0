"""Real small instruct models for the examples' verl configs (GPU machines with Hub access).

The CPU examples train the project's own tiny models; their ``train_verl.toml`` files name a
real pretrained model instead, fetched on first use by the ``[model] build`` hook below. Nothing
here runs in CI (there is no Hub access there).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["QWEN_0_5B_INSTRUCT", "download", "qwen2_5_0_5b_instruct"]

QWEN_0_5B_INSTRUCT = "Qwen/Qwen2.5-0.5B-Instruct"
"""Hermes-style tool calls (verl's ``tool_call_parser = "hermes"``), 32k context, Apache-2.0."""


def download(repo_id: str, path: Path) -> Path:
    """Download the Hugging Face Hub model ``repo_id`` into ``path``; returns ``path``."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, local_dir=str(path))
    return path


def qwen2_5_0_5b_instruct(path: Path) -> Path:
    """``[model] build`` hook: :data:`QWEN_0_5B_INSTRUCT` into ``path``."""
    return download(QWEN_0_5B_INSTRUCT, path)
