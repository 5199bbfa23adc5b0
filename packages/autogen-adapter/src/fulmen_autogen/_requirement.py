"""What ``fulmen_autogen`` needs installed (checked before AutoGen is imported)."""

from __future__ import annotations

from fulmen.adapters import FrameworkRequirement

__all__ = ["REQUIREMENT"]

REQUIREMENT = FrameworkRequirement(
    package="fulmen-autogen",
    modules=("autogen_agentchat", "autogen_core", "autogen_ext.models.openai"),
)
"""AutoGen AgentChat 0.7 with its OpenAI model client (``autogen-ext[openai]``)."""
