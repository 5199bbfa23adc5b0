"""The LangChain callback handler that turns runs into fulmen annotations.

One handler class serves both modes:

* **explicit**: ``config={"callbacks": [adapter.handler]}``; records whenever LangChain calls
  it, attached or not;
* **zero-touch**: LangChain's configure hook builds ``LangChainCallbackHandler()`` (no
  arguments) for every run while an adapter is attached; such a handler records for the
  attached adapter, and stops recording once that adapter is detached.

Contract: thread-safe (LangChain calls it from graph worker threads and, for async runs, from
the default executor); never raises into the run (every body runs under ``Adapter.guard``);
never changes what it observes. Each LLM call is annotated when it ends, before the tools it
asked for run, so ``fulmen.reward(step="current")`` inside a tool resolves to that call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from fulmen_langchain._convert import response_id_of, run_name, tool_call_ids_of, tool_output

if TYPE_CHECKING:
    from fulmen_langchain._adapter import LangChainAdapter

__all__ = ["LangChainCallbackHandler", "bind_zero_touch"]

_zero_touch_adapter: LangChainAdapter | None = None


def bind_zero_touch(adapter: LangChainAdapter | None) -> None:
    """Set the adapter that handlers built by LangChain's configure hook record for."""
    global _zero_touch_adapter
    _zero_touch_adapter = adapter


class LangChainCallbackHandler(BaseCallbackHandler):
    """Records LangChain/LangGraph runs for a :class:`~fulmen_langchain.LangChainAdapter`.

    Use ``adapter.handler`` rather than building one: without ``adapter`` the handler is the
    zero-touch form built by LangChain's configure hook (module docstring).
    """

    def __init__(self, adapter: LangChainAdapter | None = None) -> None:
        """Record for ``adapter`` (explicit mode), or for the attached adapter (zero-touch)."""
        super().__init__()
        self._zero_touch = adapter is None
        self._adapter = adapter if adapter is not None else _zero_touch_adapter

    def _recorder(self) -> LangChainAdapter | None:
        adapter = self._adapter
        if adapter is None or (self._zero_touch and not adapter.attached):
            return None
        return adapter

    # ------------------------------------------------------------------ runs that nest

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A chain, graph or graph node started."""
        if adapter := self._recorder():
            with adapter.guard("on_chain_start"):
                name = run_name(serialized, kwargs.get("name"))
                adapter.runs.start(run_id, parent_run_id, name, metadata)

    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A chain ended."""
        self._forget(run_id, "on_chain_end")

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A chain failed (the error reaches the user unchanged)."""
        self._forget(run_id, "on_chain_error")

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A retriever started (kept in the run tree so runs below it have a path)."""
        if adapter := self._recorder():
            with adapter.guard("on_retriever_start"):
                name = run_name(serialized, kwargs.get("name"))
                adapter.runs.start(run_id, parent_run_id, name, metadata)

    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A retriever ended."""
        self._forget(run_id, "on_retriever_end")

    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A retriever failed."""
        self._forget(run_id, "on_retriever_error")

    # ------------------------------------------------------------------ model calls

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A chat model call started."""
        if adapter := self._recorder():
            with adapter.guard("on_chat_model_start"):
                name = run_name(serialized, kwargs.get("name"))
                adapter.runs.start(run_id, parent_run_id, name, metadata)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A text-completion model call started."""
        if adapter := self._recorder():
            with adapter.guard("on_llm_start"):
                name = run_name(serialized, kwargs.get("name"))
                adapter.runs.start(run_id, parent_run_id, name, metadata)

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """A model call ended: annotate it now, before the tools it asked for run."""
        if adapter := self._recorder():
            with adapter.guard("on_llm_end"):
                response_id = response_id_of(response)
                call = adapter.runs.end_llm(run_id, response_id, tool_call_ids_of(response))
                if response_id is None:
                    adapter.note_missing_response_id()
                elif call is not None:
                    adapter.annotate(call)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """A model call failed (nothing to annotate: the gateway recorded no transition or
        flagged it)."""
        self._forget(run_id, "on_llm_error")

    # ------------------------------------------------------------------ tools

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A tool started; remember which call asked for it."""
        if adapter := self._recorder():
            with adapter.guard("on_tool_start"):
                name = run_name(serialized, kwargs.get("name"))
                ident = kwargs.get("tool_call_id")
                adapter.runs.start(
                    run_id,
                    parent_run_id,
                    name,
                    metadata,
                    tool=True,
                    tool_call_id=ident if isinstance(ident, str) and ident else None,
                )

    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A tool returned: add its result to the call that asked for it."""
        if adapter := self._recorder():
            with adapter.guard("on_tool_end"):
                call = adapter.runs.end_tool(run_id, output=tool_output(output))
                if call is not None:
                    adapter.annotate(call)

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A tool raised: add the error to the call that asked for it (the exception itself
        reaches the user unchanged)."""
        if adapter := self._recorder():
            with adapter.guard("on_tool_error"):
                call = adapter.runs.end_tool(run_id, error=f"{type(error).__name__}: {error}")
                if call is not None:
                    adapter.annotate(call)

    def _forget(self, run_id: UUID, what: str) -> None:
        if adapter := self._recorder():
            with adapter.guard(what):
                adapter.runs.end(run_id)
