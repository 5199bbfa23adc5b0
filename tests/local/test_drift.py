"""Drift diagnostics on real recorded episodes: the embedded backend's server and trainer, the
real gateway on loopback, real SQLite, one real training step.

The agent (written below) talks to the policy three times per episode through the OpenAI
client: it re-sends the model's answer exactly after the first call, and with a trailing space
after the second (a known drift: the model's end token no longer follows its text in the next
prompt). The metrics of the step, the report of ``fulmen show --drift`` and the alarms are
checked against what that injected drift must give; a chat template that renders differently
and perturbed rollout logprobs are injected the same way on the recorded episodes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fulmen.batch import build_batch, group_records
from fulmen.batch.merged import BreakReason
from fulmen.config import parse_config
from fulmen.credit import assigner_from_config
from fulmen.drift import HFTokenView, prefix_checks, step_drift_metrics
from fulmen.drift.report import drift_report
from fulmen.observe.alarms import check_metrics
from fulmen.protocol import EpisodeRecord, Transition
from fulmen.store import open_store
from fulmen_local.grpo.updater import GRPOConfig, GRPOUpdater
from fulmen_local.model.load import load_causal_lm
from fulmen_local.train.loop import run_training
from transformers import AutoTokenizer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

AGENT_MODULE = '''
import zlib
from openai import OpenAI

def solve(task, ctx):
    client = OpenAI(base_url=ctx.base_url, api_key=ctx.api_key, timeout=120.0, max_retries=0)
    messages = [{"role": "user", "content": task.data["question"]}]
    content = ""
    for suffix in ("", " ", None):
        response = client.chat.completions.create(model="policy", messages=messages, max_tokens=48)
        content = response.choices[0].message.content or ""
        if suffix is None:
            break
        messages += [{"role": "assistant", "content": content + suffix},
                     {"role": "user", "content": "Again."}]
    return content

def reward(task, output, ctx):
    """Deterministic, varies with the generated text: gives GRPO groups signal."""
    return float(zlib.crc32((output or "").encode()) % 2)
'''


@dataclass(frozen=True)
class Run:
    out: Path
    base: Path
    train_row: dict[str, Any]
    records: list[EpisodeRecord]
    log: list[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    sys.path.insert(0, str(REPO))
    from examples.calculator.model import build_smoke

    root = tmp_path_factory.mktemp("drift")
    base = build_smoke(root / "base")
    (root / "fulmen_drift_agent.py").write_text(AGENT_MODULE)
    sys.path.insert(0, str(root))
    raw = {
        "run": {"output_dir": str(root / "run"), "seed": 0},
        "agent": {"entry": "fulmen_drift_agent:solve", "reward": "fulmen_drift_agent:reward",
                  "concurrency": 8},
        "data": {"train": "examples.calculator.agent:train_tasks"},
        "model": {"path": str(base)},
        "train": {"steps": 1, "tasks_per_step": 2, "group_size": 4, "max_tokens": 48,
                  "eval_every": 0, "learning_rate": 1e-3},
        "credit": {"assigner": "grpo", "drop_no_signal": False},
        "local": {"threads": 2},
    }  # fmt: skip
    try:
        log: list[str] = []
        run_training(parse_config(raw, base_dir=str(REPO)), log=log.append)
        out = root / "run"
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        store = open_store(out / "episodes.db")
        try:
            records = store.records([e.id for e in store.list_episodes()])
        finally:
            store.close()
        yield Run(out, base, next(r for r in rows if r["kind"] == "train"), records, log)
    finally:
        sys.path.remove(str(root))


def _specials(base: Path) -> tuple[set[int], int]:
    tokenizer: Any = AutoTokenizer.from_pretrained(base)
    return set(tokenizer.all_special_ids), int(tokenizer.eos_token_id)


def _expected_break(prev: Transition, suffix: str, special: set[int], eos: int) -> int | None:
    """Where the next prompt must leave ``prev``'s ids when the agent re-sends its content +
    ``suffix``: at the first special token the content dropped, else (with a suffix) at the
    end token the suffix now precedes; None when the ids continue."""
    ids = prev.response_token_ids
    body = ids[:-1] if ids and ids[-1] == eos else ids
    start = len(prev.prompt_token_ids)
    dropped = [i for i, token in enumerate(body) if token in special]
    if dropped:
        return start + dropped[0]
    if suffix and ids and ids[-1] == eos:
        return start + len(ids) - 1
    return None


def _dropped_calls(run: Run, special: set[int], eos: int) -> list[tuple[str, int]]:
    return [
        (r.episode.id, t.seq) for r in run.records for t in r.transitions
        if any(tok in special for tok in (t.response_token_ids[:-1] if t.response_token_ids[-1] == eos
                                          else t.response_token_ids))
    ]  # fmt: skip


def test_prefix_breaks_are_found_at_the_first_token_the_next_prompt_does_not_repeat(run: Run) -> None:
    special, eos = _specials(run.base)
    breaks = continuing = at_end_token = 0
    for record in run.records:
        checks = prefix_checks(record)
        assert [(c.prev.seq, c.next.seq) for c in checks] == [(0, 1), (1, 2)]
        for check, suffix in zip(checks, ("", " "), strict=True):
            expected = _expected_break(check.prev, suffix, special, eos)
            assert check.divergence == expected
            if expected is None:
                assert check.reason is None
                continuing += 1
                continue
            # the prompt of the earlier call is intact, its response ids were re-encoded
            assert check.reason is BreakReason.RETOKENISATION and check.token_drift
            assert check.next.prompt_token_ids[:expected] == check.expected[:expected]
            assert check.next.prompt_token_ids[expected] != check.expected[expected]
            breaks += 1
            at_end_token += check.expected[expected] == eos
    assert continuing and at_end_token, "the run should show both kinds of pair"
    row = run.train_row
    assert row["drift/prefix_pairs"] == 16
    assert row["drift/prefix_breaks"] == breaks
    assert row["drift/prefix_break_rate"] == pytest.approx(breaks / 16)
    assert row["drift/prefix_context_changes"] == 0


def test_a_real_step_compares_rollout_and_trainer_logprobs_and_re_renders_every_prompt(run: Run) -> None:
    row = run.train_row
    # every chat call re-rendered by the policy's template gives the ids the server ran
    assert row["drift/render_checked"] == row["llm_calls"] == 24
    assert row["drift/render_mismatches"] == 0 and row["drift/render_errors"] == 0
    # the barely trained model emits special tokens mid-answer, which the content drops
    special, eos = _specials(run.base)
    assert row["drift/special_tokens_dropped"] == len(_dropped_calls(run, special, eos))
    for kind in ("tool_tail_dropped", "special_tokens_in_content", "partial_utf8_cut"):
        assert row[f"drift/{kind}"] == 0
    # the update's first forward compared every trained token with the server's logprob
    assert row["drift/logprob_tokens"] == row["num_tokens"] > 0
    assert 0.0 <= row["drift/logprob_abs_diff_mean"] <= row["drift/logprob_abs_diff_max"] < 1e-3
    assert 0.0 <= row["drift/logprob_k3"] < 1e-9  # k3 >= 0 always (computed in float64)
    # the run's figures so far (one step: the step's)
    assert row["drift/run_prefix_break_rate"] == row["drift/prefix_break_rate"]
    assert row["drift/run_render_mismatch_rate"] == 0.0
    assert row["drift/run_anomalies"] == row["drift/special_tokens_dropped"]
    for key in ("abs_diff_mean", "abs_diff_max", "k3"):
        assert row[f"drift/run_logprob_{key}"] == pytest.approx(row[f"drift/logprob_{key}"])
    kinds = {a.kind for a in check_metrics([row])}
    assert "logprob_drift" not in kinds
    assert ("prompt_drift" in kinds) == (row["drift/special_tokens_dropped"] / 24 > 0.02)


def _rows_of_step(run: Run) -> list[Any]:
    assigner = assigner_from_config("grpo", {"drop_no_signal": False})
    return list(build_batch(group_records(run.records), assigner).rows)


def test_perturbed_rollout_logprobs_are_measured_and_alarm(run: Run) -> None:
    rows = _rows_of_step(run)
    model, tokenizer = load_causal_lm(run.base)  # version 0: the weights that served the step
    pad: Any = tokenizer.pad_token_id or 0

    def drift(rows: list[Any]) -> dict[str, float]:
        fresh, _ = load_causal_lm(run.base)
        metrics = GRPOUpdater(fresh, GRPOConfig(lr=1e-6), pad_token_id=int(pad)).update(rows)
        return {k: v for k, v in metrics.items() if k.startswith("drift/")} | {"num_tokens": metrics["num_tokens"]}

    del model
    clean = drift(rows)
    assert clean["drift/logprob_tokens"] == clean["num_tokens"] == run.train_row["num_tokens"]
    assert clean["drift/logprob_abs_diff_max"] < 1e-3
    shifted = [replace(r, rollout_logprobs=tuple(x + 0.3 for x in r.rollout_logprobs)) for r in rows]
    bad = drift(shifted)
    assert bad["drift/logprob_abs_diff_mean"] == pytest.approx(0.3, abs=2e-3)
    assert bad["drift/logprob_abs_diff_max"] == pytest.approx(0.3, abs=2e-3)
    # d = trainer - rollout = -0.3 on every token: k3 = exp(-0.3) + 0.3 - 1
    assert bad["drift/logprob_k3"] == pytest.approx(0.040818, abs=2e-3)
    alarms = check_metrics([{"kind": "train", "step": 1, **bad}])
    assert [(a.kind, a.severity) for a in alarms] == [("logprob_drift", "warning")]
    assert "dtype" in alarms[0].what_to_look_at
    # tokens whose rollout logprob was missing are recomputed by the trainer: not compared
    first = rows[0]
    flagged = [replace(first, missing_logprobs=(1,) * len(first.response_ids)), *rows[1:]]
    partial = drift(flagged)
    assert partial["drift/logprob_tokens"] == clean["num_tokens"] - first.num_trained_tokens


def test_a_template_that_re_renders_differently_is_counted_shown_and_alarms(run: Run) -> None:
    tokenizer: Any = AutoTokenizer.from_pretrained(run.base)
    served_view = HFTokenView(tokenizer)
    assert step_drift_metrics(run.records, served_view)["drift/render_mismatches"] == 0
    changed: Any = AutoTokenizer.from_pretrained(run.base)
    old = "'<|im_start|>' ~ m.role ~ '\\n'"
    assert old in changed.chat_template
    changed.chat_template = changed.chat_template.replace(old, "'<|im_start|>' ~ m.role ~ ' \\n'")
    view = HFTokenView(changed)
    metrics = step_drift_metrics(run.records, view)
    assert metrics["drift/render_checked"] == metrics["drift/render_mismatches"] == 24
    row = {"kind": "train", "step": 1, "llm_calls": 24, **metrics}
    alarms = check_metrics([row])
    assert [(a.kind, a.severity) for a in alarms] == [("prompt_drift", "warning")]
    assert "fulmen show EPISODE --drift" in alarms[0].what_to_look_at
    # the report points at the first diverging token: the space the template now adds
    record = run.records[0]
    lines = drift_report(record, view=view, decode=lambda t: served_view.decode([t]))
    assert "re-rendered prompts: 3 checked, 3 differ from the served ids" in lines
    served = record.transitions[0].prompt_token_ids
    rendered = list(view.render_prompt(record.transitions[0].request_messages, (), {}))
    at = next(i for i, (a, b) in enumerate(zip(served, rendered, strict=False)) if a != b)
    assert (served_view.decode([served[at]]), served_view.decode([rendered[at]])) == ("\n", " ")
    detail = next(i for i, line in enumerate(lines) if line.startswith("  call 0: first diverging"))
    assert f"position {at}" in lines[detail]
    assert f"[{served[at]}:'\\n']" in lines[detail + 1] and f"[{rendered[at]}:' ']" in lines[detail + 2]


def test_fulmen_show_drift_prints_the_first_diverging_token(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    from fulmen.cli import main as fulmen_main

    special, eos = _specials(run.base)
    record = next(r for r in run.records if any(c.reason for c in prefix_checks(r)))
    argv = ["show", record.episode.id, "--drift", "--store", str(run.out / "episodes.db"),
            "--tokenizer", str(run.base)]  # fmt: skip
    assert fulmen_main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) <= 24  # one screen
    first = next(c for c in prefix_checks(record) if c.reason)
    breaks = sum(1 for c in prefix_checks(record) if c.reason)
    assert out[1] == f"prefix continuity: 2 consecutive pairs, {breaks} not continuing (retokenisation)"
    at = _expected_break(first.prev, " " if first.prev.seq else "", special, eos)
    assert at is not None
    assert out[2].startswith(
        f"  call {first.prev.seq} -> call {first.next.seq} (agent -): retokenisation, "
        f"first diverging token at position {at}, in call {first.prev.seq}'s response"
    )
    view = HFTokenView(AutoTokenizer.from_pretrained(run.base))
    assert f"[{first.expected[at]}:{view.decode([first.expected[at]])!r}]" in out[3]
    assert f"[{first.next.prompt_token_ids[at]}:" in out[4]
    assert "re-rendered prompts: 3 checked, 0 differ from the served ids" in out
    dropped = [t for t in record.transitions if (record.episode.id, t.seq) in _dropped_calls(run, special, eos)]
    where = [next(i for i, tok in enumerate(t.response_token_ids) if tok in special) for t in dropped]
    assert out[-1] == "token anomalies: " + (
        ", ".join(
            f"call {t.seq} special_tokens_dropped ({view.decode([t.response_token_ids[i]])} at response token {i})"
            for t, i in zip(dropped, where, strict=True)
        ) or "none"
    )
