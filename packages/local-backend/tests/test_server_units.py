"""Unit tests of the server's pure parts: sampler, detokenizer/stop strings, request validation
(tool-call parsers: ``test_tool_parsers.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from fulmen_local.server.errors import ApiError
from fulmen_local.server.params import parse_chat_request, sampling_params
from fulmen_local.server.sampling import (
    SamplingParams,
    SamplingParamsError,
    draw_uniforms,
    sample_tokens,
)
from fulmen_local.server.textstream import TextStream

# ----------------------------------------------------------------------------- sampling


def test_greedy_rows_take_argmax_and_sampled_rows_follow_distribution() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [0.0, 2.0, 1.0]]).repeat(2000, 1)
    temps = torch.tensor([0.0, 1.0]).repeat(2000)
    uniforms = draw_uniforms(7, 1, 4000)[0]
    tokens = sample_tokens(logits, temps, torch.ones(4000), uniforms)
    assert bool((tokens[0::2] == 1).all())
    sampled = tokens[1::2]
    expected = torch.softmax(torch.tensor([0.0, 2.0, 1.0]), -1)
    freq = torch.bincount(sampled, minlength=3).float() / sampled.numel()
    assert torch.allclose(freq, expected, atol=0.04), (freq, expected)


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(500, 1)
    uniforms = draw_uniforms(1, 1, 500)[0]
    tokens = sample_tokens(logits, torch.ones(500), torch.full((500,), 0.75), uniforms)
    assert set(tokens.tolist()) == {0, 1}
    tiny = sample_tokens(logits, torch.ones(500), torch.full((500,), 1e-6), uniforms)
    assert set(tiny.tolist()) == {0}


def test_temperature_sharpens_sampling() -> None:
    logits = torch.tensor([[1.0, 0.0]]).repeat(3000, 1)
    uniforms = draw_uniforms(3, 1, 3000)[0]
    hot = sample_tokens(logits, torch.full((3000,), 1.0), torch.ones(3000), uniforms)
    cold = sample_tokens(logits, torch.full((3000,), 0.2), torch.ones(3000), uniforms)
    assert (cold == 0).float().mean() > (hot == 0).float().mean() + 0.2


def test_uniforms_are_seeded_and_choice_zero_does_not_depend_on_n() -> None:
    a = draw_uniforms(5, 1, 10)
    b = draw_uniforms(5, 3, 10)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(b[0], b[1])
    assert not torch.equal(draw_uniforms(None, 1, 10), draw_uniforms(None, 1, 10))


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 4, "temperature": -1.0}, "temperature"),
        ({"max_tokens": 4, "top_p": 0.0}, "top_p"),
        ({"max_tokens": 4, "n": 0}, "n"),
        ({"max_tokens": 4, "top_logprobs": 21}, "top_logprobs"),
        ({"max_tokens": 4, "stop": ("",)}, "stop"),
    ],
)
def test_sampling_params_reject_bad_values(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(SamplingParamsError) as info:
        SamplingParams(**kwargs)  # type: ignore[arg-type]
    assert info.value.param == param


# ----------------------------------------------------------------------------- text stream


def _utf8_decode(ids: Sequence[int]) -> str:
    """A byte-level 'tokenizer': each id is one byte."""
    return bytes(ids).decode("utf-8", errors="replace")


def test_text_stream_holds_back_partial_characters() -> None:
    stream = TextStream(_utf8_decode)
    pieces = [stream.push(b) for b in "aé€b".encode()]
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces) + stream.finish() == "aé€b"
    assert pieces[0] == "a" and pieces[1] == ""  # first byte of é is held back


def test_text_stream_cuts_at_stop_string_spanning_tokens() -> None:
    stream = TextStream(_utf8_decode, stop=("END", "xyz"))
    out = [stream.push(b) for b in b"hello EN"]
    assert "".join(out) == "hello "  # "EN" held back: it may start "END"
    assert stream.push(ord("D")) == ""
    assert stream.stopped == "END"
    assert stream.text == "hello "
    assert stream.push(ord("!")) == ""


def test_text_stream_releases_held_text_when_no_stop_follows() -> None:
    stream = TextStream(_utf8_decode, stop=("END",))
    text = "".join(stream.push(b) for b in b"an EXAMPLE")
    assert text + stream.finish() == "an EXAMPLE"
    assert stream.stopped is None


# ----------------------------------------------------------------------------- requests


def _chat(**extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        (_chat(temperature="hot"), "temperature"),
        (_chat(n=True), "n"),
        (_chat(stop=[1]), "stop"),
        (_chat(top_logprobs=3), "top_logprobs"),
        (_chat(frequency_penalty=0.5), "frequency_penalty"),
        (_chat(response_format={"type": "json_object"}), "response_format"),
        (_chat(tools=[{"type": "function"}]), "tools"),
        (_chat(tool_choice="sometimes"), "tool_choice"),
    ],
)
def test_bad_chat_requests_name_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_chat_request(body)
    assert info.value.status == 400
    assert info.value.param == param
    assert info.value.body()["error"]["type"] == "BadRequestError"


def test_context_checks_match_vllm() -> None:
    req = parse_chat_request(_chat(max_tokens=5000))
    with pytest.raises(ApiError) as info:
        sampling_params(req, prompt_tokens=10, max_model_len=2048)
    assert info.value.message == (
        "max_tokens=5000 cannot be greater than max_model_len=2048. Please request fewer output "
        "tokens. (parameter=max_tokens, value=5000)"
    )
    req = parse_chat_request(_chat(max_tokens=2040))
    with pytest.raises(ApiError) as info:
        sampling_params(req, prompt_tokens=10, max_model_len=2048)
    assert "maximum context length is 2048" in info.value.message
    assert info.value.param == "max_tokens"
    default = sampling_params(parse_chat_request(_chat()), prompt_tokens=10, max_model_len=2048)
    assert default.max_tokens == 2038
