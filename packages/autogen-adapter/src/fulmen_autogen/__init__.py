"""fulmen adapter for AutoGen AgentChat: agents (inside teams too), tool calls and their
results, joined to the exact-token calls fulmen's gateway records.

One line in the agent process::

    from fulmen_autogen import AutoGenAdapter

    ADAPTER = AutoGenAdapter().attach()

and a model client pointed at the episode (``ADAPTER.model_for(ctx, agent="solver")``). See
``README.md``.
"""

from __future__ import annotations

from fulmen_autogen._requirement import REQUIREMENT

REQUIREMENT.check()  # before AutoGen is imported: a missing framework names the install line

from fulmen_autogen._adapter import EVENT_LOGGERS, AutoGenAdapter  # noqa: E402
from fulmen_autogen._client import DEFAULT_MODEL_INFO  # noqa: E402

__all__ = ["DEFAULT_MODEL_INFO", "EVENT_LOGGERS", "AutoGenAdapter"]
