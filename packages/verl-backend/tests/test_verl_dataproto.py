"""Recorded fulmen transitions → ``DataProto``, checked field by field and fed to verl's own
functions on CPU: GRPO advantage estimator, rollout correction, bypass mode, the no-padding
conversion and the PPO loss (with a real backward pass and optimizer step on a tiny model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fulmen.rows import TrainingRow
from fulmen_verl.dataproto import PAD_UID, collate_rows, padded_size, rows_to_dataproto
from verl_recording import record_batch

pytestmark = pytest.mark.slow  # imports verl (20-40 s); the tests themselves take seconds

PAD = 0


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingRow, ...]:
    _records, batch = record_batch(tmp_path_factory.mktemp("rec"), turns=2)
    assert len(batch.rows) == 24  # 3 tasks x 4 episodes x 2 calls, nothing dropped
    return batch.rows


def test_padded_size() -> None:
    assert [padded_size(n, 4) for n in (1, 4, 5, 8)] == [4, 4, 8, 8]
    assert padded_size(0, 3) == 3
    with pytest.raises(ValueError, match="size_divisor"):
        padded_size(3, 0)


def test_fields_one_by_one(recorded: tuple[TrainingRow, ...]) -> None:
    rows = recorded
    data = rows_to_dataproto(rows, pad_token_id=PAD, size_divisor=5, temperature=0.7)
    b, n = len(data), len(rows)
    assert b == 25 and data.meta_info["fulmen_real_rows"] == n
    p = max(len(r.prompt_ids) for r in rows)
    r_len = max(len(r.response_ids) for r in rows)
    t = data.batch
    assert tuple(t["prompts"].shape) == (b, p) and tuple(t["responses"].shape) == (b, r_len)
    for key in ("input_ids", "attention_mask", "position_ids"):
        assert tuple(t[key].shape) == (b, p + r_len)
    for key in ("response_mask", "rollout_log_probs", "advantages"):
        assert tuple(t[key].shape) == (b, r_len)
    assert t["rollout_log_probs"].dtype == torch.float32 and t["input_ids"].dtype == torch.long
    for i, row in enumerate(rows):
        lp, lr = len(row.prompt_ids), len(row.response_ids)
        # prompts left-padded, responses right-padded
        assert t["prompts"][i, p - lp :].tolist() == list(row.prompt_ids)
        assert (t["prompts"][i, : p - lp] == PAD).all()
        assert t["responses"][i, :lr].tolist() == list(row.response_ids)
        assert (t["responses"][i, lr:] == PAD).all()
        assert t["input_ids"][i].tolist() == t["prompts"][i].tolist() + t["responses"][i].tolist()
        expected_attn = [0] * (p - lp) + [1] * lp + [1] * lr + [0] * (r_len - lr)
        assert t["attention_mask"][i].tolist() == expected_attn
        pos = t["position_ids"][i].tolist()
        assert pos[p - lp : p + lr] == list(range(lp + lr))  # 0 at the first real token
        assert pos[: p - lp] == [0] * (p - lp)
        assert t["response_mask"][i, :lr].tolist() == list(row.response_mask)
        assert t["response_mask"][i, lr:].sum() == 0
        assert t["rollout_log_probs"][i, :lr].tolist() == pytest.approx(
            row.rollout_logprobs, abs=1e-6
        )
        assert t["advantages"][i, :lr].tolist() == pytest.approx(row.advantages, abs=1e-6)
        assert data.non_tensor_batch["uid"][i] == row.group_id
        assert data.non_tensor_batch["episode_id"][i] == row.episode_id
    assert data.non_tensor_batch["uid"][n] == PAD_UID  # the inert padding row
    assert t["response_mask"][n:].sum() == 0 and t["advantages"][n:].abs().sum() == 0
    assert data.meta_info["temperature"] == 0.7
    assert data.meta_info["global_token_num"] == t["attention_mask"].sum(-1).tolist()


def test_merged_rows_keep_masked_observation_tokens_attended() -> None:
    row = TrainingRow(
        prompt_ids=(5, 6),
        response_ids=(7, 8, 9, 10),
        response_mask=(1, 0, 0, 1),
        rollout_logprobs=(-0.5, 0.0, 0.0, -0.25),
        advantages=(1.0, 0.0, 0.0, 1.0),
        group_id="g",
        episode_id="e",
        seqs=(0, 1),
    )
    t = collate_rows([row], pad_token_id=PAD).tensors
    assert t["attention_mask"].tolist() == [[1] * 6]
    assert t["response_mask"].tolist() == [[1, 0, 0, 1]]
    with pytest.raises(ValueError, match="empty prompt"):
        collate_rows(
            [
                TrainingRow(
                    prompt_ids=(),
                    response_ids=(1,),
                    response_mask=(1,),
                    rollout_logprobs=(0.0,),
                    advantages=(0.0,),
                    group_id="g",
                    episode_id="e",
                    seqs=(0,),
                )
            ],
            pad_token_id=PAD,
        )
    with pytest.raises(ValueError, match="no rows"):
        collate_rows([], pad_token_id=PAD)


def test_advantages_equal_verls_grpo_estimator(tmp_path: Path) -> None:
    """Single-call episodes: fulmen's GRPO rows carry exactly what verl's
    ``compute_grpo_outcome_advantage`` computes on the same DataProto (score on the last token)."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    records, batch = record_batch(tmp_path, turns=1)
    data = rows_to_dataproto(batch.rows, pad_token_id=PAD)
    outcome = {rec.episode.id: rec.rewards[0].value for rec in records}
    mask = data.batch["response_mask"]
    scores = torch.zeros_like(data.batch["advantages"])
    last = mask.sum(-1) - 1
    for i, eid in enumerate(data.non_tensor_batch["episode_id"]):
        scores[i, last[i]] = outcome[eid]
    verl_adv, _ = compute_grpo_outcome_advantage(
        token_level_rewards=scores,
        response_mask=mask,
        index=data.non_tensor_batch["uid"],
        norm_adv_by_std_in_grpo=True,
    )
    assert torch.allclose(verl_adv, data.batch["advantages"], atol=1e-5)
    assert data.batch["advantages"].abs().sum() > 0


