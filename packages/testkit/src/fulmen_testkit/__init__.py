"""fulmen-testkit: the conformance suites every fulmen framework adapter and training backend
passes.

Subclass :class:`AdapterConformanceTests` in an adapter's tests, :class:`BackendConformanceTests`
in a backend's (see their module docstrings).
"""

from __future__ import annotations

from fulmen_testkit.backend_conformance import BackendConformanceTests
from fulmen_testkit.conformance import AdapterConformanceTests
from fulmen_testkit.stack import KitStack
from fulmen_testkit.tasks import (
    MODEL,
    TOOL_DESCRIPTION,
    TOOL_NAME,
    TOOL_REWARD,
    KitToolError,
    kit_task,
    lookup,
)

__all__ = [
    "MODEL",
    "TOOL_DESCRIPTION",
    "TOOL_NAME",
    "TOOL_REWARD",
    "AdapterConformanceTests",
    "BackendConformanceTests",
    "KitStack",
    "KitToolError",
    "kit_task",
    "lookup",
]
