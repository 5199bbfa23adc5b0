"""The families by name: :data:`FAMILIES` and :func:`get_family`."""

from __future__ import annotations

from fulmen_local.families import gemma2, gemma3, llama3, phi3, phi4_mini, qwen2, qwen3, smollm2
from fulmen_local.families.spec import FamilySpec

__all__ = ["FAMILIES", "get_family"]

_ALL = (
    qwen2.SPEC, qwen3.SPEC, llama3.SPEC, smollm2.SPEC, gemma2.SPEC, gemma3.SPEC, phi3.SPEC,
    phi4_mini.SPEC,
)
FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in _ALL}
"""Every supported family, by :attr:`FamilySpec.name`."""


def get_family(name: str) -> FamilySpec:
    """The family called ``name``.

    Raises:
        ValueError: no such family (the message lists the known ones).
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]
