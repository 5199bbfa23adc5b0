"""fulmen adapters for the OpenAI Agents SDK and for plain openai client code.

* :class:`AgentsSDKAdapter` (``openai-agents``): agent, turn, tool, handoff and guardrail
  structure of Agents SDK runs; :func:`use_gateway` points a run at its episode.
* :class:`OpenAIClientAdapter` (``openai``): plain client code; :func:`episode_client` /
  :func:`async_episode_client` give an episode its own client, :func:`agent_scope` names the
  agent.
"""

from __future__ import annotations

from fulmen_openai._agents_adapter import AgentsSDKAdapter
from fulmen_openai._client_adapter import OpenAIClientAdapter
from fulmen_openai._clients import async_episode_client, episode_client
from fulmen_openai._gateway import gateway_model, use_gateway
from fulmen_openai._scope import agent_scope

__all__ = [
    "AgentsSDKAdapter",
    "OpenAIClientAdapter",
    "agent_scope",
    "async_episode_client",
    "episode_client",
    "gateway_model",
    "use_gateway",
]
