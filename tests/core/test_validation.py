"""fulmen.validation: the one typed layer under configs, credit options, backends and records."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import pytest
from fulmen.errors import ConfigError
from fulmen.protocol import Episode, ProtocolError, Reward, Transition
from fulmen.validation import build, convert, describe


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    rate: float = 0.5
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.rate > 1:
            raise ValueError(f"rate = {self.rate}: must be <= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Outer:
    size: int
    color: Color = Color.RED
    mode: Literal["a", "b", "c"] = "a"
    weights: Mapping[str, float] = field(default_factory=dict)
    inner: Inner | None = None
    pick: Sequence[str] | Callable[[str], bool] | None = None


def test_converts_to_the_annotated_types() -> None:
    got = build(
        Outer,
        {"size": 3, "color": "blue", "weights": {"x": 1}, "inner": {"names": ["p"]}, "pick": ["q"]},
        where="[t]",
    )
    assert got == Outer(
        size=3, color=Color.BLUE, weights={"x": 1.0}, inner=Inner(names=("p",)), pick=["q"]
    )
    assert isinstance(got.weights["x"], float) and got.color is Color.BLUE


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"size": "3"}, r"\[t\] size: expected an integer, got '3' \(str\)"),
        ({"size": True}, r"\[t\] size: expected an integer, got True \(bool\)"),
        ({"size": 1, "sise": 2}, r"\[t\] sise: unknown key. Did you mean 'size'\?"),
        ({}, r"\[t\] size: missing required key \(an integer\)"),
        ({"size": 1, "color": "green"}, r"color: expected one of red, blue, got 'green'"),
        ({"size": 1, "mode": "d"}, r"mode: expected one of 'a', 'b', 'c', got 'd'"),
        ({"size": 1, "weights": {"x": "heavy"}}, r"weights.x: expected a number, got 'heavy'"),
        ({"size": 1, "weights": {"x": float("-inf")}}, r"weights.x: expected a finite number, got -inf"),
        ({"size": 1, "inner": {"rate": float("nan")}}, r"\[t\] inner.rate: expected a finite number"),
        ({"size": 1, "inner": {"names": ["ok", 3]}}, r"inner.names\[1\]: expected a string, got 3"),
        ({"size": 1, "inner": {"rtae": 1}}, r"inner.rtae: unknown key. Did you mean 'rate'\?"),
        ({"size": 1, "inner": {"rate": 2}}, r"\[t\] inner: rate = 2.0: must be <= 1"),
        ({"size": 1, "inner": 5}, r"inner: expected a table, got 5 \(int\)"),
        # a data file cannot hold a predicate: only the list form is accepted
        ({"size": 1, "pick": "q"}, r"pick: expected a list of strings, got 'q'"),
    ],
)
def test_errors_name_the_path_what_was_expected_and_what_came(
    table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build(Outer, table, where="[t]")


def test_callers_choose_the_error_class_and_ignored_keys() -> None:
    with pytest.raises(ProtocolError, match="Outer.size"):
        build(Outer, {"size": "x"}, where="Outer", error=ProtocolError, sep=".")
    assert build(Outer, {"size": 1, "schema": 1}, where="Outer", ignore=("schema",)).size == 1


def test_describe() -> None:
    assert describe(tuple[int, ...]) == "a list of integers"
    assert describe(Mapping[str, float] | None) == "a table of numbers"
    assert describe(Literal["x", "y"]) == "'x' or 'y'"
    assert describe(tuple[Literal["x", "y"], ...]) == "a list of 'x' or 'y'"
    assert describe(Inner) == "a table"


def test_convert_single_values() -> None:
    assert convert([1, 2], tuple[float, ...], where="v") == (1.0, 2.0)
    with pytest.raises(ConfigError, match=r"v\[1\]: expected a finite number, got nan"):
        convert([1.0, float("nan")], tuple[float, ...], where="v")


def test_records_refuse_non_finite_floats_when_decoded() -> None:
    """Only ``fulmen_verl.config`` refused NaN before the layer; now every typed float does."""
    with pytest.raises(ProtocolError, match=r"Transition.response_logprobs\[1\]: expected a finite"):
        Transition.from_dict({"episode_id": "e", "seq": 0, "response_logprobs": [-0.5, float("nan")]})
    with pytest.raises(ProtocolError, match="Transition.started_at: expected a finite"):
        Transition.from_dict({"episode_id": "e", "seq": 0, "started_at": float("inf")})
    with pytest.raises(ProtocolError, match="Reward.value"):
        Reward.from_dict({"episode_id": "e", "value": float("inf")})
    # free-form metadata (typed Any) is data, not inspected
    episode = Episode.from_dict({"id": "e", "task": {"id": "t", "data": {"x": float("inf")}}})
    assert episode.task.data["x"] == float("inf")
