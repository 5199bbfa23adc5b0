""":class:`PolicySet`: several per-agent LoRA policies on one frozen base, as one
:class:`~fulmen.train.policy.Policy` for the step driver (``[[policy]]``, :mod:`fulmen.policies`).

* **Models.** The base is loaded once in the serving dtype and frozen; the trainer is a peft
  model holding one adapter per policy (each with its own rank, alpha and targets); the
  server's copy holds its own adapters on the *same* base tensors.
* **Serving.** One :class:`~fulmen_local.server.InferenceServer` serves every adapter as a model
  of the policy's name and the base as ``[model] name``, all in one continuous batch (peft's
  mixed-adapter forward: see :mod:`fulmen_local.server.running_batch`).
* **Training.** One :class:`~fulmen_local.grpo.updater.GRPOUpdater` per policy, each with its
  own AdamW over its own adapter's tensors and its policy's learning rate. :meth:`update`
  splits the step's rows by policy (:func:`fulmen.policies.split_rows`) and trains each policy
  on its own rows with only its adapter active, so rows of one policy never reach another's
  weights or optimizer. A policy without rows is not updated.
* **Versions.** Each adapter has its own version: :meth:`publish` swaps in the adapters updated
  since the last publish, each at the step's version; the others keep theirs.
* **Checkpoints.** ``save_pretrained`` writes every adapter to ``<dir>/<policy>/`` (peft's
  layout for named adapters), with that policy's optimizer state beside it
  (``trainer_state.pt``) and the adapters' versions in ``policies.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fulmen.config import ConfigError, TrainConfig
from fulmen.policies import POLICY_PREFIX, LoraSettings, PolicyConfig, split_rows
from fulmen.rows import TrainingRow
from fulmen_local.grpo.updater import GRPOConfig, GRPOUpdater
from fulmen_local.model.load import load_causal_lm, resolve_device, resolve_dtype
from fulmen_local.model.lora import adapter_state, attach_adapters, is_adapter_dir, serving_copy
from fulmen_local.model.policy import PolicyModels
from fulmen_local.server import InferenceServer
from fulmen_local.settings import LocalSettings
from fulmen_local.train.local_policy import grpo_config
from fulmen_local.train.model_setup import (
    check_context,
    local_settings,
    policy_tool_parser,
    prepare_model,
)
from fulmen_local.train.token_view import TokenizerView
from fulmen_local.train.trainer_state import load_trainer_state, save_trainer_state
from peft import PeftModel, load_peft_weights, set_peft_model_state_dict

__all__ = ["VERSIONS_FILE", "PolicySet", "load_policy_set"]

Log = Callable[[str], None]

VERSIONS_FILE = "policies.json"
"""In a checkpoint: ``{policy name: adapter version}``."""

_SUMMED = ("num_tokens", "num_rows", "optimizer_steps")
_DRIFT_MEANS = ("drift/logprob_abs_diff_mean", "drift/logprob_k3")  # per drift/logprob_tokens


def load_policy_set(
    source: str | Path, local: LocalSettings, policies: Sequence[PolicyConfig]
) -> PolicyModels:
    """The frozen base from ``source`` with one fresh adapter per policy (its own ``lora``,
    else ``[local] lora``, else the defaults), and the server's copy sharing the base.

    Raises:
        ConfigError: a bad ``[model]``/``[local]`` setting, or ``target_modules`` this model
            lacks.
    """
    device = resolve_device(local.device)
    dtype = resolve_dtype(local.dtype, device)
    base, tokenizer = load_causal_lm(source, device=device, dtype=dtype)
    base.requires_grad_(False)
    if local.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False
    default = local.lora or LoraSettings()
    trainer = attach_adapters(base, {p.name: p.lora or default for p in policies})
    return PolicyModels(trainer, serving_copy(trainer), tokenizer, device, dtype, True)


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if isinstance(pad, int) else 0


class PolicySet(TokenizerView):
    """Per-agent LoRA policies trained and served in this process (see the module docstring).

    Build it with :meth:`build` or :meth:`from_config`: the server is running and serves every
    adapter at version 0 when it returns. Close it when done.
    """

    def __init__(
        self,
        models: PolicyModels,
        policies: Sequence[PolicyConfig],
        updaters: Mapping[str, GRPOUpdater],
        server: InferenceServer,
    ) -> None:
        self.models = models
        self.policies = tuple(policies)
        self.updaters = dict(updaters)
        self.server = server
        self._version = 0
        self._dirty: dict[str, int | None] = {}
        """Adapters to swap in at the next publish: None at the publish's version, else a
        saved version (after :meth:`load`)."""
        self._closed = False

    @property
    def trainer(self) -> PeftModel:
        """The trained peft model (every adapter)."""
        trainer = self.models.trainer
        assert isinstance(trainer, PeftModel)
        return trainer

    @classmethod
    def build(
        cls,
        source: str | Path,
        local: LocalSettings,
        optim: GRPOConfig,
        policies: Sequence[PolicyConfig],
        *,
        model_name: str = "policy",
        max_tokens: int | None = None,
        log: Log = print,
    ) -> PolicySet:
        """Load ``source`` with one adapter per policy and serve them (base as ``model_name``).

        Raises:
            ConfigError: a bad ``[model]`` / ``[local]`` / ``[[policy]]`` setting, or a
                ``max_tokens`` that does not fit the model's context.
        """
        models = load_policy_set(source, local, policies)
        if max_tokens is not None:
            check_context(max_tokens, models, source)
        parser = policy_tool_parser(local, models)
        trainer = models.trainer
        assert isinstance(trainer, PeftModel)
        updaters: dict[str, GRPOUpdater] = {}
        for p in policies:
            trainer.set_adapter(p.name)  # its tensors alone require grad: its optimizer's
            own = replace(optim, lr=p.learning_rate) if p.learning_rate is not None else optim
            updaters[p.name] = GRPOUpdater(
                trainer, own, pad_token_id=_pad_id(models.tokenizer),
                reference_context=models.adapters_disabled if own.kl_coef > 0 else None,
                autocast_dtype=models.dtype,
            )  # fmt: skip
            count = sum(t.numel() for t in adapter_state(trainer, p.name).values())
            log(f"policy {p.name!r}: agents {', '.join(p.agents)}; {count:,} LoRA parameters, lr {own.lr:g}")
        server = InferenceServer(
            models.serving, models.tokenizer, model_name=model_name,
            max_batch_size=local.max_batch_size, policy_version=0, tool_parser=parser,
            adapters=[p.name for p in policies],
        )  # fmt: skip
        server.start_in_thread()
        log(
            f"serving {len(policies)} adapters and the frozen base ({model_name!r}) on "
            f"{models.device} ({models.dtype}) in one batch"
        )
        return cls(models, policies, updaters, server)

    @classmethod
    def from_config(cls, config: TrainConfig, *, log: Log = print) -> PolicySet:
        """:meth:`build` for a training config with ``[[policy]]`` entries."""
        local = local_settings(config)
        return cls.build(
            prepare_model(config, log), local, grpo_config(config, local), config.policies,
            model_name=config.model.name, max_tokens=config.train.max_tokens, log=log,
        )  # fmt: skip

    # ------------------------------------------------------------------ the Policy protocol

    def view_tokenizer(self) -> Any:
        """The served tokenizer (the drift checks' :class:`fulmen.drift.TokenView`)."""
        return self.models.tokenizer

    @property
    def upstream_url(self) -> str:
        """The inference server's base URL."""
        return self.server.url

    @property
    def version(self) -> int:
        """The last :meth:`publish` (each adapter's own version: :meth:`adapter_version`)."""
        return self._version

    def adapter_version(self, name: str) -> int:
        """The version policy ``name``'s adapter is served at."""
        return self.server.engine.version_of(name)

    def update(self, rows: Sequence[TrainingRow]) -> Mapping[str, float]:
        """One GRPO step per policy that has rows, each on its own rows and adapter.

        Returns the schema's keys over every trained token (``loss``, ``grad_norm`` and the
        means weighted by each policy's tokens; ``num_tokens``, ``num_rows``,
        ``optimizer_steps`` and the backend's namespaced counts summed; ``ratio_max`` the
        largest; the ``drift/logprob_*`` means weighted by each policy's compared tokens) and
        each policy's own metrics as ``policy/<name>/<key>``.
        """
        out: dict[str, float] = {}
        totals: dict[str, float] = {}
        tokens = 0.0
        compared = 0.0
        for name, own in split_rows(rows, self.policies).items():
            if not any(r.num_trained_tokens for r in own):
                continue
            self.trainer.set_adapter(name)
            metrics = self.updaters[name].update(own)
            self._dirty[name] = None
            out.update({f"{POLICY_PREFIX}{name}/{k}": v for k, v in metrics.items()})
            weight = metrics["num_tokens"]
            tokens += weight
            compared += metrics.get("drift/logprob_tokens", 0.0)
            for key, value in metrics.items():
                if key in _DRIFT_MEANS:
                    totals[key] = totals.get(key, 0.0) + value * metrics["drift/logprob_tokens"]
                elif key == "drift/logprob_abs_diff_max":
                    totals[key] = max(totals.get(key, 0.0), value)
                elif key in _SUMMED or "/" in key:  # counts (local/recomputed_old_logprob_tokens)
                    totals[key] = totals.get(key, 0.0) + value
                elif key == "ratio_max":
                    totals[key] = max(totals.get(key, 0.0), value)
                elif key != "lr":  # each policy has its own
                    totals[key] = totals.get(key, 0.0) + value * weight
        for key, value in totals.items():
            if key in _DRIFT_MEANS:
                out[key] = value / max(compared, 1.0)
                continue
            plain = key in _SUMMED or "/" in key or key == "ratio_max"
            out[key] = value if plain else value / max(tokens, 1.0)
        if not tokens:
            raise ValueError("PolicySet.update: no row of any policy has a trained token")
        return out

    def publish(self, version: int) -> None:
        """Swap in each adapter updated (or loaded) since the last publish, at ``version`` (or
        its saved version); the other adapters keep serving their own versions."""
        for name, saved in sorted(self._dirty.items()):
            self.server.update_weights(
                adapter_state(self.trainer, name),
                version=version if saved is None else saved,
                adapter=name,
            )
        self._dirty.clear()
        self._version = version

    def save(self, directory: Path) -> None:
        """Every adapter (``<dir>/<policy>/``) with its optimizer state, the tokenizer and
        ``policies.json`` (each adapter's version)."""
        self.trainer.save_pretrained(str(directory))
        self.models.tokenizer.save_pretrained(directory)
        versions: dict[str, int] = {}
        for p in self.policies:
            save_trainer_state(directory / p.name, self.updaters[p.name].optimizer)
            loaded = self._dirty.get(p.name)  # loaded, not yet published: the saved version
            versions[p.name] = loaded if loaded is not None else self.adapter_version(p.name)
        (directory / VERSIONS_FILE).write_text(json.dumps(versions, indent=1))

    def load(self, directory: Path) -> None:
        """Restore every adapter, its optimizer state and its version from :meth:`save`'s
        ``directory``; :meth:`publish` serves them.

        Raises:
            ConfigError: the checkpoint lacks a policy's adapter, or one does not fit.
        """
        versions_path = directory / VERSIONS_FILE
        if not versions_path.is_file():
            raise ConfigError(
                f"{directory} holds no {VERSIONS_FILE}: not a checkpoint of a run with "
                "[[policy]]; resume with the config the run was started with"
            )
        versions: dict[str, int] = json.loads(versions_path.read_text())
        for p in self.policies:
            where = directory / p.name
            if not is_adapter_dir(where):
                raise ConfigError(
                    f"{directory} holds no adapter for policy {p.name!r}; resume with the "
                    "[[policy]] entries the run was started with"
                )
            weights = load_peft_weights(str(where), device=str(self.models.device))
            try:
                result = set_peft_model_state_dict(self.trainer, weights, adapter_name=p.name)
            except RuntimeError as exc:  # size mismatches
                first = str(exc).strip().splitlines()[0]
                raise ConfigError(
                    f"{where} does not fit policy {p.name!r} ({first}); resume with the "
                    "[[policy]] settings the run was started with"
                ) from exc
            unexpected = list(getattr(result, "unexpected_keys", []))
            if unexpected:
                raise ConfigError(f"{where}: unexpected adapter weights {unexpected[:3]}")
            load_trainer_state(where, self.updaters[p.name].optimizer)
            self._dirty[p.name] = int(versions.get(p.name, 0))

    def close(self) -> None:
        """Stop the server (idempotent)."""
        if not self._closed:
            self._closed = True
            self.server.stop()

