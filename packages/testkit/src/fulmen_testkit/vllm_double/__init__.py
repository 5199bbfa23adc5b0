"""A TEST DOUBLE of vLLM's OpenAI server (not vLLM) and its tiny tokenizer.

Use :class:`VllmDouble` as the upstream of a :class:`~fulmen.gateway.Gateway` in tests and
benchmarks, and script the model's answers with a responder (see :mod:`.generation`). Its
responses are written by :mod:`fulmen.wire` (vLLM's format, shared with the embedded inference
server); :mod:`.bodies` fills them from the double's generations. ``python -m
fulmen_testkit.vllm_double`` serves it alone.
"""

from __future__ import annotations

from fulmen_testkit.vllm_double.generation import (
    Generation,
    RequestParams,
    Responder,
    default_responder,
)
from fulmen_testkit.vllm_double.server import Faults, ReceivedRequest, VllmDouble
from fulmen_testkit.vllm_double.tokenizer import ToyTokenizer, get_tokenizer, render_chat

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
