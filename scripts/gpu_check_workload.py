"""Model, tokenizer and request load of ``local_gpu_check.py`` (kept apart to stay short).

Everything here imports torch lazily, so the HTTP client process imports only aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Shape:
    """Model and workload sizes."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    context: int
    prompt: int
    new_tokens: int
    concurrency: int
    train_rows: int
    train_len: int
    micro_batch_tokens: int
    eager_batches: tuple[int, ...]
    stagger_s: float


FULL = Shape(896, 24, 14, 2, 4864, 151_936, 32_768, 256, 256, 128, 128, 512, 8192, (128, 32, 1), 0.25)  # fmt: skip
TINY = Shape(64, 2, 4, 2, 128, 1024, 512, 16, 16, 8, 8, 64, 256, (8, 2, 1), 0.02)
SMALL = Shape(128, 2, 4, 2, 256, 2048, 512, 24, 24, 6, 0, 0, 0, (), 0.0)  # correctness check


def build_tokenizer(vocab: int) -> Any:
    """A word-level tokenizer ``w0 .. w{vocab-3}`` plus ``<|endoftext|>`` and ``<pad>``."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab - 2)} | {
        "<|endoftext|>": vocab - 2,
        "<pad>": vocab - 1,
    }
    backend = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<pad>"
    )


def build_model(shape: Shape, device: Any, dtype: Any, seed: int = 0) -> Any:
    """A random-init Qwen2 of ``shape`` (sdpa) on ``device`` in ``dtype``, eval mode."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sdpa: dict[str, Any] = {"attn_implementation": "sdpa"}
    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.context,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=True,
        pad_token_id=shape.vocab - 1,
        eos_token_id=shape.vocab - 2,
        **sdpa,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval()


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def workload(shape: Shape, seed: int, *, fixed: bool = False) -> list[tuple[list[int], int]]:
    """``concurrency`` (prompt, max_tokens): random ids; max_tokens 0.75x..1.25x new_tokens."""
    rng = random.Random(seed)
    low, high = (shape.new_tokens,) * 2 if fixed else (shape.new_tokens * 3 // 4, shape.new_tokens * 5 // 4)  # fmt: skip
    return [
        ([rng.randrange(shape.vocab - 2) for _ in range(shape.prompt)], rng.randint(low, high))
        for _ in range(shape.concurrency)
    ]


# ----------------------------------------------------------------------------- load


def engine_round(engine: Any, shape: Shape, seed: int, mode: str) -> dict[str, Any]:
    """``concurrency`` requests straight to ``engine``. ``mode``: ``staggered`` (arrivals over
    ``stagger_s``), ``burst`` (all at once, ``new_tokens`` each) or ``warmup`` (all at once,
    request ``i`` cancelled after about ``1 + i // 4`` tokens, so the batch shrinks through
    every size and every CUDA graph bucket gets captured)."""
    from fulmen_local.server import SamplingParams, TokenEvent

    jobs = workload(shape, seed, fixed=mode == "burst")
    n = len(jobs)
    lock, done = threading.Lock(), threading.Event()
    handles: list[Any] = [None] * n
    counts, starts, ends = [0] * n, [0.0] * n, [0.0] * n
    errors: list[str] = []

    def sink_for(i: int) -> Callable[[TokenEvent], None]:
        cancel_after = 1 + i // 4 if i < n - 4 else n // 4 + i - n + 5

        def sink(event: TokenEvent) -> None:
            with lock:
                counts[i] += int(event.token_id is not None)
                if mode == "warmup" and counts[i] >= cancel_after and handles[i] is not None:
                    handles[i].cancel()
                if event.finish_reason is not None:
                    if event.error:
                        errors.append(event.error)
                    ends[i] = time.perf_counter()
                    if all(ends):
                        done.set()

        return sink

    t0 = time.perf_counter()
    for i, (prompt, max_tokens) in enumerate(jobs):
        if mode == "staggered":
            time.sleep(max(0.0, t0 + shape.stagger_s * i / n - time.perf_counter()))
        params = SamplingParams(max_tokens=max_tokens, seed=seed * 1000 + i, ignore_eos=True)
        starts[i] = time.perf_counter()
        with lock:
            handles[i] = engine.submit(prompt, params, sink_for(i))
    if not done.wait(600):
        raise TimeoutError(f"the {mode} round did not finish in 600 s")
    wall = max(ends) - t0
    return {
        "mode": mode,
        "requests": n,
        "generated_tokens": sum(counts),
        "errors": errors[:3],
        "wall_s": wall,
        "tokens_per_s": sum(counts) / wall,
        "mean_latency_s": sum(e - s for s, e in zip(starts, ends, strict=True)) / n,
    }


async def http_round(url: str, shape: Shape, seed: int) -> dict[str, Any]:
    """The staggered load through HTTP: streaming completions, token-id prompts."""
    import aiohttp

    jobs = workload(shape, seed)
    n = len(jobs)
    tokens, ends, errors = [0] * n, [0.0] * n, []
    t0 = time.perf_counter()

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        await asyncio.sleep(shape.stagger_s * i / n)
        body = {
            "model": "gpu-check",
            "prompt": jobs[i][0],
            "max_tokens": jobs[i][1],
            "seed": seed * 1000 + i,
            "ignore_eos": True,
            "logprobs": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with session.post(f"{url}/v1/completions", json=body) as resp:
            if resp.status != 200:
                errors.append(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data: {"):
                    usage = json.loads(line[6:]).get("usage")
                    tokens[i] = int(usage["completion_tokens"]) if usage else tokens[i]
        ends[i] = time.perf_counter()

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(one(session, i) for i in range(n)))
    wall = max(ends) - t0
    return {
        "mode": "staggered_http",
        "requests": n,
        "generated_tokens": sum(tokens),
        "errors": errors[:3],
        "wall_s": wall,
        "tokens_per_s": sum(tokens) / wall,
    }


def generate_together(engine: Any, jobs: list[tuple[list[int], Any]]) -> list[Any]:
    """Run ``jobs`` (prompt, params) as concurrent ``engine.generate`` calls; outputs[0]s."""
    outs: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        outs[i] = engine.generate(jobs[i][0], jobs[i][1], timeout=120).outputs[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return outs


def training_rows(shape: Shape) -> list[Any]:
    """``train_rows`` rows of ``train_len`` random ids, half prompt, half trained response."""
    from fulmen.rows import TrainingRow

    rng = random.Random(7)
    half = shape.train_len // 2
    rows = []
    for i in range(shape.train_rows):
        ids = [rng.randrange(shape.vocab - 2) for _ in range(shape.train_len)]
        rows.append(
            TrainingRow(
                prompt_ids=tuple(ids[:half]),
                response_ids=tuple(ids[half:]),
                response_mask=(1,) * (len(ids) - half),
                rollout_logprobs=tuple(-3.0 * rng.random() for _ in ids[half:]),
                advantages=(rng.choice([-1.0, 1.0]) * rng.random(),) * (len(ids) - half),
                group_id=f"g{i // 8}",
                episode_id=f"e{i}",
                seqs=(0,),
            )
        )
    return rows
