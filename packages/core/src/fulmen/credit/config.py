"""Build an assigner from a config table (``[credit]`` in ``fulmen train``'s TOML).

Every error names the offending key and what is allowed, e.g.::

    [credit] assigner 'grpo' has no option 'gama'; allowed: agents, drop_no_signal, epsilon, ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from fulmen.credit._checks import is_number
from fulmen.credit.base import CreditAssigner
from fulmen.credit.gigpo import STATE_KEYS, GiGPOAssigner
from fulmen.credit.grpo import GRPOAssigner, TurnGRPOAssigner
from fulmen.credit.outcome import BroadcastAssigner, DiscountedAssigner

__all__ = ["ASSIGNERS", "ConfigError", "allowed_options", "assigner_from_config"]

ASSIGNERS: Mapping[str, type[CreditAssigner]] = {
    "broadcast": BroadcastAssigner,
    "discounted": DiscountedAssigner,
    "grpo": GRPOAssigner,
    "turn_grpo": TurnGRPOAssigner,
    "gigpo": GiGPOAssigner,
}
"""Config name → assigner class."""


class ConfigError(ValueError):
    """A ``[credit]`` table is invalid; the message names the key and the allowed values."""


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _names(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list | tuple):
        return None
    items = tuple(cast("Sequence[object]", value))
    return tuple(v for v in items if isinstance(v, str)) if all(isinstance(v, str) for v in items) else None


def _weights(value: Any) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    out: dict[str, float] = {}
    for k, v in cast("Mapping[object, object]", value).items():
        num = _number(v)
        if not isinstance(k, str) or num is None:
            return None
        out[k] = num
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_Parser = Callable[[Any], Any]

_COMMON: dict[str, tuple[_Parser, str]] = {
    "reward_weights": (_weights, 'a table of dimension = weight, e.g. {main = 1.0, format = 0.1}'),
    "agents": (_names, 'a list of agent names, e.g. ["solver"]'),
    "drop_no_signal": (_bool, "true or false"),
}
_NORM: dict[str, tuple[_Parser, str]] = {
    "std_normalize": (_bool, "true or false"),
    "epsilon": (_number, "a number > 0"),
}
_GAMMA: dict[str, tuple[_Parser, str]] = {"gamma": (_number, "a number in [0, 1]")}
_OPTIONS: dict[str, dict[str, tuple[_Parser, str]]] = {
    "broadcast": _COMMON,
    "discounted": _COMMON | _GAMMA,
    "grpo": _COMMON | _NORM | {"split_across_calls": (_bool, "true or false")},
    "turn_grpo": _COMMON | _NORM | _GAMMA,
    "gigpo": _COMMON | _NORM | _GAMMA | {
        "step_weight": (_number, "a number >= 0"),
        "state_key": (_text, " or ".join(repr(k) for k in STATE_KEYS)),
    },
}


def allowed_options(name: str) -> list[str]:
    """Sorted option names of the assigner ``name``."""
    return sorted(_OPTIONS[name])


def assigner_from_config(name: str, options: Mapping[str, Any]) -> CreditAssigner:
    """Build the assigner called ``name`` with ``options`` (the ``[credit]`` table minus
    ``assigner``).

    Args:
        name: one of ``broadcast``, ``discounted``, ``grpo``, ``turn_grpo``, ``gigpo``.
        options: option values as parsed from TOML (numbers, booleans, strings, lists, tables).

    Raises:
        ConfigError: unknown assigner name, unknown option, wrong type or out-of-range value;
            the message names the key and the allowed values.
    """
    if name not in ASSIGNERS:
        raise ConfigError(
            f"[credit] assigner: unknown assigner {name!r}; choose one of: {', '.join(sorted(ASSIGNERS))}"
        )
    spec = _OPTIONS[name]
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key not in spec:
            raise ConfigError(
                f"[credit] assigner {name!r} has no option {key!r}; allowed: {', '.join(allowed_options(name))}"
            )
        parse, expected = spec[key]
        parsed = parse(value)
        if parsed is None:
            raise ConfigError(f"[credit] {key}: expected {expected}, got {value!r} ({type(value).__name__})")
        kwargs[key] = parsed
    try:
        return ASSIGNERS[name](**kwargs)
    except ValueError as exc:
        raise ConfigError(f"[credit] {exc}") from exc
