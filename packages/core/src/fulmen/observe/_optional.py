"""The one place that turns a missing optional package into an error naming the install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from fulmen.errors import MissingDependencyError

__all__ = ["MissingDependencyError", "is_installed", "require"]


def is_installed(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a None entry in sys.modules
        return False


def require(module: str, *, feature: str, package: str, install: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``install``.

    Args:
        module: Import name (``wandb``, ``opentelemetry.sdk.trace``).
        feature: What needs it, for the message (``[run] trackers = ["wandb"]``).
        package: The distribution that provides it.
        install: The command that installs it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(feature=feature, package=package, install=install) from exc
