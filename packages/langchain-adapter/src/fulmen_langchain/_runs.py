"""The run tree an adapter keeps while LangChain runs: who is whose parent, and what each LLM
call's structure (agent, node, path) and each tool result's call are.

State is keyed by LangChain's run ids, never by "the current run", so concurrent episodes in
threads or tasks never mix. Every method is thread-safe and cheap (no I/O under the lock); a
run is forgotten when it ends. Events for unknown runs (a second handler of the same adapter,
a run that started before the adapter saw it) are ignored, never guessed.

Structure of an LLM call:

* **agent**: ``metadata["fulmen_agent"]`` when the user set it (config metadata, node
  metadata, ``model.with_config(metadata=...)``); else the innermost LangGraph graph around
  the call (a subgraph's name, which is its node name in the parent graph; else the root
  graph's name), found through ``langgraph_checkpoint_ns``; else the outermost run's name.
* **node**: ``metadata["langgraph_node"]``; else the nearest enclosing run's name.
* **path**: names of the enclosing runs, outermost first (the call's own run excluded).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fulmen.adapters import CallInfo

__all__ = ["AGENT_METADATA_KEY", "RunTree"]

AGENT_METADATA_KEY = "fulmen_agent"
"""Callback metadata key naming the agent of the calls below it."""

_MAX_TOOL_CALLS = 10_000
"""Tool call ids remembered for joining tool results (oldest forgotten first)."""
_NS_SEPARATOR = "|"


@dataclass(slots=True, kw_only=True)
class _Run:
    name: str
    parent: UUID | None
    ns_depth: int
    node: str | None
    agent: str | None
    metadata: Mapping[str, Any]
    latest_call: str | None = None
    """Response id of the latest LLM call that ended below this run."""
    tool_call_id: str | None = None
    target: str | None = None
    """Tool runs: response id of the call the result belongs to."""


class RunTree:
    """Run-id keyed state of the runs one adapter observes. See the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[UUID, _Run] = {}
        self._call_of_tool: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        """How many runs are open (started, not ended)."""
        with self._lock:
            return len(self._runs)

    def start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        metadata: Mapping[str, Any] | None,
        *,
        tool: bool = False,
        tool_call_id: str | None = None,
    ) -> None:
        """Record a run that started (chain, model, retriever, or a ``tool``).

        A tool's result goes to the call that asked for it: the call whose tool calls hold
        ``tool_call_id`` when LangChain gives one (none when no such call was annotated);
        without one, the latest call that ended under the tool's nearest enclosing run that
        has one.
        """
        meta = metadata or {}
        agent = meta.get(AGENT_METADATA_KEY)
        node = meta.get("langgraph_node")
        run = _Run(
            name=name,
            parent=parent_run_id,
            ns_depth=_ns_depth(meta.get("langgraph_checkpoint_ns")),
            node=node if isinstance(node, str) and node else None,
            agent=agent if isinstance(agent, str) and agent else None,
            metadata=meta,
            tool_call_id=tool_call_id,
        )
        with self._lock:
            if run_id in self._runs:
                return
            if tool and tool_call_id is not None:
                run.target = self._call_of_tool.get(tool_call_id)
            elif tool:
                run.target = self._latest_call_above(parent_run_id)
            self._runs[run_id] = run

    def end_llm(
        self, run_id: UUID, response_id: str | None, tool_call_ids: list[str]
    ) -> CallInfo | None:
        """Forget an LLM run that ended and return its call's structure (None when the run is
        unknown or the framework gave no response id). Its tool call ids are remembered for
        the tools that will run them. A call without an id still becomes its enclosing runs'
        latest call, so a later tool is never joined to an earlier call."""
        with self._lock:
            run = self._runs.pop(run_id, None)
            if run is None:
                return None
            chain = self._ancestors(run.parent)
            for ancestor in chain:
                ancestor.latest_call = response_id
            if response_id is None:
                return None
            for ident in tool_call_ids:
                self._call_of_tool[ident] = response_id
                self._call_of_tool.move_to_end(ident)
            while len(self._call_of_tool) > _MAX_TOOL_CALLS:
                self._call_of_tool.popitem(last=False)
        metadata: dict[str, Any] = {"run_id": str(run_id)}
        step = run.metadata.get("langgraph_step")
        if isinstance(step, int):
            metadata["langgraph_step"] = step
        return CallInfo(
            response_id=response_id,
            agent=_agent_of(run, chain),
            node=run.node or (chain[0].name if chain else None),
            path=tuple(ancestor.name for ancestor in reversed(chain)),
            metadata=metadata,
        )

    def end_tool(
        self, run_id: UUID, *, output: object = None, error: str | None = None
    ) -> CallInfo | None:
        """Forget a tool run that ended (``output``) or failed (``error``) and return the
        annotation carrying ``{tool_call_id, name, output}`` (or ``error``) for the call that
        asked for the tool; None when that call is unknown."""
        with self._lock:
            run = self._runs.pop(run_id, None)
            if run is None:
                return None
            if run.tool_call_id is not None:
                self._call_of_tool.pop(run.tool_call_id, None)
        if run.target is None:
            return None
        result: dict[str, Any] = {"tool_call_id": run.tool_call_id, "name": run.name}
        if error is not None:
            result["error"] = error
        else:
            result["output"] = output
        return CallInfo(response_id=run.target, tool_results=(result,))

    def end(self, run_id: UUID) -> None:
        """Forget a run that ended or failed (chain, retriever, or a model that failed)."""
        with self._lock:
            self._runs.pop(run_id, None)

    # ------------------------------------------------------------------ under the lock

    def _ancestors(self, parent: UUID | None) -> list[_Run]:
        """Known enclosing runs, innermost first."""
        chain: list[_Run] = []
        seen: set[UUID] = set()
        while parent is not None and parent not in seen:
            seen.add(parent)
            run = self._runs.get(parent)
            if run is None:
                break
            chain.append(run)
            parent = run.parent
        return chain

    def _latest_call_above(self, parent: UUID | None) -> str | None:
        for run in self._ancestors(parent):
            if run.latest_call is not None:
                return run.latest_call
        return None


def _ns_depth(namespace: object) -> int:
    """How deep a LangGraph checkpoint namespace is (``""`` → 0, ``"a:1|b:2"`` → 2)."""
    if not isinstance(namespace, str) or not namespace:
        return 0
    return len(namespace.split(_NS_SEPARATOR))


def _agent_of(run: _Run, chain: list[_Run]) -> str | None:
    if run.agent is not None:
        return run.agent
    if run.ns_depth > 0:
        for ancestor in chain:
            if ancestor.ns_depth < run.ns_depth:
                return ancestor.name
    return chain[-1].name if chain else None
