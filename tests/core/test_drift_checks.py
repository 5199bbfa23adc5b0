"""Drift figures and alarms: thresholds, the schema's drift/ keys, the run summary, and the
token-anomaly detectors on calls shaped like what real servers returned.

The anomaly cases are built from the real character tokenizer of the embedded backend (every
printable character is one token; ``<|im_end|>`` is the end token), so the ids, their text
and the content differ exactly as the cases in ``docs/drift.md`` describe. The end-to-end
checks on recorded episodes are in ``tests/local/test_drift.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fulmen.drift import (
    HFTokenView,
    first_divergence,
    render_check,
    run_drift_summary,
    token_anomalies,
)
from fulmen.drift.tokens import TOKEN_IN_FLAG
from fulmen.errors import BackendError
from fulmen.observe.alarms import AlarmThresholds, check_metrics
from fulmen.protocol import Transition
from fulmen.train.schema import check_update_metrics
from fulmen_local.model.tokenizer import build_tokenizer

TOOLS = ({"type": "function", "function": {"name": "calculator", "parameters": {}}},)


@pytest.fixture(scope="module")
def view() -> HFTokenView:
    return HFTokenView(build_tokenizer())


def _call(view: HFTokenView, text: str, **fields: Any) -> Transition:
    ids = tuple(view.tokenizer(text, add_special_tokens=False)["input_ids"])
    return Transition(episode_id="e", seq=0, prompt_token_ids=(2, 5), response_token_ids=ids, **fields)


def test_first_divergence() -> None:
    assert first_divergence([1, 2, 3], [1, 2, 3, 4]) is None
    assert first_divergence([1, 2, 3], [1, 9, 3, 4]) == 1
    assert first_divergence([1, 2, 3], [1, 2]) == 2
    assert first_divergence([], [5]) is None


def test_a_clean_tool_call_and_a_clean_answer_show_no_anomaly(view: HFTokenView) -> None:
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call><|im_end|>'
    parsed = ({"id": "c", "type": "function", "function": {"name": "calculator", "arguments": "{}"}},)
    t = _call(view, call, request_tools=TOOLS, tool_calls=parsed, response_message={"content": None})
    assert token_anomalies(t, view) == ()
    t = _call(view, "It is 4.<|im_end|>", response_message={"content": "It is 4."}, finish_reason="stop")
    assert token_anomalies(t, view) == ()


def test_a_tool_call_tail_the_stream_parser_dropped(view: HFTokenView) -> None:
    # the ids hold a whole tool call; the streamed response returned neither a tool call nor it
    text = 'Sure. <tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call><|im_end|>'
    t = _call(view, text, request_tools=TOOLS, response_message={"content": "Sure. "})
    assert token_anomalies(t, view) == ("tool_tail_dropped",)
    # left in the content (no parser ran): the agent saw it, not an anomaly
    t = _call(view, text, response_message={"content": text.removesuffix("<|im_end|>")})
    assert token_anomalies(t, view) == ()


def test_special_tokens_in_content_with_tools_and_dropped_from_content(view: HFTokenView) -> None:
    t = _call(view, "4<|im_end|>", request_tools=TOOLS, response_message={"content": "4<|im_end|>"})
    assert token_anomalies(t, view) == ("special_tokens_in_content",)
    t = _call(view, "4<|im_end|>", response_message={"content": "4<|im_end|>"})  # no tools offered
    assert token_anomalies(t, view) == ()
    t = _call(view, "4<|im_start|>2<|im_end|>", response_message={"content": "42"})
    assert token_anomalies(t, view) == ("special_tokens_dropped",)


def test_a_max_tokens_cut_inside_a_utf8_character() -> None:
    class Bytes:
        """A byte-level view: ids are bytes (what a byte-level BPE decodes a cut to)."""

        special_tokens = frozenset[str]()

        def render_prompt(self, messages: Any, tools: Any, template_kwargs: Any) -> list[int]:
            return []

        def decode(self, ids: Any) -> str:
            return bytes(ids).decode("utf-8", errors="replace")

    euro = "price 3€".encode()
    t = Transition(episode_id="e", seq=0, prompt_token_ids=(1,), response_token_ids=tuple(euro[:-1]),
                   response_message={"content": "price 3"}, finish_reason="length")  # fmt: skip
    assert token_anomalies(t, Bytes()) == ("partial_utf8_cut",)
    whole = Transition(episode_id="e", seq=0, prompt_token_ids=(1,), response_token_ids=tuple(euro),
                       response_message={"content": "price 3€"}, finish_reason="length")  # fmt: skip
    assert token_anomalies(whole, Bytes()) == ()


def _row(step: int, **values: float) -> dict[str, Any]:
    return {"kind": "train", "step": step, "llm_calls": 100, **values}


def _logprob(k3: float, mean: float, tokens: float = 500, worst: float = 0.5) -> dict[str, float]:
    return {"drift/logprob_tokens": tokens, "drift/logprob_k3": k3,
            "drift/logprob_abs_diff_mean": mean, "drift/logprob_abs_diff_max": worst}  # fmt: skip


def test_logprob_drift_alarm_thresholds() -> None:
    assert check_metrics([_row(1, **_logprob(0.002, 0.02))]) == []
    [alarm] = check_metrics([_row(1, **_logprob(0.02, 0.05))])
    assert (alarm.kind, alarm.severity) == ("logprob_drift", "warning")
    assert "k3 KL 0.0200" in alarm.message and "max |Δ| 0.500" in alarm.message
    [alarm] = check_metrics([_row(1, **_logprob(0.001, 0.2))])  # the mean alone crosses
    assert alarm.kind == "logprob_drift"
    [alarm] = check_metrics([_row(1, **_logprob(0.2, 0.05))])
    assert alarm.severity == "critical"
    assert check_metrics([_row(1, **_logprob(0.2, 0.5, tokens=0))]) == []  # nothing compared
    # fulmen-verl's bypass mode: the k3 of its loss alone
    [alarm] = check_metrics([_row(1, **{"drift/logprob_k3": 0.05})])
    assert (alarm.kind, alarm.severity) == ("logprob_drift", "warning") and "|Δ|" not in alarm.message
    assert run_drift_summary([_row(1, **{"drift/logprob_k3": 0.05}), _row(2, **{"drift/logprob_k3": 0.03})]) == {
        "drift/logprob_k3": pytest.approx(0.04)
    }
    loose = AlarmThresholds(logprob_drift_k3=0.5, logprob_drift_mean=1.0)
    assert check_metrics([_row(1, **_logprob(0.2, 0.5))], loose) == []


def test_prompt_drift_alarm_on_re_render_mismatches_or_anomalies() -> None:
    ok = {"drift/render_checked": 100.0, "drift/render_mismatches": 1.0, "drift/tool_tail_dropped": 1.0}
    assert check_metrics([_row(1, **ok)]) == []
    [alarm] = check_metrics([_row(1, **{**ok, "drift/render_mismatches": 5.0})])
    assert (alarm.kind, alarm.value) == ("prompt_drift", 0.05)
    assert "5.0% of the re-rendered prompts" in alarm.message
    [alarm] = check_metrics([_row(1, **{**ok, "drift/partial_utf8_cut": 2.0})])
    assert "1 tool_tail_dropped, 2 partial_utf8_cut in 100 calls" in alarm.message
    assert check_metrics([_row(1, **{**ok, "drift/partial_utf8_cut": 2.0})], AlarmThresholds(token_anomaly_rate=0.05)) == []


def test_an_update_may_return_only_the_schema_drift_keys() -> None:
    base = {"loss": 0.1, "grad_norm": 1.0, "num_tokens": 10.0}
    assert check_update_metrics({**base, **_logprob(0.0, 0.0)})["drift/logprob_k3"] == 0.0
    with pytest.raises(BackendError, match="drift/logprob_tokens"):
        check_update_metrics({**base, "drift/prefix_breaks": 1.0})


def test_run_summary_weights_by_compared_tokens_and_pools_rates() -> None:
    rows = [
        _row(1, **_logprob(0.01, 0.1, tokens=100, worst=1.0), **{"drift/prefix_pairs": 10.0, "drift/prefix_breaks": 1.0}),
        _row(2, **_logprob(0.03, 0.3, tokens=300, worst=2.0), **{"drift/prefix_pairs": 30.0, "drift/prefix_breaks": 9.0}),
        {"kind": "eval", "step": 2, "success_rate": 0.5},
    ]
    summary = run_drift_summary(rows)
    assert summary["drift/logprob_tokens"] == 400
    assert summary["drift/logprob_abs_diff_mean"] == pytest.approx((10 + 90) / 400)
    assert summary["drift/logprob_k3"] == pytest.approx((1 + 9) / 400)
    assert summary["drift/logprob_abs_diff_max"] == 2.0
    assert summary["drift/prefix_break_rate"] == pytest.approx(10 / 40)
    assert "drift/render_checked" not in summary


def test_render_check_skips_completions_and_token_in_calls(view: HFTokenView) -> None:
    messages = ({"role": "user", "content": "What is 2+2?"},)
    served = tuple(view.render_prompt(messages, (), {}))
    chat = Transition(episode_id="e", seq=0, request_messages=messages, prompt_token_ids=served,
                      response_token_ids=(3,), metadata={"endpoint": "chat.completions"})  # fmt: skip
    check = render_check(chat, view)
    assert check is not None and check.matches
    shifted = replace(chat, prompt_token_ids=(*served[:-1], 99))
    mismatch = render_check(shifted, view)
    assert mismatch is not None and mismatch.divergence == len(served) - 1
    assert render_check(replace(chat, metadata={"endpoint": "completions"}), view) is None
    assert render_check(replace(shifted, flags=(TOKEN_IN_FLAG,)), view) is None
