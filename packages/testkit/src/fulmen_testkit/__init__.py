"""fulmen-testkit: the conformance suite every fulmen framework adapter passes.

Subclass :class:`AdapterConformanceTests` in the adapter's tests (see its module docstring).
"""

from __future__ import annotations

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
    "KitStack",
    "KitToolError",
    "kit_task",
    "lookup",
]
