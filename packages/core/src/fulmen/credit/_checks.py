"""Validation of assigner options: errors name the option and the allowed values."""

from __future__ import annotations

import math

__all__ = ["check_finite", "check_positive", "check_unit", "is_number"]


def is_number(value: object) -> bool:
    """True for a finite int or float (bools excluded)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def check_unit(name: str, value: float) -> None:
    """Raise :class:`ValueError` unless ``value`` is a number in [0, 1]."""
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")


def check_positive(name: str, value: float) -> None:
    """Raise :class:`ValueError` unless ``value`` is a finite number > 0."""
    if not is_number(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")


def check_finite(name: str, value: float) -> None:
    """Raise :class:`ValueError` unless ``value`` is a finite number."""
    if not is_number(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
