"""The LangChain / LangGraph adapter: the one line a user adds, and the episode's model."""

from __future__ import annotations

from typing import Any, ClassVar

from fulmen.adapters import DEFAULT_MODEL, MODEL_TIMEOUT_S, Adapter, FrameworkRequirement
from fulmen.context import EpisodeContext
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from fulmen_langchain import _zero_touch
from fulmen_langchain._handler import LangChainCallbackHandler
from fulmen_langchain._requirement import REQUIREMENT
from fulmen_langchain._runs import RunTree

__all__ = ["LangChainAdapter"]

_EPISODE_OWNED = (
    "api_key",
    "base_url",
    "model_name",
    "openai_api_base",
    "openai_api_key",
    "use_responses_api",
)
"""``ChatOpenAI`` settings :meth:`LangChainAdapter.model_for` takes from the episode."""


class LangChainAdapter(Adapter):
    """Records the structure of LangChain and LangGraph runs for fulmen.

    ``LangChainAdapter().attach()`` is the one line: from then on every LangChain/LangGraph
    run in the process (sync, async, streaming, any thread) gets the adapter's callback
    handler, and each LLM call the gateway recorded is annotated with its agent, graph node,
    run path and the results of the tools it asked for. ``detach()`` stops it. One adapter can
    be attached at a time; without attaching, pass ``adapter.handler`` explicitly
    (``config={"callbacks": [adapter.handler]}``).

    The model must send its calls through the gateway: :meth:`model_for` builds that
    ``ChatOpenAI`` (chat completions, response headers kept for streams).
    """

    framework: ClassVar[str] = "langchain"
    requirement: ClassVar[FrameworkRequirement] = REQUIREMENT

    def __init__(self) -> None:
        """A detached adapter (call :meth:`attach`, or use :attr:`handler` explicitly)."""
        super().__init__()
        self.runs = RunTree()
        """Run-id keyed state of the runs being observed (internal)."""
        self.handler = LangChainCallbackHandler(self)
        """The callback handler, for explicit use: ``config={"callbacks": [handler]}``."""
        self._warned_missing_id = False

    @classmethod
    def model_for(
        cls, ctx: EpisodeContext, model: str = DEFAULT_MODEL, **kwargs: Any
    ) -> ChatOpenAI:
        """A ``ChatOpenAI`` whose calls go to the episode ``ctx``.

        Set for you: ``base_url`` and ``api_key`` from ``ctx``; ``use_responses_api=False``
        (the gateway records chat completions; ``/v1/responses`` has no token ids). Defaults you
        may override: ``include_response_headers=True`` (langchain-openai drops a stream's
        response id, so the adapter joins a streamed call on the gateway's ``X-Request-Id``
        header), ``max_retries=0`` (a retried call would be recorded twice; fulmen retries the
        whole episode) and ``timeout`` :data:`~fulmen.adapters.MODEL_TIMEOUT_S`.

        Args:
            ctx: the episode (given to the agent by fulmen's runner).
            model: the served model name (``[model] name`` of the training config).
            **kwargs: any other ``ChatOpenAI`` argument (``temperature``,
                ``max_completion_tokens``, ``streaming``...).

        Raises:
            AdapterError: ``kwargs`` sets the URL, key, model name or ``use_responses_api``.
        """
        cls._refuse_episode_settings(kwargs, _EPISODE_OWNED)
        options: dict[str, Any] = {"include_response_headers": True, "max_retries": 0, **kwargs}
        if "timeout" not in kwargs and "request_timeout" not in kwargs:
            options["timeout"] = MODEL_TIMEOUT_S
        return ChatOpenAI(
            model=model,
            base_url=ctx.base_url,
            api_key=SecretStr(ctx.api_key),
            use_responses_api=False,
            **options,
        )

    def _attach(self) -> None:
        _zero_touch.enable(self)

    def _detach(self) -> None:
        _zero_touch.disable()

    def note_missing_response_id(self) -> None:
        """An LLM call ended without a response id: it cannot be joined (warned once)."""
        if not self._warned_missing_id:
            self._warned_missing_id = True
            self.log.warning(
                "a LangChain model call ended without a response id, so fulmen cannot join "
                "its structure to the recorded tokens; langchain-openai drops the id of a "
                "streamed response: build the model with LangChainAdapter.model_for(ctx), or "
                "give ChatOpenAI include_response_headers=True"
            )
