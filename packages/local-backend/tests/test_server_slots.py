"""The engine's slot KV cache: compaction, overlapped steps, sliding windows, bf16, refusals."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from fulmen_local.server import GenerationEngine, GenerationResult, SamplingParams
from fulmen_local.server.attention import UnsupportedModelError
from fulmen_local.server.batch import RowSampling, RunningBatch
from fulmen_local.server.sampling import draw_uniforms, sample_tokens


def _fresh_logprobs(model: Any, prompt: list[int], tokens: tuple[int, ...]) -> list[float]:
    """Raw logprobs of ``tokens`` after ``prompt`` from one plain forward pass (float32)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + list(tokens)])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(prompt) - 1
    return [logprobs[start + i, t].item() for i, t in enumerate(tokens)]


def _together(engine: GenerationEngine, jobs: list[tuple[list[int], SamplingParams]]) -> list[Any]:
    results: list[GenerationResult | None] = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = engine.generate(jobs[i][0], jobs[i][1], timeout=60)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(r is not None for r in results)
    return [r.outputs[0] for r in results if r is not None]


def _sharpen(model: Any, factor: float = 6.0) -> Any:
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(factor)  # larger logits: greedy outputs that vary between prompts
    return model.eval()


def test_dropping_rows_keeps_the_others_exact(random_model: Any) -> None:
    """Rows move into freed slots; the moved rows' next logits equal a fresh forward's."""
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [15, 16, 17, 18]]
    uniforms = torch.full((8,), 0.5, dtype=torch.float64)
    batch = RunningBatch(random_model, capacity=4, pad_id=0, device=torch.device("cpu"))
    fed: list[list[int]] = [[] for _ in prompts]
    with torch.inference_mode():
        batch.admit(prompts[:2], [RowSampling(0.0, 1.0, uniforms)] * 2)
        batch.admit(prompts[2:], [RowSampling(0.0, 1.0, uniforms)] * 2)
        alive = [0, 1, 2, 3]
        for step in range(4):
            if step == 2:
                batch.drop([0, 2, 3])  # row 1 leaves; rows 2 and 3 move up
                alive = [0, 2, 3]
            tokens = torch.tensor([20 + step + r for r in alive])
            for r, t in zip(alive, tokens.tolist(), strict=True):
                fed[r].append(t)
            batch.advance(tokens)
        assert batch.logits is not None
        got = torch.log_softmax(batch.logits, dim=-1)
        for i, r in enumerate(alive):
            ids = torch.tensor([prompts[r] + fed[r]])
            want = torch.log_softmax(random_model(ids).logits[0, -1].float(), dim=-1)
            assert float((got[i] - want).abs().max()) < 1e-4


def test_overlapped_steps_equal_rows_generated_alone(tokenizer: Any, random_model: Any) -> None:
    jobs = [
        (
            [1 + i, 2 + i, 3 + 2 * i, 4],
            SamplingParams(max_tokens=6 + 3 * i, temperature=0.0, ignore_eos=True),
        )
        for i in range(5)
    ]
    alone = GenerationEngine(random_model, tokenizer, max_batch_size=1)
    overlapped = GenerationEngine(
        random_model, tokenizer, max_batch_size=4, batch_window_ms=20, overlap_steps=True
    )
    alone.start()
    overlapped.start()
    try:
        want = [alone.generate(p, s, timeout=60).outputs[0] for p, s in jobs]
        got = _together(overlapped, jobs)
        stats = overlapped.stats
    finally:
        alone.stop()
        overlapped.stop()
    assert stats.max_rows > 1
    for a, b in zip(want, got, strict=True):
        assert a.token_ids == b.token_ids and len(b.token_ids) == len(a.token_ids)
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
    assert stats.generated_tokens == sum(s.max_tokens for _, s in jobs)


def _qwen2_mixed() -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=103, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        use_sliding_window=True, sliding_window=5, max_window_layers=1,
    )  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def _mistral_sliding() -> Any:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=103, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        sliding_window=4, head_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    return MistralForCausalLM(config)


