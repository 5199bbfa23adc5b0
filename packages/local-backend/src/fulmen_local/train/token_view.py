""":class:`TokenizerView`: the policy's tokenizer as :class:`fulmen.drift.TokenView`.

The embedded backend's policies implement the drift checks' tokenizer view with this mixin,
so the step driver re-renders every recorded chat call (the embedded server's own rendering,
:func:`~fulmen_local.server.template.render_chat_prompt`) and counts token anomalies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fulmen_local.server.template import render_chat_prompt
from transformers import PreTrainedTokenizerBase

__all__ = ["TokenizerView"]


class TokenizerView:
    """Mixin implementing :class:`fulmen.drift.TokenView` over :meth:`view_tokenizer`."""

    def view_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer the policy serves with (subclasses return theirs)."""
        raise NotImplementedError

    def render_prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        template_kwargs: Mapping[str, Any],
    ) -> Sequence[int]:
        """The prompt ids the embedded server renders for ``messages`` and ``tools``.

        Raises:
            fulmen_local.server.errors.ApiError: the template rejects the conversation.
        """
        return render_chat_prompt(
            self.view_tokenizer(), messages, tools=tools or None, template_kwargs=template_kwargs
        )

    def decode(self, ids: Sequence[int]) -> str:
        """``ids`` as text, special tokens kept."""
        return str(self.view_tokenizer().decode(list(ids), skip_special_tokens=False))

    @property
    def special_tokens(self) -> frozenset[str]:
        """The tokenizer's special tokens (``all_special_tokens``)."""
        tokens: Any = self.view_tokenizer().all_special_tokens
        return frozenset(str(t) for t in tokens)
