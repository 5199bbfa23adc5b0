"""The DSPy callback that turns module, LM and tool events into fulmen annotations.

DSPy calls every registered ``BaseCallback`` around ``Module.__call__``/``acall``,
``BaseLM.__call__``/``acall`` and ``Tool.__call__``/``acall``, with a fresh ``call_id`` per
call. Before the wrapped call runs, DSPy's ``ACTIVE_CALL_ID`` context variable still holds the
*enclosing* call's id (DSPy resets it around each call and binds it into ``dspy.Parallel``
workers), so each start event knows its parent: that gives the run tree.

* A module call becomes a frame named after the attribute that holds it in its parent module
  (``react``, ``extract``, ``predict``...); a root frame is named after the agent (the
  adapter's ``agent`` name, else the program's class name).
* An LM call is annotated as soon as it ends (before any tool it asked for runs): agent = the
  root's name, path = the frame names from the root down to the module that made the call,
  node = that path below the root joined by dots (``extract.predict``, the name
  ``named_predictors()`` gives), or the root's name when the root itself called the LM.
* A tool call is attributed to the latest LM call that ended under its nearest enclosing
  module; its body runs inside ``fulmen.step_scope`` of that call (so ``fulmen.reward(...,
  step="current")`` lands there) and its result is annotated onto that call. ``ReAct``'s
  built-in ``finish`` pseudo-tool (the model saying it is done) is not reported as a result.

All state is keyed by DSPy's call ids and the episode by the response id: nothing is "the
current run". Every hook body runs under the adapter's guard.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.clients import base_lm
from dspy.utils.callback import BaseCallback
from dspy.utils.callback_context import ACTIVE_CALL_ID
from fulmen.adapters import Adapter, CallInfo, episode_for_response
from fulmen.context import step_scope

from fulmen_dspy._history import LMCallInputs, find_response_ids

__all__ = ["Recorder"]


@dataclass(frozen=True, slots=True)
class _Asker:
    """The LM call a tool is attributed to."""

    response_id: str
    episode_id: str
    seq: int


@dataclass(slots=True)
class _Frame:
    """One running module (or tool) call."""

    instance: object
    parent: _Frame | None
    names: tuple[str, ...]
    last_call: _Asker | None = None


@dataclass(slots=True)
class _ToolRun:
    """One running tool call."""

    name: str
    arguments: object
    asker: _Asker | None
    scope: contextlib.ExitStack
    report: bool


@dataclass(slots=True)
class _LMRun:
    """One running LM call."""

    inputs: LMCallInputs
    frame: _Frame | None


class Recorder(BaseCallback):
    """The callback a :class:`~fulmen_dspy.DSPyAdapter` registers in ``dspy.settings``.

    Thread-safe: DSPy calls it from every thread and task that runs a program.
    """

    def __init__(self, adapter: Adapter, *, agent: str | None) -> None:
        self._adapter = adapter
        self._agent = agent
        self._lock = threading.Lock()
        self._frames: dict[str, _Frame] = {}
        self._lm_runs: dict[str, _LMRun] = {}
        self._tool_runs: dict[str, _ToolRun] = {}
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ modules

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._adapter.guard("on_module_start"):
            parent = self._enclosing()
            if parent is None:
                names = (self._agent or type(instance).__name__,)
            else:
                names = (*parent.names, _child_name(parent.instance, instance))
            with self._lock:
                self._frames[call_id] = _Frame(instance, parent, names)

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        with self._adapter.guard("on_module_end"), self._lock:
            self._frames.pop(call_id, None)

    # ------------------------------------------------------------------ LM calls

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._adapter.guard("on_lm_start"):
            if (
                getattr(instance, "cache", False)
                and inputs.get("kwargs", {}).get("cache") is not False
            ):
                self._warn_once(
                    "cache",
                    "a dspy.LM with cache=True is used: cached answers never reach the gateway, "
                    "so they are not recorded or trained on (use DSPyAdapter.model_for(ctx) or "
                    "cache=False)",
                )
            run = _LMRun(LMCallInputs(instance, inputs), self._enclosing())
            with self._lock:
                self._lm_runs[call_id] = run

    def on_lm_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        with self._adapter.guard("on_lm_end"):
            with self._lock:
                run = self._lm_runs.pop(call_id, None)
            if run is None or exception is not None:
                return
            ids = find_response_ids(run.inputs, base_lm.GLOBAL_HISTORY)
            if ids is None:
                self._warn_once(
                    "history",
                    "DSPy recorded no history entry for an LM call (disable_history=True?): "
                    "its response id is unknown, so the call is not annotated",
                )
                return
            if not ids:
                self._warn_once(
                    "id",
                    "an LM response carries no id (not a fulmen gateway, or an engine that "
                    "drops it): the call is not annotated",
                )
                return
            frame = run.frame
            for response_id in ids:
                self._remember_asker(frame, response_id)
            path = frame.names if frame is not None else ()
            info: dict[str, Any] = {"dspy_call_id": call_id}
            if frame is not None:
                info["module"] = type(frame.instance).__name__
            for response_id in ids:
                self._adapter.annotate(
                    CallInfo(
                        response_id=response_id,
                        agent=path[0] if path else self._agent,
                        node=(".".join(path[1:]) or path[0]) if path else None,
                        path=path,
                        metadata=info,
                    )
                )

    def _remember_asker(self, frame: _Frame | None, response_id: str) -> None:
        found = episode_for_response(response_id)
        if frame is None or found is None:
            return
        ctx, request_id = found
        seq = request_id.rpartition(".")[2]
        asker = _Asker(response_id, ctx.episode_id, int(seq))
        with self._lock:
            node: _Frame | None = frame
            while node is not None:
                node.last_call = asker
                node = node.parent

    # ------------------------------------------------------------------ tools

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._adapter.guard("on_tool_start"):
            parent = self._enclosing()
            name = str(getattr(instance, "name", None) or type(instance).__name__)
            asker: _Asker | None = None
            with self._lock:
                node = parent
                while node is not None and asker is None:
                    asker, node = node.last_call, node.parent
                names = (*parent.names, name) if parent is not None else (name,)
                self._frames[call_id] = _Frame(instance, parent, names)
            scope = contextlib.ExitStack()
            if asker is not None:
                scope.enter_context(step_scope(asker.episode_id, asker.seq))
            # ReAct's built-in ``finish`` is how the model says it is done, not a tool call.
            report = not (
                name == "finish" and parent is not None and isinstance(parent.instance, dspy.ReAct)
            )
            run = _ToolRun(name, inputs.get("kwargs", inputs), asker, scope, report)
            with self._lock:
                self._tool_runs[call_id] = run

    def on_tool_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        with self._adapter.guard("on_tool_end"):
            with self._lock:
                self._frames.pop(call_id, None)
                run = self._tool_runs.pop(call_id, None)
            if run is None:
                return
            run.scope.close()
            if run.asker is None or not run.report:
                return
            item: dict[str, Any] = {
                "tool_call_id": None,
                "name": run.name,
                "arguments": _jsonable(run.arguments),
            }
            if exception is not None:
                item["error"] = f"{type(exception).__name__}: {exception}"
            else:
                item["output"] = _jsonable(outputs)
            self._adapter.annotate(
                CallInfo(response_id=run.asker.response_id, tool_results=(item,))
            )

    # ------------------------------------------------------------------ helpers

    def _enclosing(self) -> _Frame | None:
        """The frame of the call running around the current hook (None at the top)."""
        parent_id = ACTIVE_CALL_ID.get()
        if parent_id is None:
            return None
        with self._lock:
            return self._frames.get(parent_id)

    def _warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        self._adapter.log.warning("fulmen dspy adapter: %s", message)


def _child_name(parent: object, child: object) -> str:
    """The attribute of ``parent`` that holds ``child`` (``react``, ``layers[2]``...), else
    the child's class name."""
    attributes: Mapping[str, object] = getattr(parent, "__dict__", {})
    for key, value in attributes.items():
        if value is child:
            return key
        if isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if item is child:
                    return f"{key}[{index}]"
        elif isinstance(value, Mapping):
            for item_key, item in value.items():
                if item is child:
                    return f"{key}[{item_key}]"
    return type(child).__name__


def _jsonable(value: object) -> object:
    """``value`` when it is JSON data, else its ``str``."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