def _gemma2_eager() -> Any:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    eager: dict[str, Any] = {"attn_implementation": "eager"}  # softcapping needs eager
    config = Gemma2Config(
        vocab_size=103, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        sliding_window=4, **eager,
    )  # fmt: skip
    torch.manual_seed(0)
    return Gemma2ForCausalLM(config)


@pytest.mark.parametrize("build", [_qwen2_mixed, _mistral_sliding, _gemma2_eager])
def test_sliding_window_layers_match_a_plain_forward(tokenizer: Any, build: Any) -> None:
    """Prompts and generations longer than the window: the engine's masks give the logprobs
    of transformers' own sliding-window masks, batched or not."""
    model = _sharpen(build(), 3.0)
    window = model.config.sliding_window
    assert window is not None and window < 9
    prompts = [list(range(3, 3 + n)) for n in (9, 4, 12)]
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    engine = GenerationEngine(model, tokenizer, max_batch_size=4, batch_window_ms=20)
    engine.start()
    try:
        outs = _together(engine, [(p, params) for p in prompts])
    finally:
        engine.stop()
    worst_if_full = 0.0
    for prompt, out in zip(prompts, outs, strict=True):
        fresh = _fresh_logprobs(model, prompt, out.token_ids)
        assert max(abs(a - b) for a, b in zip(out.logprobs, fresh, strict=True)) < 1e-4
        model.config.sliding_window = 10_000  # the same model without a window
        full = _fresh_logprobs(model, prompt, out.token_ids)
        model.config.sliding_window = window
        worst_if_full = max(
            worst_if_full, *(abs(a - b) for a, b in zip(out.logprobs, full, strict=True))
        )
    assert worst_if_full > 1e-2, "the window never mattered: the test would not catch a bug"


def test_bf16_model_gives_float32_logprobs_close_to_a_forward(tokenizer: Any) -> None:
    model = _sharpen(_qwen2_mixed(), 2.0).to(torch.bfloat16)
    engine = GenerationEngine(model, tokenizer, max_batch_size=2)
    engine.start()
    try:
        params = SamplingParams(max_tokens=8, temperature=1.0, seed=1, ignore_eos=True)
        out = engine.generate([4, 5, 6, 7, 8], params, timeout=60).outputs[0]
    finally:
        engine.stop()
    fresh = _fresh_logprobs(model, [4, 5, 6, 7, 8], out.token_ids)
    assert all(isinstance(x, float) for x in out.logprobs)
    assert max(abs(a - b) for a, b in zip(out.logprobs, fresh, strict=True)) < 0.1


class _NoCacheModel(torch.nn.Module):
    """A causal LM that keeps no keys/values (ignores ``past_key_values``)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        return self.inner(input_ids=input_ids)


def test_models_the_engine_cannot_batch_are_refused_up_front(
    tokenizer: Any, random_model: Any
) -> None:
    with pytest.raises(UnsupportedModelError, match="past_key_values.update"):
        GenerationEngine(_NoCacheModel(random_model), tokenizer)
    model = _qwen2_mixed()
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(UnsupportedModelError, match="attn_implementation='sdpa'"):
        GenerationEngine(model, tokenizer)


def test_sampling_rule_of_a_row_does_not_depend_on_its_neighbours() -> None:
    """A top_p=1 row samples the same token whether or not nucleus rows share the batch."""
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    uniforms = draw_uniforms(4, 1, 3)[0]
    temps = torch.ones(3)
    mixed = sample_tokens(logits, temps, torch.tensor([1.0, 0.5, 1.0]), uniforms)
    for row in (0, 2):
        alone = sample_tokens(
            logits[row : row + 1], temps[:1], torch.ones(1), uniforms[row : row + 1]
        )
        assert int(alone[0]) == int(mixed[row])
    nucleus = sample_tokens(logits[1:2], temps[:1], torch.tensor([0.5]), uniforms[1:2])
    assert int(nucleus[0]) == int(mixed[1])
