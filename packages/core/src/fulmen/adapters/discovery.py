"""Finding installed adapters through the ``fulmen.adapters`` entry-point group.

Each adapter is loaded in isolation: a missing framework or a broken plugin is reported with
its reason and never stops the others from loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from fulmen.adapters.base import Adapter

__all__ = ["GROUP", "AdapterInfo", "discover_adapters"]

GROUP = "fulmen.adapters"
"""Entry-point group adapters register under (``name = "module:AdapterClass"``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterInfo:
    """One registered adapter and whether it loads."""

    name: str
    """Entry-point name (the framework)."""
    target: str
    """``module:Class`` it points to."""
    distribution: str | None
    """Distribution that registered it (``fulmen-langchain``)."""
    version: str | None
    """That distribution's version."""
    adapter: type[Adapter] | None
    """The class, when it loaded."""
    error: str | None
    """Why it did not load (missing framework, bad target...)."""

    @property
    def ok(self) -> bool:
        """True when the adapter class loaded."""
        return self.adapter is not None


def _load(ep: EntryPoint) -> AdapterInfo:
    dist = ep.dist
    adapter: type[Adapter] | None = None
    error: str | None = None
    try:
        loaded = ep.load()
        if isinstance(loaded, type) and issubclass(loaded, Adapter):
            adapter = loaded
        else:
            error = f"{ep.value} is not a fulmen.adapters.Adapter subclass"
    except ModuleNotFoundError as exc:
        error = f"missing module {exc.name!r}: install the framework it adapts ({exc})"
    except Exception as exc:  # a broken plugin must not hide the others
        error = f"{type(exc).__name__}: {exc}"
    return AdapterInfo(
        name=ep.name,
        target=ep.value,
        distribution=dist.name if dist is not None else None,
        version=dist.version if dist is not None else None,
        adapter=adapter,
        error=error,
    )


def discover_adapters() -> list[AdapterInfo]:
    """Every adapter registered in this environment, sorted by name, each loaded in isolation."""
    return sorted((_load(ep) for ep in entry_points(group=GROUP)), key=lambda info: info.name)
