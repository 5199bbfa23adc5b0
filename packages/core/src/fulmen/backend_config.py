"""How a backend declares the config table it owns (``[local]``, ``[verl]``...).

A backend registered under the ``fulmen.backends`` entry-point group names its table with a
class attribute, ``config_section = BackendSection("name", parse)``;
:func:`fulmen.config.load_config` finds every installed backend's declaration through
:func:`installed_backend_sections` and validates their tables before anything starts, so core
never names a backend and a new one needs no change in core::

    from fulmen.backend_config import BackendSection
    from fulmen.validation import build

    @dataclass(frozen=True, slots=True, kw_only=True)
    class MySettings:
        pods: int = 1

    def parse_my_settings(table, *, source):
        return build(MySettings, table, where=f"{source}: [mine]")

    class MyBackend:                      # the entry point: fulmen.backends: mine = pkg:MyBackend
        config_section = BackendSection("mine", parse_my_settings)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol

from fulmen.errors import ConfigWarning

__all__ = ["BackendSection", "SectionParser", "installed_backend_sections"]


class SectionParser(Protocol):
    """Validates a backend's raw table into its typed settings.

    Raises :class:`~fulmen.errors.ConfigError` naming ``source``, the table, the key and the fix.
    """

    def __call__(self, table: Mapping[str, Any], /, *, source: str) -> object: ...


@dataclass(frozen=True, slots=True)
class BackendSection:
    """The config table a backend owns, declared by the backend itself.

    Set as the class attribute ``config_section`` of the backend's entry-point class (see the
    module docstring).
    """

    name: str
    """The top-level table (``"local"`` for ``[local]``)."""
    parse: SectionParser
    """Turns the raw table into the backend's typed settings (see :class:`SectionParser`)."""


@cache
def installed_backend_sections() -> dict[str, BackendSection]:
    """``{backend name: its table}`` of every installed backend that declares one.

    Loads each ``fulmen.backends`` entry point (a backend's module, without its heavy
    dependencies); one that fails to load is skipped with a :class:`ConfigWarning`.
    """
    out: dict[str, BackendSection] = {}
    for ep in entry_points(group="fulmen.backends"):
        try:
            owner = ep.load()
        except Exception as exc:  # a broken plugin must not block the other backends' configs
            warnings.warn(
                ConfigWarning(f"backend {ep.name!r} ({ep.value}) cannot be loaded: {exc}"),
                stacklevel=2,
            )
            continue
        section = getattr(owner, "config_section", None)
        if isinstance(section, BackendSection):
            out[ep.name] = section
    return out
