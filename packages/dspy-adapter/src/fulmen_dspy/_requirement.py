"""What ``fulmen_dspy`` needs installed (checked before DSPy is imported)."""

from __future__ import annotations

from fulmen.adapters import FrameworkRequirement

__all__ = ["REQUIREMENT"]

REQUIREMENT = FrameworkRequirement(package="fulmen-dspy", modules=("dspy",))
"""DSPy 3.x."""
