"""vLLM's OpenAI wire format, as vLLM 0.32 writes it: bodies, stream chunks, SSE frames, errors.

The one place that knows how a vLLM response looks. Both of fulmen's vLLM-speaking servers
write through it: the embedded inference server (``fulmen_local.server``) and the test double
(``fulmen_testkit.vllm_double``). Field sets, field order, nesting and null-versus-absent follow
responses recorded from a real vLLM 0.32 server (``tests/fixtures/vllm-0.32-cpu``, compared
field by field in ``tests/core/test_vllm_double.py`` and rebuilt byte for byte in
``tests/core/test_wire.py``) and vLLM's own serializers:

* non-streaming bodies carry vLLM's extra fields (``prompt_token_ids``, per-choice
  ``token_ids``, ``stop_reason``, ``kv_transfer_params``...), null when not asked for;
* a streamed chat response opens each choice with a role chunk (which carries
  ``prompt_token_ids`` under ``return_token_ids``), then one chunk per token with its own
  ``token_ids``; ``stop_reason`` appears on a choice's finishing chunk; with
  ``stream_options.include_usage`` a usage chunk follows; ``system_fingerprint`` rides on the
  usage chunk, or on the very last chunk without one; then ``data: [DONE]``;
* JSON is compact and not ASCII-escaped (what pydantic/starlette write for vLLM).

What goes *into* the fields (texts, ids, logprobs, tool calls, finish reasons) is the caller's
business; this package decides only how it is written: :mod:`.framing` (JSON spelling, SSE
events, headers, errors, usage, ``/v1/models``), :mod:`.choices` (logprobs, tool calls,
messages, the choices of bodies and chunks) and :mod:`.envelope` (whole bodies and chunks). It
imports nothing outside the standard library, so the gateway, the backends and the tests can
all use it.

Fulmen's own addition is :data:`POLICY_VERSION_HEADER`, and the ``trailer`` of an
:class:`Envelope`: fields appended to every body (the embedded server's ``policy_version``).
"""

from __future__ import annotations

from fulmen.wire.choices import (
    Finished,
    TopLogprobs,
    chat_choice,
    chat_chunk_choice,
    chat_logprob,
    chat_message,
    completion_choice,
    completion_chunk_choice,
    completion_logprobs,
    role_choice,
    sends_chat_chunk,
    tool_call,
    tool_call_delta,
)
from fulmen.wire.envelope import Envelope
from fulmen.wire.framing import (
    ERROR_TYPES,
    POLICY_VERSION_HEADER,
    SSE_CONTENT_TYPE,
    SSE_DONE,
    dumps,
    error_body,
    model_list,
    sse_event,
    usage,
)

__all__ = [
    "ERROR_TYPES",
    "POLICY_VERSION_HEADER",
    "SSE_CONTENT_TYPE",
    "SSE_DONE",
    "Envelope",
    "Finished",
    "TopLogprobs",
    "chat_choice",
    "chat_chunk_choice",
    "chat_logprob",
    "chat_message",
    "completion_choice",
    "completion_chunk_choice",
    "completion_logprobs",
    "dumps",
    "error_body",
    "model_list",
    "role_choice",
    "sends_chat_chunk",
    "sse_event",
    "tool_call",
    "tool_call_delta",
    "usage",
]
