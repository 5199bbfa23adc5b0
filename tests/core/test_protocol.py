"""Protocol records: JSON round trip, schema version, validation errors."""

from __future__ import annotations

import pytest
from fulmen.protocol import (
    SCHEMA_VERSION,
    Episode,
    EpisodeStatus,
    ProtocolError,
    Reward,
    Task,
    TerminationReason,
    Transition,
)
from hypothesis import given
from hypothesis import strategies as st

ids = st.lists(st.integers(min_value=0, max_value=200_000), max_size=50).map(tuple)


@given(
    prompt=ids,
    response=ids,
    seq=st.integers(min_value=0, max_value=10_000),
    agent=st.none() | st.text(max_size=10),
    text=st.text(max_size=40),
)
def test_transition_round_trip(
    prompt: tuple[int, ...], response: tuple[int, ...], seq: int, agent: str | None, text: str
) -> None:
    t = Transition(
        episode_id="ep-1",
        seq=seq,
        agent=agent,
        request_messages=({"role": "user", "content": text},),
        response_message={"role": "assistant", "content": text},
        prompt_token_ids=prompt,
        response_token_ids=response,
        response_logprobs=tuple(-0.5 for _ in response),
        flags=("stream",),
    )
    back = Transition.from_json(t.to_json())
    assert back == t
    assert back.to_dict()["schema"] == SCHEMA_VERSION


def test_episode_round_trip_keeps_enums_and_nested_task() -> None:
    e = Episode(
        id="ep-2",
        task=Task(id="t", data={"q": "2+2"}, split="eval"),
        status=EpisodeStatus.FAILED,
        termination=TerminationReason.UPSTREAM_ERROR,
        error="502",
    )
    back = Episode.from_json(e.to_json())
    assert back == e
    assert back.status is EpisodeStatus.FAILED
    assert back.termination is not None and back.termination.infrastructure


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"episode_id": "e", "seq": "1"}, "Transition.seq: expected an integer, got '1'"),
        ({"episode_id": "e", "seq": True}, "Transition.seq: expected an integer, got True"),
        ({"episode_id": "e", "seq": 0, "prompt_token_ids": [1, "x"]}, "Transition.prompt_token_ids[1]: expected an integer, got 'x'"),
        ({"episode_id": "e", "seq": 0, "response_logprobs": "no"}, "Transition.response_logprobs"),
        ({"seq": 0}, "Transition.episode_id: missing required key"),
        ({"episode_id": "e", "seq": 0, "bogus": 1}, "Transition.bogus: unknown key"),
        ({"episode_id": "e", "seq": 0, "schema": 99}, "Transition.schema: this fulmen reads schema"),
    ],
)
def test_validation_names_field_and_type(data: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Transition.from_dict(data)


def test_episode_status_error_lists_allowed_values() -> None:
    with pytest.raises(ProtocolError, match="Episode.status: expected one of queued, running"):
        Episode.from_dict({"id": "e", "task": {"id": "t"}, "status": "done"})


def test_nested_task_error_names_inner_field() -> None:
    with pytest.raises(ProtocolError, match=r"Episode.task.id: expected a string, got 3 \(int\)"):
        Episode.from_dict({"id": "e", "task": {"id": 3}})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1.0", True])
def test_reward_rejects_non_finite_or_non_numbers(value: object) -> None:
    with pytest.raises(ProtocolError, match="Reward.value"):
        Reward(episode_id="e", value=value)  # type: ignore[arg-type]


def test_invalid_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="invalid JSON"):
        Reward.from_json("{not json")


def test_trainable_requires_token_ids() -> None:
    assert Transition(episode_id="e", seq=0, response_token_ids=(1,)).trainable
    assert not Transition(episode_id="e", seq=0).trainable
    assert not Transition(
        episode_id="e", seq=0, response_token_ids=(1,), flags=("no_token_ids",)
    ).trainable
