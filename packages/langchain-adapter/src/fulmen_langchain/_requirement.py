"""What ``fulmen_langchain`` needs installed (checked before LangChain is imported)."""

from __future__ import annotations

from fulmen.adapters import FrameworkRequirement

__all__ = ["REQUIREMENT"]

REQUIREMENT = FrameworkRequirement(
    package="fulmen-langchain",
    modules=("langchain_core", "langchain_openai", "langgraph"),
)
"""LangChain 1.x with its OpenAI chat model, and LangGraph 1.x."""
