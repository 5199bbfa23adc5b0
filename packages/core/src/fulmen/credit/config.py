"""Build an assigner from a config table (``[credit]`` in ``fulmen train``'s TOML).

Each assigner declares its options itself: they are the fields of its frozen dataclass
(:class:`~fulmen.credit.grpo.GRPOAssigner` has ``std_normalize``, ``epsilon``...), checked by
:mod:`fulmen.validation` (types, finite numbers) and then by the class (ranges). Options a
config file cannot hold (a predicate for ``agents``, a function for ``state_key``) are only
available from Python. Every error names the offending key and what is allowed, e.g.::

    [credit] assigner 'grpo' has no option 'gama'; allowed: agents, drop_no_signal, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fulmen.credit.base import CreditAssigner
from fulmen.credit.gigpo import GiGPOAssigner
from fulmen.credit.grpo import GRPOAssigner, TurnGRPOAssigner
from fulmen.credit.outcome import BroadcastAssigner, DiscountedAssigner
from fulmen.errors import ConfigError
from fulmen.validation import build, did_you_mean, field_types

__all__ = ["ASSIGNERS", "ConfigError", "allowed_options", "assigner_from_config"]

ASSIGNERS: Mapping[str, type[CreditAssigner]] = {
    cls.name: cls
    for cls in (
        BroadcastAssigner, DiscountedAssigner, GRPOAssigner, TurnGRPOAssigner, GiGPOAssigner
    )
}
"""Config name (the class's ``name``) → assigner class."""


def allowed_options(name: str) -> list[str]:
    """Sorted option names of the assigner ``name`` (its dataclass fields)."""
    return sorted(field_types(ASSIGNERS[name]))


def assigner_from_config(
    name: str, options: Mapping[str, Any], *, where: str = "[credit]"
) -> CreditAssigner:
    """Build the assigner called ``name`` with ``options`` (the ``[credit]`` table minus
    ``assigner``).

    Args:
        name: one of ``broadcast``, ``discounted``, ``grpo``, ``turn_grpo``, ``gigpo``.
        options: option values as parsed from TOML (numbers, booleans, strings, lists, tables).
        where: prefix of error messages (``"train.toml: [credit]"``).

    Raises:
        ConfigError: unknown assigner name, unknown option (with the assigners that do have
            it, or a did-you-mean), wrong type, non-finite number or out-of-range value.
    """
    if name not in ASSIGNERS:
        raise ConfigError(
            f"{where} assigner: unknown assigner {name!r}; choose one of: "
            f"{', '.join(sorted(ASSIGNERS))}.{did_you_mean(name, ASSIGNERS)}"
        )
    allowed = allowed_options(name)
    for key in options:
        if key not in allowed:
            owners = [n for n in sorted(ASSIGNERS) if key in field_types(ASSIGNERS[n])]
            hint = did_you_mean(key, allowed)
            if owners:
                hint = f" ({key!r} is an option of: {', '.join(owners)})"
            raise ConfigError(
                f"{where} assigner {name!r} has no option {key!r}; "
                f"allowed: {', '.join(allowed)}.{hint}"
            )
    return build(ASSIGNERS[name], options, where=where)
