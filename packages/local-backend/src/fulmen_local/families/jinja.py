"""Filling fixed text into the families' Jinja chat templates.

Templates are written with ``$NAME`` placeholders where a long fixed text (a default system
prompt, tool instructions) goes; :func:`fill` replaces each with a Jinja string literal of the
text, escaped, so the Python constant and the rendered text cannot drift apart.
"""

from __future__ import annotations

import re

__all__ = ["fill", "literal"]


def literal(text: str) -> str:
    """``text`` as a single-quoted Jinja string literal."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def fill(template: str, **texts: str) -> str:
    """``template`` (surrounding whitespace stripped) with every ``$NAME`` replaced by
    :func:`literal` of ``texts[NAME]``.

    Raises:
        KeyError: a placeholder has no text, or a text has no placeholder.
    """
    used: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        used.add(name)
        return literal(texts[name])

    out = re.sub(r"\$([A-Z_]+)", substitute, template.strip())
    unused = set(texts) - used
    if unused:
        raise KeyError(f"no placeholder for {sorted(unused)}")
    return out
