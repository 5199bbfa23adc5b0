"""Test kit: a TEST DOUBLE of vLLM's OpenAI wire format (not vLLM) and its tiny tokenizer.

Use :class:`VllmDouble` as the upstream of a :class:`~fulmen.gateway.Gateway` in tests and
benchmarks, and script the model's answers with a responder (see :mod:`.generation`).
"""

from __future__ import annotations

from fulmen.testing.generation import Generation, RequestParams, Responder, default_responder
from fulmen.testing.tokenizer import ToyTokenizer, get_tokenizer, render_chat
from fulmen.testing.vllm_double import Faults, ReceivedRequest, VllmDouble

__all__ = [
    "Faults",
    "Generation",
    "ReceivedRequest",
    "RequestParams",
    "Responder",
    "ToyTokenizer",
    "VllmDouble",
    "default_responder",
    "get_tokenizer",
    "render_chat",
]
