"""Finding the response ids of one ``dspy.LM`` call in DSPy's LM history.

DSPy's ``on_lm_end`` callback sees the call's outputs (texts) but not the provider's response.
The response, with its id (``chatcmpl-{episode}.{seq}`` behind a fulmen gateway), is in the
history entry DSPy records (``BaseLM.update_history``) before the call returns, so before
``on_lm_end`` runs, in the same thread. The entry of *this* call is the one whose
``messages`` (or ``prompt``) is the very object the call was given: an identity match, which
stays right when many threads share one LM and its history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["LMCallInputs", "find_response_ids", "response_ids"]

_SCAN = 512
"""How many of the latest history entries are searched (more than calls in flight)."""


class LMCallInputs:
    """What ``on_lm_start`` saw of one LM call: enough to find its history entry."""

    __slots__ = ("lm", "messages", "prompt", "request")

    def __init__(self, lm: object, inputs: Mapping[str, Any]) -> None:
        self.lm = lm
        """The ``dspy.BaseLM`` instance called."""
        kwargs = inputs.get("kwargs")
        self.messages: object = inputs.get("messages")
        """The ``messages`` list given to the call (None for prompt or request calls)."""
        self.prompt: object = inputs.get("prompt")
        """The ``prompt`` given to the call."""
        self.request: object = kwargs.get("request") if isinstance(kwargs, Mapping) else None
        """A ``dspy.lm15.Request`` given by keyword, if any."""

    def matches(self, entry: Mapping[str, Any]) -> bool:
        """True when ``entry`` is this call's history entry."""
        if self.messages is not None:
            return entry.get("messages") is self.messages
        typed = self.request if self.request is not None else self.prompt
        if typed is not None and not isinstance(typed, str):
            # A typed request is snapshotted before the call: compare by value.
            return bool(entry.get("request") == typed)
        return typed is not None and entry.get("prompt") is typed


def _latest(entries: object) -> list[Mapping[str, Any]]:
    if not isinstance(entries, list):
        return []
    # list() of a list is one atomic copy under the GIL: safe while other threads append.
    snapshot: list[object] = list(entries)[-_SCAN:]
    return [e for e in reversed(snapshot) if isinstance(e, Mapping)]


def find_response_ids(call: LMCallInputs, fallback: object = None) -> list[str] | None:
    """The response ids of ``call``, from its LM's history (or ``fallback``, DSPy's global
    history, when the LM keeps none). None when no entry matches (history disabled)."""
    for entries in (getattr(call.lm, "history", None), fallback):
        for entry in _latest(entries):
            if call.matches(entry):
                return response_ids(entry.get("response"))
    return None


def response_ids(response: object) -> list[str]:
    """Ids of a recorded response: a ``dspy.lm15.Response`` (streamed ones carry it in
    ``provider_data``), a list of them (one per candidate), a LiteLLM ``ModelResponse`` or a
    plain dict."""
    items: Iterable[object]
    if isinstance(response, Sequence) and not isinstance(response, str | bytes):
        items = response
    else:
        items = (response,)
    ids: list[str] = []
    for item in items:
        value = _id_of(item)
        if value and value not in ids:
            ids.append(value)
    return ids


def _id_of(item: object) -> str | None:
    if isinstance(item, Mapping):
        value = item.get("id")
    else:
        value = getattr(item, "id", None)
        if value is None:
            # DSPy's built-in client leaves a streamed Response's id unset; the provider's
            # last chunk (kept as provider_data) carries it.
            data = getattr(item, "provider_data", None)
            value = data.get("id") if isinstance(data, Mapping) else None
    return value if isinstance(value, str) and value else None
