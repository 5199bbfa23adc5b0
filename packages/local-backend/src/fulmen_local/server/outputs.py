"""What the engine emits: per-token events, and their assembly into finished completions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "EventSink",
    "GenerationResult",
    "OutputCollector",
    "SequenceOutput",
    "TokenEvent",
]


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One step of one sequence (choice) of a request.

    Every generated token produces exactly one event; the sequence's last event has
    ``finish_reason`` set. A cancelled or failed sequence ends with an event whose
    ``token_id`` is None.
    """

    index: int
    """Choice index within the request (0..n-1)."""
    token_id: int | None
    """The generated token (None only on an ``abort``/``error`` end event)."""
    logprob: float | None
    """Raw logprob of the token (log-softmax of the logits before temperature/top-p)."""
    top_logprobs: tuple[tuple[int, float], ...]
    """The ``top_logprobs`` most likely tokens and their raw logprobs, best first."""
    text: str
    """Newly final text (may be empty: held back for a stop string or a partial character)."""
    finish_reason: str | None
    """None while running; then ``stop``, ``length``, ``abort`` or ``error``."""
    stop_reason: str | int | None
    """The stop string or stop token id that ended the sequence (None for EOS or length)."""
    policy_version: int
    """Policy version of the weights that produced the token."""
    error: str | None = None
    """Error message when ``finish_reason == "error"``."""


EventSink = Callable[[TokenEvent], None]
"""Receives events. Called on the engine's worker thread: it must be quick and must not block
(hand the event to another thread or event loop)."""


@dataclass(frozen=True, slots=True)
class SequenceOutput:
    """One finished choice."""

    index: int
    token_ids: tuple[int, ...]
    """Generated ids, end token included when one was generated."""
    logprobs: tuple[float, ...]
    """Raw logprob of each generated id."""
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...]
    """Per generated id, the requested top alternatives."""
    text: str
    """Decoded text (special tokens skipped, cut before a stop string)."""
    finish_reason: str
    stop_reason: str | int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """All choices of one request."""

    prompt_ids: tuple[int, ...]
    outputs: tuple[SequenceOutput, ...]
    """Choices ordered by index."""
    policy_version: int


class OutputCollector:
    """Accumulates the events of one request into :class:`SequenceOutput` objects.

    Not thread-safe: feed it from one thread (or one event loop).
    """

    def __init__(self, n: int) -> None:
        self._n = n
        self._tokens: list[list[int]] = [[] for _ in range(n)]
        self._logprobs: list[list[float]] = [[] for _ in range(n)]
        self._tops: list[list[tuple[tuple[int, float], ...]]] = [[] for _ in range(n)]
        self._texts: list[list[str]] = [[] for _ in range(n)]
        self._ends: dict[int, TokenEvent] = {}
        self.policy_version: int | None = None

    @property
    def done(self) -> bool:
        """True once every choice has finished."""
        return len(self._ends) == self._n

    def add(self, event: TokenEvent) -> None:
        """Record one event."""
        i = event.index
        self.policy_version = event.policy_version
        if event.token_id is not None:
            self._tokens[i].append(event.token_id)
            self._logprobs[i].append(event.logprob if event.logprob is not None else 0.0)
            self._tops[i].append(event.top_logprobs)
        self._texts[i].append(event.text)
        if event.finish_reason is not None:
            self._ends[i] = event

    def outputs(self) -> tuple[SequenceOutput, ...]:
        """The finished choices, by index. Raises RuntimeError if some are still running."""
        if not self.done:
            raise RuntimeError(f"{self._n - len(self._ends)} choices are still running")
        return tuple(self._output(i) for i in range(self._n))

    def _output(self, i: int) -> SequenceOutput:
        end = self._ends[i]
        return SequenceOutput(
            index=i,
            token_ids=tuple(self._tokens[i]),
            logprobs=tuple(self._logprobs[i]),
            top_logprobs=tuple(self._tops[i]),
            text="".join(self._texts[i]),
            finish_reason=end.finish_reason or "error",
            stop_reason=end.stop_reason,
            error=end.error,
        )

    def result(self, prompt_ids: Sequence[int]) -> GenerationResult:
        """:meth:`outputs` wrapped with the prompt and policy version."""
        return GenerationResult(
            prompt_ids=tuple(prompt_ids),
            outputs=self.outputs(),
            policy_version=self.policy_version if self.policy_version is not None else -1,
        )
