"""Which tool-call parser the embedded server uses for a policy (``[local] tool_parser``).

Set explicitly, the name must be one of the server's parsers (vLLM's ``--tool-call-parser``
names) and the model's chat template must show tools to the model. Unset, the server's
:func:`~fulmen_local.server.tool_parsers.default_tool_parser` decides from the chat template's
call markup, then the architecture.
"""

from __future__ import annotations

from fulmen.config import ConfigError
from transformers import PreTrainedTokenizerBase

from fulmen_local.server.template import template_supports_tools
from fulmen_local.server.tool_parsers import TOOL_PARSER_NAMES, default_tool_parser

__all__ = ["choose_tool_parser"]

def choose_tool_parser(
    setting: str | None, model_type: str, tokenizer: PreTrainedTokenizerBase
) -> str | None:
    """The parser name for the server, or None when the model has no tool-call format.

    Raises:
        ConfigError: an unknown ``[local] tool_parser``, or one set for a model whose chat
            template has no tools support.
    """
    if setting is not None:
        if setting not in TOOL_PARSER_NAMES:
            raise ConfigError(
                f'[local] tool_parser = "{setting}": unknown; expected one of '
                f"{', '.join(TOOL_PARSER_NAMES)} (vLLM's --tool-call-parser names)"
            )
        if not template_supports_tools(tokenizer):
            raise ConfigError(
                f'[local] tool_parser = "{setting}": the model\'s chat template does not show '
                "tools to the model, so it cannot call them; use a checkpoint whose template "
                "renders `tools`, or remove tool_parser and send requests without tools"
            )
        return setting
    template = tokenizer.chat_template
    return default_tool_parser(model_type, template if isinstance(template, str) else None)
