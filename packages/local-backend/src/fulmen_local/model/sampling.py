"""Batched sampling with a KV cache, returning the logprob of every sampled token.

A small, dependency-free alternative to ``model.generate`` for RL rollouts: prompts of different
lengths are left-padded into one batch, prefilled once, then decoded one token per step; rows
that emitted the end token are dropped from the batch (and its cache) so finished sequences cost
nothing. Logprobs are those of the distribution actually sampled from (``logits / temperature``;
with temperature 1 they are the model's raw logprobs, what the trainer recomputes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from transformers import DynamicCache, PreTrainedModel

__all__ = ["Sample", "sample_batch"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated continuation."""

    token_ids: list[int]
    """Generated ids, the end token included when one was emitted."""
    logprobs: list[float]
    """Logprob of each generated id under the sampling distribution."""
    finish_reason: Literal["stop", "length"]
    """``stop`` when the end token was emitted, ``length`` when ``max_new_tokens`` ran out."""


@torch.no_grad()
def sample_batch(
    model: PreTrainedModel,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[Sample]:
    """Generate one continuation per prompt.

    Args:
        model: a causal LM in eval mode (its dropout, if any, is not touched).
        prompts: token id lists, each non-empty.
        max_new_tokens: generation limit per prompt; also capped so that prompt + output fits the
            model's ``max_position_embeddings``.
        eos_token_id: the end token; a row stops after emitting it.
        pad_token_id: id used for left padding (masked out).
        temperature: 0 for greedy decoding, otherwise sampling from ``softmax(logits / T)``.
        generator: torch random generator for reproducible sampling.

    Returns:
        One :class:`Sample` per prompt, in order.

    Raises:
        ValueError: an empty prompt, a negative temperature or ``max_new_tokens < 1``.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if not prompts:
        return []
    batch = len(prompts)
    width = max(len(p) for p in prompts)
    limit = getattr(model.config, "max_position_embeddings", width + max_new_tokens)
    budget = min(max_new_tokens, limit - width)
    if budget < 1:
        raise ValueError(f"a prompt of {width} tokens leaves no room in a {limit}-token context")

    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attention[i, width - len(p) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)

    cache = DynamicCache()
    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1, :].float()
    next_pos = positions[:, -1] + 1

    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[float]] = [[] for _ in range(batch)]
    finished: list[bool] = [False] * batch
    alive = torch.arange(batch)  # original row index of each row still in the batch

    for step in range(budget):
        if temperature == 0:
            chosen = logits.argmax(dim=-1)
            logp = torch.log_softmax(logits, dim=-1)
        else:
            logp = torch.log_softmax(logits / temperature, dim=-1)
            chosen = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
        chosen_logp = logp.gather(-1, chosen[:, None]).squeeze(-1)
        keep: list[int] = []
        for j, (row, tok, lp) in enumerate(
            zip(alive.tolist(), chosen.tolist(), chosen_logp.tolist(), strict=True)
        ):
            tokens[row].append(tok)
            logprobs[row].append(lp)
            if tok == eos_token_id:
                finished[row] = True
            else:
                keep.append(j)
        if not keep or step == budget - 1:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(index)
            alive, chosen = alive[index], chosen[index]
            attention, next_pos = attention[index], next_pos[index]
        attention = torch.cat([attention, torch.ones((len(alive), 1), dtype=torch.long)], dim=1)
        out = model(
            input_ids=chosen[:, None],
            attention_mask=attention,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float()
        next_pos = next_pos + 1

    return [
        Sample(
            token_ids=tokens[i],
            logprobs=logprobs[i],
            finish_reason="stop" if finished[i] else "length",
        )
        for i in range(batch)
    ]
