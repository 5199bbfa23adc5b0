"""The batching engine: batched == unbatched, raw logprobs, seeds, stops, hot swap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch
from fulmen_local.server import (
    ContextLengthError,
    EngineStoppedError,
    GenerationEngine,
    GenerationResult,
    SamplingParams,
    TokenEvent,
)

MESSAGES = [
    "hi",
    "What is 3*4?",
    "x" * 40,
    "tell me a story about a cat",
    "a",
    "0123456789 0123456789",
]


@pytest.fixture
def engine_factory(tokenizer) -> Iterator:
    engines: list[GenerationEngine] = []

    def make(model, **kwargs) -> GenerationEngine:
        engine = GenerationEngine(model, tokenizer, **kwargs)
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


@pytest.fixture
def prompts(prompt_ids) -> list[list[int]]:
    return [prompt_ids([{"role": "user", "content": m}]) for m in MESSAGES]


def _concurrently(
    engine: GenerationEngine, jobs: list[tuple[list[int], SamplingParams]], stagger_s: float = 0.0
) -> list[GenerationResult]:
    results: list[GenerationResult | None] = [None] * len(jobs)

    def run(i: int) -> None:
        time.sleep(stagger_s * i)
        results[i] = engine.generate(jobs[i][0], jobs[i][1], timeout=60)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _fresh_logprobs(model, prompt: list[int], tokens: tuple[int, ...]) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([prompt + list(tokens)])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(prompt) - 1
    return [logprobs[start + i, t].item() for i, t in enumerate(tokens)]


@pytest.mark.parametrize("stagger_s", [0.0, 0.004])
def test_batched_greedy_equals_unbatched(engine_factory, random_model, prompts, stagger_s) -> None:
    jobs = [
        (p, SamplingParams(max_tokens=8 + 4 * i, temperature=0.0, ignore_eos=True, top_logprobs=2))
        for i, p in enumerate(prompts)
    ]
    alone_engine = engine_factory(random_model, max_batch_size=1)
    alone = [alone_engine.generate(p, params, timeout=60) for p, params in jobs]
    batched_engine = engine_factory(random_model, max_batch_size=4, batch_window_ms=20)
    batched = _concurrently(batched_engine, jobs, stagger_s)
    stats = batched_engine.stats
    assert stats.max_rows > 1, "requests were never decoded together"
    if stagger_s:
        assert stats.prefills > 1  # later requests joined a running batch
    texts = {a.outputs[0].text for a in alone}
    assert len(texts) > 1, "the test model should answer different prompts differently"
    for a, b in zip(alone, batched, strict=True):
        oa, ob = a.outputs[0], b.outputs[0]
        assert oa.token_ids == ob.token_ids
        assert max(abs(x - y) for x, y in zip(oa.logprobs, ob.logprobs, strict=True)) < 1e-4
        assert [t for t, _ in oa.top_logprobs[0]] == [t for t, _ in ob.top_logprobs[0]]
        assert oa.finish_reason == ob.finish_reason == "length"


def test_logprobs_are_raw_log_softmax_of_a_fresh_forward(
    engine_factory, random_model, prompts
) -> None:
    engine = engine_factory(random_model)
    params = SamplingParams(
        max_tokens=12, temperature=1.7, top_p=0.8, seed=3, ignore_eos=True, top_logprobs=3
    )
    out = engine.generate(prompts[1], params, timeout=60).outputs[0]
    fresh = _fresh_logprobs(random_model, prompts[1], out.token_ids)
    assert max(abs(a - b) for a, b in zip(out.logprobs, fresh, strict=True)) < 1e-4
    for tops in out.top_logprobs:
        values = [lp for _, lp in tops]
        assert len(tops) == 3 and values == sorted(values, reverse=True)


def test_seed_reproducible_alone_or_in_a_batch(engine_factory, random_model, prompts) -> None:
    engine = engine_factory(random_model, batch_window_ms=20)
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=42, ignore_eos=True)
    first = engine.generate(prompts[0], params, timeout=60).outputs[0].token_ids
    others = [
        (p, SamplingParams(max_tokens=10, temperature=1.0, ignore_eos=True)) for p in prompts[1:]
    ]
    results = _concurrently(engine, [(prompts[0], params), *others])
    assert results[0].outputs[0].token_ids == first
    other_seed = engine.generate(
        prompts[0], SamplingParams(max_tokens=16, seed=43, ignore_eos=True)
    )
    assert other_seed.outputs[0].token_ids != first


def test_n_expands_into_distinct_choices(engine_factory, random_model, prompts) -> None:
    engine = engine_factory(random_model)
    two = engine.generate(prompts[0], SamplingParams(max_tokens=10, n=2, seed=9, ignore_eos=True))
    one = engine.generate(prompts[0], SamplingParams(max_tokens=10, n=1, seed=9, ignore_eos=True))
    assert [o.index for o in two.outputs] == [0, 1]
    assert two.outputs[0].token_ids != two.outputs[1].token_ids
    assert two.outputs[0].token_ids == one.outputs[0].token_ids


def test_max_tokens_and_stop_strings(engine_factory, random_model, prompts) -> None:
    engine = engine_factory(random_model)
    base = engine.generate(
        prompts[3], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    )
    out = base.outputs[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 20
    stop = out.text[5:7]
    cut = out.text.find(stop)
    stopped = engine.generate(
        prompts[3], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, stop=(stop,))
    ).outputs[0]
    assert stopped.finish_reason == "stop" and stopped.stop_reason == stop
    assert stopped.text == out.text[:cut]
    # the ids keep the token that completed the stop string
    assert stopped.token_ids == out.token_ids[: cut + len(stop)]
    stop_id = out.token_ids[4]
    by_id = engine.generate(
        prompts[3],
        SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, stop_token_ids=(stop_id,)),
    ).outputs[0]
    assert by_id.stop_reason == stop_id and by_id.token_ids[-1] == stop_id
    assert by_id.token_ids == out.token_ids[: out.token_ids.index(stop_id) + 1]


def test_eos_ends_with_stop_and_keeps_the_end_token(
    engine_factory, tool_model, tokenizer, prompt_ids, tool_case
) -> None:
    engine = engine_factory(tool_model)
    prompt = prompt_ids(tool_case.history, [tool_case.tool])
    out = engine.generate(prompt, SamplingParams(max_tokens=40, temperature=0.0)).outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason is None
    assert out.token_ids[-1] == tokenizer.eos_token_id
    assert out.text == tool_case.answer
    assert len(out.logprobs) == len(out.token_ids)


def test_context_overflow_is_refused(engine_factory, random_model) -> None:
    engine = engine_factory(random_model, max_model_len=64)
    with pytest.raises(ContextLengthError):
        engine.submit([5] * 60, SamplingParams(max_tokens=5), lambda e: None)
    assert (
        engine.generate([5] * 59, SamplingParams(max_tokens=5, ignore_eos=True))
        .outputs[0]
        .token_ids
    )


def test_cancel_aborts_a_running_request(engine_factory, random_model, prompts) -> None:
    engine = engine_factory(random_model)
    events: list[TokenEvent] = []
    done = threading.Event()

    def sink(event: TokenEvent) -> None:
        events.append(event)
        if len(events) == 3:
            handle.cancel()
        if event.finish_reason is not None:
            done.set()

    handle = engine.submit(prompts[0], SamplingParams(max_tokens=400, ignore_eos=True), sink)
    assert done.wait(30)
    assert events[-1].finish_reason == "abort" and len(events) < 10


def test_hot_swap_waits_for_the_batch_bumps_version_and_changes_output(
    engine_factory, fresh_random_model, prompts
) -> None:
    model = fresh_random_model
    engine = engine_factory(model, policy_version=3)
    greedy = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    before = engine.generate(prompts[1], greedy)
    assert before.policy_version == 3
    long_events: list[TokenEvent] = []
    long_done = threading.Event()

    def sink(event: TokenEvent) -> None:
        long_events.append(event)
        if event.finish_reason is not None:
            long_done.set()

    engine.submit(prompts[0], SamplingParams(max_tokens=150, ignore_eos=True), sink)
    while not long_events:
        time.sleep(0.001)
    new_state = {k: v * 1.5 for k, v in model.state_dict().items() if k.endswith("weight")}
    version = engine.update_weights(new_state)
    assert long_done.is_set(), "weights changed while a batch was still running"
    assert {e.policy_version for e in long_events} == {3}
    assert version == 4 == engine.policy_version
    after = engine.generate(prompts[1], greedy)
    assert after.policy_version == 4
    assert after.outputs[0].token_ids != before.outputs[0].token_ids
    with pytest.raises(ValueError, match="greater than 4"):
        engine.update_weights(lambda m: None, version=4)
    with pytest.raises(KeyError):
        engine.update_weights({"no.such.weight": torch.zeros(1)})
    assert engine.update_weights(lambda m: None, version=10) == 10


def test_stop_aborts_running_and_queued_requests(tokenizer, random_model, prompts) -> None:
    engine = GenerationEngine(random_model, tokenizer, max_batch_size=1)
    engine.start()
    ends: list[TokenEvent] = []
    first_token = threading.Event()

    def sink(event: TokenEvent) -> None:
        first_token.set()
        if event.finish_reason is not None:
            ends.append(event)

    for p in prompts[:2]:
        engine.submit(p, SamplingParams(max_tokens=400, ignore_eos=True), sink)
    assert first_token.wait(30)
    engine.stop()
    assert [e.finish_reason for e in ends] == ["abort", "abort"]
    with pytest.raises(EngineStoppedError):
        engine.submit(prompts[0], SamplingParams(max_tokens=4), sink)


def _byte_level_chatml_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["héllo wörld, the café costs 3 € — naïve façade", "user assistant system"] * 50
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


def test_other_architecture_with_gqa_and_byte_level_tokenizer() -> None:
    """Qwen2 (grouped-query attention, biased projections) with a byte-level BPE tokenizer:
    batching is exact and the streamed text equals the decode of the generated ids."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _byte_level_chatml_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(8.0)  # sharper logits: varied, multi-byte outputs
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": c}], add_generation_prompt=True, tokenize=False
        )
        for c in ("héllo", "the café costs 3 €", "naïve façade, wörld")
    ]
    assert all(isinstance(t, str) for t in texts)
    prompts = [list(tokenizer(str(t), add_special_tokens=False)["input_ids"]) for t in texts]
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    single = GenerationEngine(model, tokenizer, max_batch_size=1)
    batched = GenerationEngine(model, tokenizer, max_batch_size=8, batch_window_ms=20)
    single.start()
    batched.start()
    try:
        alone = [single.generate(p, params, timeout=60).outputs[0] for p in prompts]
        together = [r.outputs[0] for r in _concurrently(batched, [(p, params) for p in prompts])]
    finally:
        single.stop()
        batched.stop()
    assert len({a.token_ids for a in alone}) > 1
    for a, b in zip(alone, together, strict=True):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
        assert a.text == tokenizer.decode(list(a.token_ids), skip_special_tokens=True)
