"""fulmen adapter for LangChain and LangGraph.

``LangChainAdapter().attach()`` annotates every LLM call a LangChain/LangGraph run makes
through the fulmen gateway with its agent, graph node, run path and tool results;
``LangChainAdapter.model_for(ctx)`` is the ``ChatOpenAI`` pointed at the episode.
"""

from __future__ import annotations

from fulmen_langchain._requirement import REQUIREMENT

REQUIREMENT.check()  # before LangChain is imported: a missing framework names the install line

from fulmen_langchain._adapter import LangChainAdapter  # noqa: E402
from fulmen_langchain._handler import LangChainCallbackHandler  # noqa: E402
from fulmen_langchain._runs import AGENT_METADATA_KEY  # noqa: E402

__all__ = ["AGENT_METADATA_KEY", "LangChainAdapter", "LangChainCallbackHandler"]
