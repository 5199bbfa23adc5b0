"""What ``fulmen_openai`` needs installed (checked before the openai libraries are imported)."""

from __future__ import annotations

from fulmen.adapters import FrameworkRequirement

__all__ = ["REQUIREMENT"]

REQUIREMENT = FrameworkRequirement(package="fulmen-openai", modules=("openai", "agents"))
"""The ``openai`` client and the OpenAI Agents SDK (``openai-agents``); both adapters of the
package share it."""