def test_verl_rollout_correction_and_bypass_mode_accept_the_batch(
    recorded: tuple[TrainingRow, ...],
) -> None:
    from omegaconf import OmegaConf
    from verl.trainer.config.algorithm import RolloutCorrectionConfig
    from verl.trainer.ppo.rollout_corr_helper import (
        apply_bypass_mode,
        compute_rollout_correction_and_add_to_batch,
    )

    data = rows_to_dataproto(recorded, pad_token_id=PAD, size_divisor=4)
    mask = data.batch["response_mask"].float()
    # decoupled mode: a trainer whose logprobs differ from the rollout's by 0.3 nats per token
    data.batch["old_log_probs"] = (data.batch["rollout_log_probs"] + 0.3) * mask
    corr = RolloutCorrectionConfig(rollout_is="token", rollout_is_threshold=2.0)
    out, metrics = compute_rollout_correction_and_add_to_batch(data, corr)
    w = out.batch["rollout_is_weights"]
    expected = torch.clamp(torch.exp(torch.tensor(0.3)), max=2.0)
    assert torch.allclose(w[mask.bool()], expected.expand(int(mask.sum())), atol=1e-5)
    assert any(k.startswith("rollout_corr/") for k in metrics)
    # bypass mode: old_log_probs become the recorded rollout logprobs
    fresh = rows_to_dataproto(recorded, pad_token_id=PAD)
    loss_cfg = OmegaConf.create({"loss_mode": "vanilla"})
    apply_bypass_mode(batch=fresh, rollout_corr_config=corr, policy_loss_config=loss_cfg)  # pyright: ignore[reportArgumentType]  # verl reads a DictConfig
    assert torch.equal(fresh.batch["old_log_probs"], fresh.batch["rollout_log_probs"])
    assert loss_cfg.loss_mode == "bypass_mode"


def _tiny_model(vocab: int) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return Qwen2ForCausalLM(cfg)


def _nested_logprobs(model: Any, td: Any, temperature: float) -> torch.Tensor:
    """What verl's engine hands ``ppo_loss``: for every real token j (no-padding order), the
    logprob of token j+1 under the model (the last of each sequence is unused)."""
    values = []
    for ids, pos in zip(td["input_ids"].unbind(), td["position_ids"].unbind(), strict=True):
        logits = model(input_ids=ids[None], position_ids=pos[None]).logits[0] / temperature
        lp = torch.log_softmax(logits.float(), dim=-1)
        nxt = torch.cat([ids[1:], ids[:1]])
        values.append(lp.gather(-1, nxt[:, None])[:, 0])
    return torch.cat(values)  # (total_nnz,): the flat form no_padding_2_padding also takes


def test_verls_ppo_loss_trains_a_tiny_model_on_the_batch(recorded: tuple[TrainingRow, ...]) -> None:
    """verl's worker-side loss (``losses.ppo_loss``, bypass-mode PPO-clip against our rollout
    logprobs) on verl's no-padding layout of our DataProto; one AdamW step raises the
    logprob of positive-advantage tokens. (verl's FSDP engine itself needs CUDA.)"""
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import FSDPActorConfig
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import left_right_2_no_padding

    vocab = 1 + max(max(r.prompt_ids + r.response_ids) for r in recorded)
    model = _tiny_model(vocab)
    data = rows_to_dataproto(recorded, pad_token_id=PAD, size_divisor=2)
    data.batch["old_log_probs"] = data.batch["rollout_log_probs"]
    # DataProto.to_tensordict() insists on tensordict >= 0.10 (the GPU group has it; the CPU
    # group locks 0.8.3), so build the same TensorDict with verl's own helper.
    td = tu.get_tensordict(
        tensor_dict=dict(data.batch.items()),
        non_tensor_dict={"uid": list(data.non_tensor_batch["uid"])},
    )
    td = left_right_2_no_padding(td)
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=None, global_batch_size=None)
    config = FSDPActorConfig(
        strategy="fsdp",
        ppo_mini_batch_size=len(data),
        use_dynamic_bsz=True,
        rollout_n=1,
        policy_loss={"loss_mode": "bypass_mode", "rollout_correction": {"rollout_is": "token"}},
    )

    def positive_logprob() -> float:
        with torch.no_grad():
            from verl.workers.utils.padding import no_padding_2_padding

            lp = no_padding_2_padding(_nested_logprobs(model, td, 1.0), td)
        sel = (data.batch["advantages"] > 0) & data.batch["response_mask"].bool()
        return float(lp[sel].sum())

    before = positive_logprob()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss, metrics = ppo_loss(config, {"log_probs": _nested_logprobs(model, td, 1.0)}, td)
    assert torch.isfinite(loss) and "actor/pg_loss" in metrics
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    opt.step()
    assert positive_logprob() > before


def test_verl_has_no_cpu_training_engine() -> None:
    """What does not run on CPU: verl registers its FSDP engines for cuda/npu only (and its
    device probe answers "cuda" even on a machine without one, so nothing falls back)."""
    from verl.workers.engine.base import EngineRegistry

    registry = EngineRegistry._engines["language_model"]
    for backend in ("fsdp", "fsdp2"):
        assert "cpu" not in registry[backend]
        assert set(registry[backend]) == {"cuda", "npu"}
