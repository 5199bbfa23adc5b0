"""Training rows: the unit a backend trains on, built from credited transitions.

A row is one token sequence ``prompt_ids + response_ids``. Only response positions whose
``response_mask`` is 1 are trained; their advantages and rollout logprobs are per token.
In the default per-call mode a row is one transition; in prefix-merged mode a row holds several
consecutive calls of one agent, with the tool/observation tokens between them masked (0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainingRow"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingRow:
    """One training sequence. All ``response_*`` tuples and ``advantages`` have equal length."""

    prompt_ids: tuple[int, ...]
    """Prompt token ids (never trained)."""
    response_ids: tuple[int, ...]
    """Response token ids: the policy's output, plus masked observation tokens when merged."""
    response_mask: tuple[int, ...]
    """1 where the token is trained (sampled by the policy and selected), else 0."""
    rollout_logprobs: tuple[float, ...]
    """Logprob of each response token under the rollout policy (0.0 where masked)."""
    advantages: tuple[float, ...]
    """Advantage of each response token (0.0 where masked)."""
    group_id: str
    """GRPO group the row's advantage was computed in (verl's ``uid``)."""
    episode_id: str
    """Episode the row comes from."""
    seqs: tuple[int, ...]
    """Transition ``seq`` numbers in this row (one in per-call mode)."""
    agent: str | None = None
    """Agent that produced the response."""
    truncated: bool = False
    """True when the row was cut to the configured maximum length."""
    policy_version: int | None = None
    """Policy version that generated the response."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form annotations (task id, turn index...)."""

    def __post_init__(self) -> None:
        n = len(self.response_ids)
        for name in ("response_mask", "rollout_logprobs", "advantages"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"TrainingRow.{name}: expected {n} entries (one per response token), "
                    f"got {len(getattr(self, name))}"
                )

    @property
    def num_trained_tokens(self) -> int:
        """Number of response tokens with mask 1."""
        return sum(self.response_mask)
