"""fulmen adapter for LangChain and LangGraph.

``LangChainAdapter().attach()`` annotates every LLM call a LangChain/LangGraph run makes
through the fulmen gateway with its agent, graph node, run path and tool results.
"""

from __future__ import annotations

from fulmen_langchain._adapter import LangChainAdapter
from fulmen_langchain._handler import LangChainCallbackHandler
from fulmen_langchain._runs import AGENT_METADATA_KEY

__all__ = ["AGENT_METADATA_KEY", "LangChainAdapter", "LangChainCallbackHandler"]
