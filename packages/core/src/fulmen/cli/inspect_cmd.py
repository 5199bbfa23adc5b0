"""``fulmen episodes`` and ``fulmen show``: read what the store captured."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fulmen.protocol import Episode, EpisodeStatus, Reward, Transition

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``episodes`` and ``show`` sub-commands."""
    p: argparse.ArgumentParser = sub.add_parser("episodes", help="list recorded episodes")
    p.add_argument("--store", default="fulmen.db", help="SQLite file (default: fulmen.db)")
    p.add_argument("--task", help="only this task id")
    p.add_argument(
        "--status", choices=[s.value for s in EpisodeStatus], help="only episodes in this state"
    )
    p.add_argument("--group", help="only this group id")
    p.add_argument("--limit", type=int, default=50, help="at most this many (newest; default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_episodes)

    s: argparse.ArgumentParser = sub.add_parser(
        "show", help="show one episode: messages, tool calls, token ids and logprobs"
    )
    s.add_argument("episode", help="episode id")
    s.add_argument("--store", default="fulmen.db", help="SQLite file (default: fulmen.db)")
    s.add_argument("--tokenizer", help="tokenizer directory, to print each token's text")
    s.add_argument("--max-tokens", type=int, default=64, help="token ids shown per side (default 64)")
    s.add_argument("--json", action="store_true", help="the full record as JSON")
    s.add_argument(
        "--drift", action="store_true",
        help="where the tokens drift: the first diverging token between consecutive calls' "
        "prefixes and (with --tokenizer) between served and re-rendered prompt ids",
    )
    s.set_defaults(func=run_show)


def _open(path: str) -> Any:
    from fulmen.cli import UserFacingError
    from fulmen.store import open_store

    if not Path(path).exists():
        raise UserFacingError(f"no store at {path!r}; pass --store PATH (the gateway's --store)")
    return open_store(path)


def run_episodes(args: argparse.Namespace) -> int:
    """List episodes, newest last."""
    store = _open(args.store)
    try:
        status = EpisodeStatus(args.status) if args.status else None
        episodes: list[Episode] = store.list_episodes(
            task_id=args.task, status=status, group_id=args.group
        )
        episodes = episodes[-args.limit :] if args.limit > 0 else episodes
        if args.json:
            for episode in episodes:
                print(episode.to_json())
            return 0
        from rich.console import Console
        from rich.table import Table

        table = Table()
        table.add_column("episode", no_wrap=True)  # ids must stay copy-pasteable
        for name in ("task", "try", "status", "reason", "calls", "reward", "group"):
            table.add_column(name, overflow="fold")
        for episode in episodes:
            rewards: list[Reward] = store.rewards(episode.id)
            outcome = [r.value for r in rewards if r.name is None and r.step is None]
            table.add_row(
                episode.id,
                episode.task.id,
                str(episode.attempt),
                episode.status.value,
                episode.termination.value if episode.termination else "",
                str(store.next_seq(episode.id)),
                f"{sum(outcome):.3g}" if outcome else "",
                episode.group_id or "",
            )
        Console().print(table)
        return 0
    finally:
        store.close()


def run_show(args: argparse.Namespace) -> int:
    """Show one episode in full."""
    from fulmen.cli import UserFacingError
    from fulmen.store import EpisodeNotFound

    store = _open(args.store)
    try:
        try:
            record = store.record(args.episode)
        except EpisodeNotFound:
            raise UserFacingError(
                f"no episode {args.episode!r} in {args.store}; `fulmen episodes --store "
                f"{args.store}` lists them"
            ) from None
    finally:
        store.close()
    if args.json:
        print(
            json.dumps(
                {
                    "episode": record.episode.to_dict(),
                    "transitions": [t.to_dict() for t in record.transitions],
                    "rewards": [r.to_dict() for r in record.rewards],
                },
                indent=2,
            )
        )
        return 0
    if args.drift:
        return _print_drift(record, args.tokenizer)
    decode = _decoder(args.tokenizer)
    from rich.console import Console

    console = Console()
    e = record.episode
    console.rule(f"[bold]episode {e.id}[/] · task {e.task.id} · attempt {e.attempt}")
    reason = e.termination.value if e.termination else "-"
    console.print(f"status [bold]{e.status.value}[/] ({reason})" + (f": {e.error}" if e.error else ""))
    for t in record.transitions:
        _print_transition(console, t, decode, args.max_tokens)
    console.rule("rewards")
    for r in record.rewards:
        where = "outcome" if r.step is None else f"step {r.step}"
        extra = "".join(f" {k}={v}" for k, v in (("name", r.name), ("agent", r.agent)) if v)
        console.print(f"{r.value:+.4g}  {where}{extra}")
    if not record.rewards:
        console.print("(none)")
    return 0


def _print_transition(console: Any, t: Transition, decode: Any, max_tokens: int) -> None:
    from rich.markup import escape

    head = f"transition {t.seq} · agent {t.agent or '-'} · finish {t.finish_reason}"
    from fulmen.observe.summary import call_policy

    policy = call_policy(t)  # [[policy]] runs: the adapter (or the frozen base) that served it
    version = f" v{t.policy_version}" if t.policy_version is not None else ""
    if policy is not None:
        head += f" · policy {policy}{version}"
    elif version:
        head += f" · policy{version}"
    console.rule(head)
    if t.flags:
        console.print(f"[yellow]flags: {', '.join(t.flags)}[/]")
    for m in t.request_messages:
        content = m.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        console.print(f"[cyan]{m.get('role', '?')}[/]: {escape(str(text))}")
        for call in m.get("tool_calls") or ():
            console.print(f"  [magenta]→ tool call[/] {escape(json.dumps(call.get('function')))}")
    msg = t.response_message
    console.print(f"[green]assistant[/]: {escape(str(msg.get('content') or ''))}")
    for call in t.tool_calls:
        console.print(f"  [magenta]→ tool call[/] {escape(json.dumps(call.get('function')))}")
    console.print(
        f"prompt ids ({len(t.prompt_token_ids)}): {_ids(t.prompt_token_ids, max_tokens)}"
    )
    console.print(f"response ({len(t.response_token_ids)} tokens, id/logprob):")
    console.print("  " + _tokens(t.response_token_ids, t.response_logprobs, decode, max_tokens))


def _print_drift(record: Any, tokenizer: str | None) -> int:
    from fulmen.cli.drift_view import load_view
    from fulmen.drift.report import drift_report

    view = load_view(tokenizer) if tokenizer else None

    def decode(token: int) -> str:
        assert view is not None
        return view.decode([token])

    for line in drift_report(record, view=view, decode=decode if view is not None else None):
        print(line)
    return 0


def _ids(ids: Sequence[int], limit: int) -> str:
    shown = " ".join(map(str, ids[:limit]))
    return shown + (f" … (+{len(ids) - limit})" if len(ids) > limit else "")


def _tokens(
    ids: Sequence[int], logprobs: Sequence[float] | None, decode: Any, limit: int
) -> str:
    from rich.markup import escape

    parts: list[str] = []
    for i, token in enumerate(ids[:limit]):
        label = str(token) if decode is None else f"{token}:{decode(token)!r}"
        lp = "" if logprobs is None else f"({logprobs[i]:.2f})"
        parts.append(escape(label + lp))
    if len(ids) > limit:
        parts.append(f"… (+{len(ids) - limit})")
    return " ".join(parts)


def _decoder(path: str | None) -> Any:
    if path is None:
        return None
    try:
        # optional, lazy, guarded: only `--tokenizer` loads it (never a core dependency)
        from transformers import AutoTokenizer  # noqa: TID251
    except ImportError:
        print("--tokenizer needs transformers installed; showing ids only", file=sys.stderr)
        return None
    tok: Any = AutoTokenizer.from_pretrained(path)

    def decode(token: int) -> str:
        return str(tok.decode([token]))

    return decode
