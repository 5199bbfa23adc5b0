"""The transition/reward protocol: what fulmen records about every episode.

An **episode** is one run of the user's agent on one **task**. Every LLM call the agent makes
during the episode becomes one **transition** (one per returned choice), holding the exact
prompt and response token ids and logprobs the inference server used. **Rewards** are attached
to the episode, optionally to one step (transition) of it, one named dimension, or one agent.

All records are frozen, keyword-only dataclasses. They round-trip through JSON
(:meth:`Transition.to_json` / :meth:`Transition.from_json`, same for the others) with a schema
version; decoding validates every field and raises :class:`ProtocolError` naming the field and
the expected type.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, ClassVar, Self

from fulmen.errors import FulmenError

__all__ = [
    "SCHEMA_VERSION",
    "Annotation",
    "Episode",
    "EpisodeRecord",
    "EpisodeStatus",
    "FailedCall",
    "ProtocolError",
    "Reward",
    "Task",
    "TerminationReason",
    "Transition",
    "annotate_transitions",
    "request_id_of",
]

SCHEMA_VERSION = 1
"""Version of the JSON encoding; bumped on any incompatible change to a record's fields."""


class ProtocolError(FulmenError, ValueError):
    """A record failed validation. The message names the field and the expected type."""


class EpisodeStatus(StrEnum):
    """Life cycle of an episode: ``queued → running → succeeded | failed | timed_out | cancelled``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the four terminal states."""
        return self not in (EpisodeStatus.QUEUED, EpisodeStatus.RUNNING)


class TerminationReason(StrEnum):
    """Why an episode ended. Only ``COMPLETED`` episodes are ever used for training."""

    COMPLETED = "completed"
    """The agent returned normally."""
    AGENT_ERROR = "agent_error"
    """The agent's own code raised an exception (a bug or a framework error)."""
    UPSTREAM_ERROR = "upstream_error"
    """The inference server failed or was unreachable (infrastructure, never the policy's fault)."""
    TIMEOUT = "timeout"
    """The episode ran past its time limit."""
    CANCELLED = "cancelled"
    """The run was stopped (Ctrl-C, shutdown) before the episode finished."""
    CRASHED = "crashed"
    """The process running the episode died; found at recovery."""
    GATEWAY_UNREACHABLE = "gateway_unreachable"
    """The runner could not reach the gateway (after retries) to record or end the episode."""

    @property
    def infrastructure(self) -> bool:
        """True when the failure is not attributable to the policy (retry, never score)."""
        return self in (
            TerminationReason.UPSTREAM_ERROR,
            TerminationReason.CANCELLED,
            TerminationReason.CRASHED,
            TerminationReason.GATEWAY_UNREACHABLE,
        )


def _now() -> float:
    return time.time()


