"""Shared set-up of the DSPy adapter's tests."""

from __future__ import annotations

import os

# DSPy fetches a model-price map from GitHub on its first LM call (5 s timeout); the tests
# run offline, so use its bundled snapshot.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")
