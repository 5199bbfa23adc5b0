"""The terminal view behind ``fulmen watch``: state polled from a run, rendered with rich.

:func:`render` draws one frame of a :class:`~fulmen.observe.state.RunState` (a run's
``metrics.jsonl`` and store, read incrementally): header, the current step's metrics, the
per-agent table, recent episodes and alarms.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fulmen.observe.alarms import Alarm
from fulmen.observe.per_policy import POLICY_METRICS, policy_views
from fulmen.observe.state import STEP_METRICS, RunState, metric_value
from fulmen.observe.summary import UNNAMED_AGENT, EpisodeSummary, agent_stats

__all__ = ["STEP_METRICS", "WatchState", "render"]

WatchState = RunState
"""The state the view draws (:class:`~fulmen.observe.state.RunState`, shared with the dashboard)."""

_STATUS_STYLE = {"succeeded": "green", "failed": "red", "timed_out": "yellow", "cancelled": "dim"}
_SEVERITY_STYLE = {"warning": "yellow", "critical": "bold red"}


def render(state: WatchState, *, episodes: int = 12) -> RenderableType:
    """One frame of the view."""
    return Group(
        _header(state),
        _step_panel(state),
        *_policies_table(state),
        _agents_table(state),
        _episodes_table(state, episodes),
        _alarms_panel(state.alarms()),
    )


def _header(state: WatchState) -> Text:
    step = state.train_rows[-1].get("step") if state.train_rows else None
    where = state.metrics_path.parent if state.metrics_path is not None else state.store_path
    parts = [f"fulmen watch · {where}", f"step {step if step is not None else '-'}"]
    if state.store_path.exists():
        parts.append(f"{state.finished} finished · {state.running} running")
        if state.failed_calls:
            counts = ", ".join(f"{k} ×{n}" for k, n in state.failed_calls.items())
            parts.append(f"{sum(state.failed_calls.values())} failed LLM calls ({counts})")
    else:
        parts.append(f"waiting for {state.store_path}")
    parts.append(time.strftime("%H:%M:%S", time.localtime(state.updated_at)))
    return Text(" · ".join(parts), style="bold", overflow="ellipsis", no_wrap=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _step_panel(state: WatchState) -> Panel:
    if not state.train_rows:
        text = "no training metrics yet" if state.metrics_path else "watching a store: no metrics"
        return Panel(text, title="step", title_align="left")
    row = dict(state.train_rows[-1])
    if state.last_eval is not None and "eval_success_rate" not in row:
        row["eval_success_rate"] = state.last_eval.get("success_rate")
    grid = Table.grid(padding=(0, 2))
    for _ in range(3):
        grid.add_column(style="cyan", no_wrap=True)
        grid.add_column(justify="right")
    cells: list[str] = []
    for label, keys in STEP_METRICS:
        value = metric_value(row, keys)
        if value is not None:
            cells += [label, _fmt(value)]
    while len(cells) % 6:
        cells.append("")
    for i in range(0, len(cells), 6):
        grid.add_row(*cells[i : i + 6])
    return Panel(grid, title=f"step {row.get('step', '?')}", title_align="left")


def _agents_table(state: WatchState) -> Table:
    table = Table(title=f"agents (last {len(state.summaries)} episodes)", title_justify="left")
    for name in ("agent", "episodes", "LLM calls", "tools / call", "reward", "success"):
        table.add_column(name, justify="left" if name == "agent" else "right")
    for s in agent_stats(state.summaries):
        reward = "-" if s.reward_mean is None else f"{s.reward_mean:.3g}"
        table.add_row(
            escape(s.agent),
            str(s.episodes),
            str(s.llm_calls),
            f"{s.tool_call_rate:.2f}",
            reward,
            f"{s.success_rate:.0%}",
        )
    return table


def _policies_table(state: WatchState) -> list[Table]:
    """One row per policy of a ``[[policy]]`` run (none otherwise): its agents, the version it
    serves, its calls in the window and its metrics of the current step."""
    views = policy_views(state.train_rows, state.summaries)
    if not views:
        return []
    step = views[0].step
    table = Table(
        title=f"policies (step {step if step is not None else '-'}; calls: last {len(state.summaries)} episodes)",
        title_justify="left",
    )
    table.add_column("policy")
    table.add_column("agents")
    table.add_column("version", justify="right")
    for label, _ in POLICY_METRICS:
        table.add_column(label, justify="right")
    for v in views:
        table.add_row(
            escape(v.name),
            escape(", ".join(v.agents) or "-"),
            "-" if v.version is None else f"v{v.version}",
            *("-" if (x := v.metrics[key]) is None else _fmt(x) for _, key in POLICY_METRICS),
        )
    return [table]


def _tools(names: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(n if c == 1 else f"{n}×{c}" for n, c in counts.items()) or "-"


def _reward_text(s: EpisodeSummary) -> str:
    """The outcome alone when it is the only reward, else every part with its source."""
    if len(s.reward_parts) == 1 and s.reward_parts[0][0] == "outcome":
        return f"{s.reward_parts[0][1]:.3g}"
    return " · ".join(f"{v:.3g} {label}" for label, v in s.reward_parts) or "-"


def _episodes_table(state: WatchState, limit: int) -> Table:
    table = Table(
        title="recent episodes",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("finished", no_wrap=True)
    table.add_column("episode", no_wrap=True)  # ids stay copy-pasteable for `fulmen show`
    widths = {"task": 8, "agents": 6, "calls": 3, "tools": 8, "reward": 5, "ended": 5}
    for name, width in widths.items():
        table.add_column(
            name, overflow="fold", min_width=width, justify="right" if name == "calls" else "left"
        )
    shown = list(state.summaries)[-limit:] if limit > 0 else []
    for s in reversed(shown):
        when = time.strftime("%H:%M:%S", time.localtime(s.finished_at or 0))
        ended = "ok" if s.termination == "completed" else (s.termination or s.status)
        tools = _tools(s.tool_calls) + (f" ({s.tool_errors} failed)" if s.tool_errors else "")
        agents = ", ".join(a for a in s.agents if a != UNNAMED_AGENT) or "-"
        table.add_row(
            when,
            s.episode_id,
            escape(s.task_id),
            escape(agents),
            str(s.llm_calls),
            escape(tools),
            escape(_reward_text(s)),
            Text(ended, style=_STATUS_STYLE.get(s.status, "")),
        )
    return table


def _alarms_panel(alarms: Sequence[Alarm]) -> Panel:
    if not alarms:
        return Panel(Text("no alarms", style="green"), title="alarms", title_align="left")
    lines: list[RenderableType] = []
    for a in alarms:
        where = f"step {a.step} " if a.step is not None else ""
        lines.append(
            Text.assemble(
                (f"{a.severity.upper()} {a.kind}", _SEVERITY_STYLE[a.severity]),
                f" {where}· {a.message}",
            )
        )
        lines.append(Text(f"  look at: {a.what_to_look_at}", style="dim"))
    return Panel(Group(*lines), title="alarms", title_align="left", border_style="red")
