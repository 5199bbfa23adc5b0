"""Two GRPO steps of ``fulmen train --backend verl``'s loop on this CPU, end to end with real
parts: core's StepDriver driving a :class:`~fulmen_verl.policy.VerlPolicy` (verl 0.9.1's
FSDP2 actor over gloo, vLLM's CPU build serving the policy behind fulmen's gateway, the
agent's episodes recorded in SQLite, verl's weight sync after every update), with held-out
evaluation, checkpoints and a resumed third step. Before and after the run a fixed response
is scored by vLLM and by the trainer (:mod:`fulmen_verl.sync_probe`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from fulmen.train import StepDriver
from fulmen_local.model.tokenizer import build_tokenizer
from fulmen_verl.episodes import runner_factory
from fulmen_verl.metrics import STEP_TIME_KEYS
from fulmen_verl.preflight import bounded_config
from fulmen_verl.sync_probe import SyncProbe, probe_sync

pytestmark = pytest.mark.slow

SYNC_TOLERANCE = 2e-3
"""Largest per-token logprob gap allowed between vLLM and the trainer (both float32; vLLM's
CPU attention kernels and torch's SDPA round differently)."""


def _train(session: Any, config: Any, *, resume: bool = False) -> Any:
    driver = StepDriver(config, log=print, runner_factory=runner_factory(session.job.verl))
    driver.prepare(resume=resume)
    policy = session.policy()
    try:
        result = asyncio.run(driver.run(policy))
        assert policy.version == config.train.steps
    finally:
        policy.close()
    return result


def test_two_verl_steps_train_evaluate_checkpoint_and_sync_into_vllm(verl_session: Any) -> None:
    tokenizer = build_tokenizer()
    chat: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3+4?"}], add_generation_prompt=True, tokenize=True
    )
    prompt = [int(t) for t in chat["input_ids"]]
    response: list[int] = tokenizer.encode("The answer is 7.", add_special_tokens=False)
    pad = int(tokenizer.pad_token_id)  # pyright: ignore[reportArgumentType]
    trainer = verl_session.trainer

    def probe(url: str) -> SyncProbe:
        return probe_sync(trainer, url, "policy", prompt, response, pad_token_id=pad)

    job = verl_session.job
    config = bounded_config(job.config, job.verl)
    fresh = verl_session.policy()
    try:
        before = probe(fresh.upstream_url)
    finally:
        fresh.close()
    result = _train(verl_session, config)
    after_policy = verl_session.policy()  # a fresh front; load the run's last checkpoint
    out = result.output_dir
    try:
        after_policy.load(out / "checkpoints" / "step-000002")
        after_policy.publish(2)
        after = probe(after_policy.upstream_url)
    finally:
        after_policy.close()

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in rows] == [
        ("eval", 0), ("eval", 1), ("train", 1), ("eval", 2), ("train", 2)
    ]
    train = [r for r in rows if r["kind"] == "train"]
    for row in train:
        assert row["episodes"] == 8 and row["rows"] == 8 and row["num_tokens"] > 0
        assert row["publish_s"] > 0 and row["update_s"] > row["verl/actor_update_s"] > 0
        assert all(key in row for key in STEP_TIME_KEYS)
        # bypass mode, one optimizer step: verl's own k3 of vLLM's vs the actor's logprobs
        assert 0.0 <= row["drift/logprob_k3"] < 1e-4
        # VerlPolicy is a TokenView: every chat call re-rendered with the tokenizer verl loads
        assert row["drift/render_checked"] == row["llm_calls"] == 8
        assert row["drift/render_mismatches"] == 0 and row["drift/render_errors"] == 0
    assert all(r["episodes"] == 4 for r in rows if r["kind"] == "eval")
    # the served policy version advanced, and vLLM served the trainer's weights each time ...
    assert (before.served_version, after.served_version) == (0, 2)
    assert before.max_abs_diff < SYNC_TOLERANCE, before
    assert after.max_abs_diff < SYNC_TOLERANCE, after
    # ... and the weights changed: both score the fixed response differently after training
    moved = max(abs(a - b) for a, b in zip(after.trained, before.trained, strict=True))
    assert moved > 10 * SYNC_TOLERANCE, (before, after)
    served_moved = max(abs(a - b) for a, b in zip(after.served, before.served, strict=True))
    assert served_moved > 10 * SYNC_TOLERANCE

    # --resume continues from the step-2 checkpoint (verl's actor checkpoint) to step 3
    resumed = _train(verl_session, replace(config, train=replace(config.train, steps=3)), resume=True)
    assert resumed.before is None and resumed.after is not None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in rows][-2:] == [("eval", 3), ("train", 3)]
    assert (out / "checkpoints" / "step-000003" / "actor").is_dir()