class _Record:
    """JSON round trip and validation shared by every protocol dataclass."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists, enums their values), with ``schema``."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """Compact JSON text, with ``schema``. (Hot path: the gateway encodes every transition.)"""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        data["schema"] = SCHEMA_VERSION
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_json_default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Validate ``data`` and build the record.

        Raises:
            ProtocolError: unknown schema version, unknown or missing field, or a field of the
                wrong type; the message names the field (``Transition.seq``) and the type.
        """
        if not isinstance(data, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance] - JSON input
            raise ProtocolError(f"{cls.__name__}: expected a JSON object, got {_tname(data)}")
        schema = data.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ProtocolError(
                f"{cls.__name__}.schema: this fulmen reads schema {SCHEMA_VERSION}, got {schema!r}"
                " (upgrade fulmen or re-record the data)"
            )
        from fulmen.validation import build  # msgspec loads on first decode, not on import

        return build(
            cls, data, where=cls.__name__, error=ProtocolError, sep=".", ignore=("schema",)
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Parse JSON text and :meth:`from_dict` it."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{cls.__name__}: invalid JSON ({exc})") from exc
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Task(_Record):
    """One problem the agent is asked to solve."""

    kind: ClassVar[str] = "task"
    id: str
    """Stable identifier, unique within a dataset (episodes of one task form GRPO groups)."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """The task's inputs and reference answers, as the user's agent and reward expect them."""
    split: str = "train"
    """Dataset split (``train``, ``eval``...)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Free-form annotations (difficulty, source...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Episode(_Record):
    """One attempt of the agent at one task."""

    kind: ClassVar[str] = "episode"
    id: str
    """Unique id; also the path segment of the episode's URL ``/rollout/{id}/v1``."""
    task: Task
    """The task run."""
    attempt: int = 1
    """1 for the first attempt; a retry after an infrastructure failure is a new episode with
    attempt + 1."""
    status: EpisodeStatus = EpisodeStatus.QUEUED
    """Where the episode is in its life cycle."""
    termination: TerminationReason | None = None
    """Why it ended (None while queued or running)."""
    error: str | None = None
    """Human-readable error for failed episodes."""
    group_id: str | None = None
    """Episodes that share a group id are compared with each other by GRPO (same task, same
    training step). None outside training."""
    policy_version: int | None = None
    """Policy version the episode was started under, when known."""
    created_at: float = field(default_factory=_now)
    """Unix time the episode was created."""
    started_at: float | None = None
    """Unix time it started running."""
    finished_at: float | None = None
    """Unix time it finished."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Free-form annotations (the agent's return value, runner info...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition(_Record):
    """One LLM call (one returned choice) of an episode, with the server's exact tokens."""

    kind: ClassVar[str] = "transition"
    episode_id: str
    """Episode the call belongs to."""
    seq: int
    """0-based position of this call among the episode's transitions (unique per episode)."""
    request_id: str = ""
    """``X-Request-Id`` sent upstream (``{episode}.{seq}``); the response id is
    ``chatcmpl-{request_id}``, which framework adapters use to join their structure."""
    agent: str | None = None
    """Agent / role name that made the call (filled by an adapter or the request's ``user``)."""
    request_messages: tuple[Mapping[str, Any], ...] = ()
    """OpenAI chat messages sent (for ``/v1/completions``: one user message with the prompt)."""
    request_tools: tuple[Mapping[str, Any], ...] = ()
    """OpenAI tool schemas offered to the model."""
    response_message: Mapping[str, Any] = field(default_factory=dict)
    """The assistant message returned (``role``, ``content``, ``tool_calls``)."""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """Tool calls in the response, OpenAI format (``id``, ``type``, ``function``)."""
    prompt_token_ids: tuple[int, ...] = ()
    """Exact templated prompt ids the server ran (empty when the upstream returned none)."""
    response_token_ids: tuple[int, ...] = ()
    """Exact generated ids, end token included when the server emitted one."""
    response_logprobs: tuple[float, ...] | None = None
    """Logprob of each response token under the rollout policy (None when not returned)."""
    constrained_from: int | None = None
    """Index of the first response token the server sampled under a grammar (forced or
    ``strict`` tool calls, structured output), or None when none was. Its logprobs from there
    on are the constrained distribution's, not the policy's: the trainer recomputes them
    (:mod:`fulmen.gateway.constrained`)."""
    finish_reason: str | None = None
    """``stop``, ``length``, ``tool_calls``..."""
    policy_version: int | None = None
    """Version of the weights that produced the response, when the server reports it."""
    started_at: float = 0.0
    """Unix time the gateway received the call."""
    ended_at: float = 0.0
    """Unix time the gateway finished recording it."""
    upstream_latency_s: float = 0.0
    """Seconds spent waiting for the upstream server."""
    parent_id: str | None = None
    """Lineage: request id of the call this one continues (e.g. a sub-agent's caller)."""
    flags: tuple[str, ...] = ()
    """Quality flags, e.g. ``no_token_ids`` (upstream returned none: never trainable),
    ``no_logprobs``, ``stream``."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Adapter structure (node, span, framework...), sampling parameters, model name."""

    @property
    def trainable(self) -> bool:
        """True when the exact token ids are known."""
        return "no_token_ids" not in self.flags and bool(self.response_token_ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reward(_Record):
    """A scalar reward for an episode, optionally for one step, dimension or agent."""

    kind: ClassVar[str] = "reward"
    episode_id: str
    """Episode rewarded."""
    value: float
    """The reward (finite float)."""
    name: str | None = None
    """Dimension for multi-dimensional rewards; None is the main (outcome) reward."""
    step: int | None = None
    """Transition ``seq`` the reward belongs to; None means the episode's outcome."""
    agent: str | None = None
    """Agent the reward is for (multi-agent routing); None means every agent."""
    created_at: float = field(default_factory=_now)
    """Unix time it was recorded."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Free-form annotations."""

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ProtocolError(f"Reward.value: expected float, got {_tname(self.value)}")
        if self.value != self.value or self.value in (float("inf"), float("-inf")):
            raise ProtocolError(f"Reward.value: expected a finite float, got {self.value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Annotation(_Record):
    """Structure a framework adapter adds to one recorded LLM call, joined by request id.

    The gateway records the exact tokens; only the framework knows which agent or graph node
    made the call and what its tool calls returned. An adapter sends that as annotations (any
    number per call, e.g. one when the call ends and one per tool result), and the store merges
    them into the :class:`Transition` when it is read (:func:`annotate_transitions`).
    """

    kind: ClassVar[str] = "annotation"
    episode_id: str
    """Episode of the call."""
    request_id: str
    """The call's ``request_id`` (``{episode}.{seq}``; the response id without ``chatcmpl-``)."""
    framework: str
    """Adapter that wrote it: ``langchain``, ``openai-agents``, ``autogen``, ``dspy``..."""
    agent: str | None = None
    """Agent / role that made the call (becomes :attr:`Transition.agent`)."""
    node: str | None = None
    """Graph node, span or module that made the call (``langgraph_node``, predictor name...)."""
    path: tuple[str, ...] = ()
    """Run tree from the outermost run down to the call (names of the enclosing runs)."""
    tool_results: tuple[Mapping[str, Any], ...] = ()
    """Results of the tools the call asked for: ``{tool_call_id, name, output}`` or with
    ``error`` instead of ``output``. Appended across annotations."""
    created_at: float = field(default_factory=_now)
    """Unix time it was recorded."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Anything else the adapter knows (handoffs, guardrails, run ids...); merged key by key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedCall(_Record):
    """An LLM call of an episode that the upstream did not complete, recorded by the gateway.

    Kept durably (it survives a gateway restart) so that an episode whose agent caught the
    error and returned normally is still ended as failed, never scored (see
    :attr:`infrastructure`).
    """

    kind: ClassVar[str] = "failed_call"
    episode_id: str
    """Episode of the call."""
    request_id: str
    """The call's ``X-Request-Id`` (``{episode}.{first seq}``)."""
    reason: str
    """Short reason: ``upstream_unavailable``, ``upstream_timeout``, ``upstream_error`` (5xx or
    an error event mid-stream), ``upstream_invalid_response``, ``upstream_incomplete``, or
    ``upstream_rejected`` (an upstream 4xx); ``agent_gone`` (the agent closed its connection
    before the answer was sent: not recorded as a call, not an infrastructure failure)."""
    message: str
    """What happened, in words."""
    upstream_status: int | None = None
    """The upstream's HTTP status, when it answered one."""
    infrastructure: bool = True
    """True unless the upstream refused the agent's own request (a 4xx other than 401, 403,
    404, 408 and 429): an episode with an infrastructure failure is failed, never scored."""
    created_at: float = field(default_factory=_now)
    """Unix time it was recorded."""


def request_id_of(response_id: str) -> str:
    """The request id in an OpenAI response id (``chatcmpl-{id}`` / ``cmpl-{id}`` → ``{id}``)."""
    for prefix in ("chatcmpl-", "cmpl-"):
        if response_id.startswith(prefix):
            return response_id[len(prefix) :]
    return response_id


def annotate_transitions(
    transitions: Sequence[Transition], annotations: Sequence[Annotation]
) -> list[Transition]:
    """``transitions`` with ``annotations`` (in recording order) merged in.

    Per call: :attr:`Transition.agent` becomes the last non-None annotated agent; the metadata
    gains ``framework``, ``node`` and ``path`` (last non-empty wins), ``tool_results`` (all,
    in order) and each annotation's own metadata keys (later ones win). Annotations whose
    request id matches no transition are ignored.
    """
    if not annotations:
        return list(transitions)
    by_request: dict[str, list[Annotation]] = {}
    for note in annotations:
        by_request.setdefault(note.request_id, []).append(note)
    out: list[Transition] = []
    for t in transitions:
        notes = by_request.get(t.request_id)
        if not notes:
            out.append(t)
            continue
        agent = t.agent
        meta: dict[str, Any] = dict(t.metadata)
        results: list[Mapping[str, Any]] = list(meta.get("tool_results", ()))
        for note in notes:
            agent = note.agent if note.agent is not None else agent
            meta["framework"] = note.framework
            if note.node is not None:
                meta["node"] = note.node
            if note.path:
                meta["path"] = list(note.path)
            results.extend(note.tool_results)
            meta.update(note.metadata)
        if results:
            meta["tool_results"] = results
        out.append(replace(t, agent=agent, metadata=meta))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeRecord:
    """Everything recorded about one episode: what credit assignment consumes."""

    episode: Episode
    """The episode, in its final state."""
    transitions: tuple[Transition, ...]
    """Its transitions ordered by ``seq``."""
    rewards: tuple[Reward, ...]
    """Its rewards in recording order."""


# --------------------------------------------------------------------------- helpers


def _tname(value: object) -> str:
    return type(value).__name__


def _json_default(value: Any) -> Any:
    """What :func:`json.dumps` cannot encode natively: nested records and non-dict mappings.
    (Tuples encode as arrays and StrEnums as their string values natively.)"""
    if isinstance(value, _Record):
        return {f.name: getattr(value, f.name) for f in fields(value)}  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
