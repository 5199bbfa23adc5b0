"""The LangChain / LangGraph adapter: the one line a user adds."""

from __future__ import annotations

from typing import ClassVar

from fulmen.adapters import Adapter

from fulmen_langchain import _zero_touch
from fulmen_langchain._handler import LangChainCallbackHandler
from fulmen_langchain._runs import RunTree

__all__ = ["LangChainAdapter"]


class LangChainAdapter(Adapter):
    """Records the structure of LangChain and LangGraph runs for fulmen.

    ``LangChainAdapter().attach()`` is the one line: from then on every LangChain/LangGraph
    run in the process (sync, async, streaming, any thread) gets the adapter's callback
    handler, and each LLM call the gateway recorded is annotated with its agent, graph node,
    run path and the results of the tools it asked for. ``detach()`` stops it. One adapter can
    be attached at a time; without attaching, pass ``adapter.handler`` explicitly
    (``config={"callbacks": [adapter.handler]}``).

    The model must send its calls through the gateway (``ChatOpenAI(base_url=ctx.base_url,
    use_responses_api=False)``); a streaming ``ChatOpenAI`` also needs
    ``include_response_headers=True``, because langchain-openai drops the response id of a
    stream (the adapter logs one warning when a call ends without an id).
    """

    framework: ClassVar[str] = "langchain"

    def __init__(self) -> None:
        """A detached adapter (call :meth:`attach`, or use :attr:`handler` explicitly)."""
        super().__init__()
        self.runs = RunTree()
        """Run-id keyed state of the runs being observed (internal)."""
        self.handler = LangChainCallbackHandler(self)
        """The callback handler, for explicit use: ``config={"callbacks": [handler]}``."""
        self._warned_missing_id = False

    def _attach(self) -> None:
        _zero_touch.enable(self)

    def _detach(self) -> None:
        _zero_touch.disable(self)

    def note_missing_response_id(self) -> None:
        """An LLM call ended without a response id: it cannot be joined (warned once)."""
        if not self._warned_missing_id:
            self._warned_missing_id = True
            self.log.warning(
                "a LangChain model call ended without a response id, so fulmen cannot join "
                "its structure to the recorded tokens; langchain-openai drops the id of a "
                "streamed response: create the model with ChatOpenAI(..., "
                "include_response_headers=True)"
            )
