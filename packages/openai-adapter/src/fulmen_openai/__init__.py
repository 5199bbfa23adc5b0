"""fulmen adapters for the OpenAI Agents SDK and for plain openai client code.

Which adapter, and what its ``model_for`` returns:

* :class:`AgentsSDKAdapter` (``openai-agents``): agent, turn, tool, handoff and guardrail
  structure of Agents SDK runs. ``AgentsSDKAdapter.model_for(ctx)`` is the ``RunConfig`` a run
  takes (``Runner.run(agent, ..., run_config=...)``): every agent of the run calls the episode.
* :class:`OpenAIClientAdapter` (``openai``): plain client code.
  ``OpenAIClientAdapter.model_for(ctx)`` is an ``OpenAI`` client (``AsyncOpenAI`` with
  ``use_async=True``) of the episode; :func:`agent_scope` names the agent.
"""

from __future__ import annotations

from fulmen_openai._requirement import REQUIREMENT

REQUIREMENT.check()  # before openai is imported: a missing library names the install line

from fulmen_openai._agents_adapter import AgentsSDKAdapter  # noqa: E402
from fulmen_openai._client_adapter import OpenAIClientAdapter  # noqa: E402
from fulmen_openai._scope import agent_scope  # noqa: E402

__all__ = ["AgentsSDKAdapter", "OpenAIClientAdapter", "agent_scope"]
