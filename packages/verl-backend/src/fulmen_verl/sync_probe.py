"""Does vLLM serve the trainer's weights? One fixed sequence, scored by both.

After verl's weight sync (``CheckpointEngineManager.update_weights``) the rollout server and
the FSDP actor should hold the same policy. :func:`probe_sync` asks vLLM for the logprob of
every response token of a fixed ``prompt + response`` (``/v1/completions`` with
``prompt_logprobs``, temperature 1) and has verl's actor recompute them
(``RayPPOTrainer._compute_old_log_prob``, the same forward pass as the PPO update). Equal
within float tolerance: vLLM serves the actor's weights. Used by the CPU run test and as a
diagnostic (after any ``VerlPolicy.publish``, with ``VerlPolicy.trainer``).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fulmen.rows import TrainingRow

from fulmen_verl.dataproto import rows_to_dataproto
from fulmen_verl.step import data_parallel_size

__all__ = ["SyncProbe", "probe_sync", "served_logprobs", "trainer_logprobs"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncProbe:
    """The response tokens' logprobs under the served and under the trained policy."""

    served: tuple[float, ...]
    """vLLM's (the rollout server's) logprobs."""
    trained: tuple[float, ...]
    """verl's actor's recomputation."""
    served_version: int | None
    """The policy version (global step) the vLLM server says it serves."""

    @property
    def max_abs_diff(self) -> float:
        """Largest per-token difference between :attr:`served` and :attr:`trained`."""
        return max(abs(a - b) for a, b in zip(self.served, self.trained, strict=True))


def served_logprobs(
    url: str,
    model: str,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    *,
    timeout_s: float = 120.0,
) -> list[float]:
    """vLLM's logprob of each of ``response_ids`` after ``prompt_ids`` (its OpenAI server at
    ``url``, served model name ``model``).

    Raises:
        ValueError: the answer lacks a logprob for a response token.
    """
    body = {
        "model": model,
        "prompt": [*prompt_ids, *response_ids],
        "max_tokens": 1,
        "temperature": 1.0,
        "prompt_logprobs": 0,
    }
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer: Any = json.loads(response.read())
    scored: list[Any] = answer["choices"][0]["prompt_logprobs"][len(prompt_ids) :]
    out: list[float] = []
    for token, entry in zip(response_ids, scored, strict=True):
        if not entry or str(token) not in entry:
            raise ValueError(f"vLLM returned no prompt logprob for token {token}")
        out.append(float(entry[str(token)]["logprob"]))
    return out


def trainer_logprobs(
    trainer: Any, prompt_ids: Sequence[int], response_ids: Sequence[int], *, pad_token_id: int
) -> list[float]:
    """verl's actor's logprob of each of ``response_ids`` after ``prompt_ids`` (temperature 1)."""
    n = len(response_ids)
    row = TrainingRow(
        prompt_ids=tuple(prompt_ids),
        response_ids=tuple(response_ids),
        response_mask=(1,) * n,
        rollout_logprobs=(0.0,) * n,
        advantages=(0.0,) * n,
        group_id="sync-probe",
        episode_id="sync-probe",
        seqs=(0,),
    )
    data = rows_to_dataproto(
        [row], pad_token_id=pad_token_id, size_divisor=data_parallel_size(trainer)
    )
    old, _mfu = trainer._compute_old_log_prob(data)
    return [float(x) for x in old.batch["old_log_probs"][0][:n].tolist()]


def served_version(trainer: Any) -> int | None:
    """The global step the first vLLM server was last synced to (its ``global_steps``)."""
    import ray

    servers: Any = trainer.llm_server_manager.get_replicas()[0].servers
    version: Any = ray.get(servers[0].__ray_call__.remote(lambda server: server.global_steps))  # pyright: ignore[reportUnknownLambdaType]
    return None if version is None else int(version)


def probe_sync(
    trainer: Any,
    url: str,
    model: str,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    *,
    pad_token_id: int,
) -> SyncProbe:
    """Score ``prompt_ids + response_ids`` with vLLM at ``url`` and with the trainer."""
    return SyncProbe(
        served=tuple(served_logprobs(url, model, prompt_ids, response_ids)),
        trained=tuple(
            trainer_logprobs(trainer, prompt_ids, response_ids, pad_token_id=pad_token_id)
        ),
        served_version=served_version(trainer),
    )
