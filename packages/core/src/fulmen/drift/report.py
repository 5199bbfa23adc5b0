"""One episode's drift, as the lines ``fulmen show EPISODE --drift`` prints.

For each pair of consecutive calls of one agent whose prompts do not continue, the first
diverging token with a few tokens of context on each side (what the earlier call's prompt +
response had there, what the later prompt has); with the policy's tokenizer, the same for each
call whose re-rendered messages differ from the served prompt ids, and the token anomalies.
Plain text, one screen for a typical episode (at most :data:`MAX_SHOWN` divergences of each
kind are detailed; the rest are counted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fulmen.drift.prefix import prefix_checks
from fulmen.drift.tokens import TokenView, render_check, token_anomalies
from fulmen.protocol import EpisodeRecord, Transition

__all__ = ["CONTEXT", "MAX_SHOWN", "drift_report"]

CONTEXT = 4
"""Tokens shown on each side of a divergence."""
MAX_SHOWN = 3
"""Divergences detailed per kind."""

Decode = Callable[[int], str]


def _window(ids: Sequence[int], at: int, decode: Decode | None) -> str:
    start = max(at - CONTEXT, 0)
    parts: list[str] = ["…"] if start else []
    for i in range(start, min(at + CONTEXT + 1, len(ids))):
        label = str(ids[i]) if decode is None else f"{ids[i]}:{decode(ids[i])!r}"
        parts.append(f"[{label}]" if i == at else label)
    if at >= len(ids):
        parts.append("[end]")
    elif at + CONTEXT + 1 < len(ids):
        parts.append("…")
    return " ".join(parts)


def drift_report(record: EpisodeRecord, *, view: TokenView | None = None, decode: Decode | None = None) -> list[str]:
    """The lines of ``record``'s drift report (module docstring). ``decode`` prints each
    token's text beside its id; ``view`` adds the re-render check and token anomalies."""
    e = record.episode
    lines = [f"drift of episode {e.id} ({len(record.transitions)} calls)"]
    checks = prefix_checks(record)
    broken = [c for c in checks if c.reason is not None]
    lines.append(
        f"prefix continuity: {len(checks)} consecutive pairs, {len(broken)} not continuing"
        + (f" ({', '.join(sorted({c.reason.value for c in broken if c.reason}))})" if broken else "")
    )
    for c in broken[:MAX_SHOWN]:
        at = c.divergence if c.divergence is not None else 0
        n_prompt = len(c.prev.prompt_token_ids)
        where = (
            f"in call {c.prev.seq}'s prompt (token {at} of {n_prompt})"
            if at < n_prompt
            else f"in call {c.prev.seq}'s response (token {at - n_prompt} of {len(c.prev.response_token_ids)})"
        )
        lines.append(
            f"  call {c.prev.seq} -> call {c.next.seq} (agent {c.prev.agent or '-'}): "
            f"{c.reason.value if c.reason else ''}, first diverging token at position {at}, {where}"
        )
        lines.append(f"    call {c.prev.seq} prompt+response: {_window(c.expected, at, decode)}")
        lines.append(f"    call {c.next.seq} prompt:          {_window(c.next.prompt_token_ids, at, decode)}")
    if len(broken) > MAX_SHOWN:
        lines.append(f"  (+{len(broken) - MAX_SHOWN} more)")
    if view is None:
        lines.append("re-rendered prompts and token anomalies: pass --tokenizer DIR (the policy's tokenizer)")
        return lines
    renders = []
    errors: list[str] = []
    for t in record.transitions:
        try:
            check = render_check(t, view)
        except Exception as exc:  # the template's own error, reported as a line
            errors.append(f"  call {t.seq}: the chat template failed: {exc}")
            continue
        if check is not None:
            renders.append(check)
    differ = [r for r in renders if not r.matches]
    lines.append(f"re-rendered prompts: {len(renders)} checked, {len(differ)} differ from the served ids")
    for r in differ[:MAX_SHOWN]:
        at = r.divergence if r.divergence is not None else 0
        lines.append(
            f"  call {r.transition.seq}: first diverging token at position {at} "
            f"(served {len(r.transition.prompt_token_ids)} ids, re-rendered {len(r.rendered)})"
        )
        lines.append(f"    served:      {_window(r.transition.prompt_token_ids, at, decode)}")
        lines.append(f"    re-rendered: {_window(r.rendered, at, decode)}")
    if len(differ) > MAX_SHOWN:
        lines.append(f"  (+{len(differ) - MAX_SHOWN} more)")
    lines.extend(errors[:MAX_SHOWN])
    found = [f"call {t.seq} {k}{_where(t, k, view)}" for t in record.transitions for k in token_anomalies(t, view)]
    lines.append("token anomalies: " + (", ".join(found) if found else "none"))
    return lines


def _where(t: Transition, kind: str, view: TokenView) -> str:
    """Where a dropped special token sits in the response (the first one), else nothing."""
    if kind != "special_tokens_dropped":
        return ""
    ids = t.response_token_ids
    for i, token in enumerate(ids[:-1]):
        text = view.decode([token])
        if text in view.special_tokens:
            return f" ({text} at response token {i})"
    return ""
