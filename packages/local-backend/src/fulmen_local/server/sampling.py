"""Sampling parameters and the batched, per-sequence sampler.

Every sequence carries its own random stream: a table of uniforms drawn up front from a
``torch.Generator`` (seeded by the request's ``seed``, or randomly). Step ``t`` of a sequence
consumes uniform ``t`` through inverse-CDF sampling, so a seeded sequence samples the same
tokens whatever else shares its batch (up to floating-point differences in the logits).

Logprobs are *raw*: ``log_softmax`` of the model's logits before temperature and top-p, like
vLLM's default ``--logprobs-mode raw_logprobs``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch
from fulmen.errors import ServingError

__all__ = [
    "MAX_TOP_LOGPROBS",
    "SamplingParams",
    "SamplingParamsError",
    "draw_uniforms",
    "sample_tokens",
]

MAX_TOP_LOGPROBS = 20
"""Largest number of alternatives per token the engine returns (vLLM's default limit)."""


class SamplingParamsError(ServingError, ValueError):
    """A sampling parameter is invalid. ``param`` names it (the OpenAI request field)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    """How to generate the completions of one request.

    Attributes:
        max_tokens: Most tokens to generate per sequence (>= 1); hitting it ends the sequence
            with ``finish_reason="length"``.
        temperature: 0 means greedy (argmax); otherwise logits are divided by it.
        top_p: Nucleus sampling mass in ``(0, 1]``; 1 disables it.
        n: Number of sequences (choices) to generate from the prompt.
        seed: Makes sampling reproducible; choice ``i`` of a seeded request always draws the
            same random numbers. None draws a fresh random seed.
        stop: Strings that end a sequence (``finish_reason="stop"``, ``stop_reason`` = the
            string); the returned text is cut before the string, the token ids keep the token
            that completed it.
        stop_token_ids: Extra token ids that end a sequence (``stop_reason`` = the id).
        ignore_eos: Keep generating past the end-of-sequence tokens (benchmarks).
        top_logprobs: How many most likely alternatives to return per token (0..20).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        _check_int("max_tokens", self.max_tokens, low=1)
        _check_int("n", self.n, low=1)
        _check_int("top_logprobs", self.top_logprobs, low=0, high=MAX_TOP_LOGPROBS)
        if self.seed is not None:
            _check_int("seed", self.seed, low=-(2**63), high=2**63 - 1)
        _check_number("temperature", self.temperature)
        if self.temperature < 0:
            raise SamplingParamsError(
                "temperature", f"temperature must be >= 0 (0 = greedy), got {self.temperature}"
            )
        _check_number("top_p", self.top_p)
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingParamsError("top_p", f"top_p must be in (0, 1], got {self.top_p}")
        for s in self.stop:
            if not isinstance(s, str) or not s:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise SamplingParamsError("stop", f"stop strings must be non-empty, got {s!r}")
        for t in self.stop_token_ids:
            _check_int("stop_token_ids", t, low=0)

    @property
    def greedy(self) -> bool:
        """True when the sampler takes the argmax."""
        return self.temperature == 0.0


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SamplingParamsError(name, f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise SamplingParamsError(name, f"{name} must be {bound}, got {value}")


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SamplingParamsError(name, f"{name} must be a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise SamplingParamsError(name, f"{name} must be finite, got {value}")


def draw_uniforms(seed: int | None, n: int, length: int) -> torch.Tensor:
    """Uniforms in ``[0, 1)`` for ``n`` sequences of at most ``length`` steps, float64 on CPU.

    Row ``i`` serves choice ``i``; rows of a seeded request do not depend on ``n`` (choice 0 of
    ``n=2`` equals the only choice of ``n=1`` with the same seed).
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed((seed if seed is not None else secrets.randbits(63)) % 2**63)
    return torch.rand((n, length), generator=generator, dtype=torch.float64)


def sample_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    uniforms: torch.Tensor,
    *,
    any_sampled: bool | None = None,
    any_nucleus: bool | None = None,
) -> torch.Tensor:
    """Pick one token per row, on the logits' device.

    Each row's rule depends on that row alone, so a row picks the same token whatever shares
    its batch: temperature 0 takes the argmax; otherwise the tempered distribution is sampled
    by inverse CDF with the row's uniform, over the whole vocabulary in vocabulary order when
    ``top_p == 1``, over the nucleus in order of decreasing probability when ``top_p < 1``.

    Args:
        logits: ``[B, V]`` raw logits (any float dtype; computed in float32).
        temperature: ``[B]``; rows with 0 take the argmax.
        top_p: ``[B]`` nucleus mass per row.
        uniforms: ``[B]`` float64 uniforms in ``[0, 1)``, one per row.
        any_sampled: Whether some row has a temperature above 0; None reads it from
            ``temperature`` (a device-to-host sync on an accelerator).
        any_nucleus: Whether some sampled row has ``top_p < 1``; None reads it from ``top_p``.

    Returns:
        ``[B]`` int64 token ids.
    """
    logits = logits.float()
    greedy = temperature <= 0.0
    chosen = logits.argmax(dim=-1)
    if any_sampled is None:
        any_sampled = not bool(greedy.all())
    if not any_sampled:
        return chosen
    if any_nucleus is None:
        any_nucleus = bool((top_p < 1.0).any())
    safe_t = torch.where(greedy, torch.ones_like(temperature), temperature).clamp_min(1e-6)
    probs = torch.softmax(logits / safe_t.unsqueeze(-1), dim=-1)
    order: torch.Tensor | None = None
    if any_nucleus:
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True, stable=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        keep = before < top_p.unsqueeze(-1)
        keep[:, 0] = True
        kept = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        nucleus = (top_p < 1.0).unsqueeze(-1)
        probs = torch.where(nucleus, kept, probs)
        vocab = torch.arange(probs.shape[-1], device=probs.device).expand_as(sorted_ids)
        order = torch.where(nucleus, sorted_ids, vocab)
    cdf = probs.double().cumsum(dim=-1)
    target = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.shape[-1] - 1)
    sampled = (index if order is None else order.gather(-1, index)).squeeze(-1)
    return torch.where(greedy, chosen, sampled)
