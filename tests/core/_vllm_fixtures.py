"""Where the recorded real vLLM 0.32 responses are (``tests/fixtures/vllm-0.32-cpu``), for the
tests that compare against them; they skip, saying how to get them, when none is found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["FIXTURES", "needs_fixtures"]

_CANDIDATES = [
    os.environ.get("FULMEN_VLLM_FIXTURES", ""),
    str(Path(__file__).resolve().parents[1] / "fixtures" / "vllm-0.32-cpu"),
    "/work/shared/fixtures/vllm-0.32-cpu",
]
FIXTURES = next((Path(p) for p in _CANDIDATES if p and (Path(p) / "README.md").exists()), None)
"""The fixture folder (None when it is nowhere to be found)."""

needs_fixtures = pytest.mark.skipif(
    FIXTURES is None,
    reason="real vLLM fixtures not found: set FULMEN_VLLM_FIXTURES or copy them to "
    "tests/fixtures/vllm-0.32-cpu",
)
"""Mark for a test (or ``pytestmark``) that needs :data:`FIXTURES`."""
