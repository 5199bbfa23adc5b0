"""``LocalBackend``: the embedded single-machine backend behind ``fulmen train`` / ``eval`` /
``merge``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fulmen.backend_config import BackendSection
from fulmen.config import ConfigError, load_config

from fulmen_local.settings import parse_local_settings

__all__ = ["LocalBackend"]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LocalBackend:
    """Trains on this machine's CPU (or one GPU) with transformers + torch."""

    config_section = BackendSection("local", parse_local_settings)
    """``[local]``: :class:`~fulmen_local.settings.LocalSettings`, validated by ``load_config``."""

    def train(self, config_path: Path, *, resume: bool = False) -> int:
        """Run ``fulmen train CONFIG`` and print the before/after held-out success."""
        from fulmen_local.train.loop import run_training

        config = load_config(config_path)
        result = run_training(config, resume=resume, log=_log)
        parts = [f"trained {result.steps} steps in {result.wall_s:.0f} s"]
        if result.before is not None:
            parts.append(f"held-out success before {result.before.success_rate:.0%}")
        if result.after is not None:
            parts.append(f"after {result.after.success_rate:.0%}")
        print(" · ".join(parts))
        print(f"outputs: {result.output_dir} (metrics.jsonl, tensorboard/, curve.png, checkpoints/)")
        return 0

    def evaluate(self, config_path: Path, *, checkpoint: Path | None = None) -> int:
        """Run ``fulmen eval CONFIG [--checkpoint DIR]`` and print the held-out success."""
        from fulmen_local.train.evaluate import run_evaluation

        config = load_config(config_path)
        if not config.data.eval:
            raise ConfigError(f"{config_path}: [data] eval is not set; nothing to evaluate")
        result = asyncio.run(run_evaluation(config, checkpoint=checkpoint, log=_log))
        which = str(checkpoint) if checkpoint else "the base model"
        print(
            f"{which}: held-out success {result.success_rate:.1%} "
            f"({result.episodes} tasks, greedy; {result.failed} failed episodes)"
        )
        return 0

    def merge(self, config_path: Path, *, checkpoint: Path, out: Path) -> int:
        """Run ``fulmen merge CONFIG --checkpoint DIR --out DIR``: fold a LoRA checkpoint into
        its base (the adapter's recorded base, else the config's ``[model] path``) and save a
        full model + tokenizer that vLLM or ``from_pretrained`` can serve."""
        from fulmen_local.model.lora import adapter_base, is_adapter_dir, merge_adapter
        from fulmen_local.train.model_setup import prepare_model

        config = load_config(config_path)
        if not checkpoint.is_dir():
            raise ConfigError(f"--checkpoint {str(checkpoint)!r} is not a directory")
        base = adapter_base(checkpoint) if is_adapter_dir(checkpoint) else None
        if base is None or not Path(base).exists():
            base = str(prepare_model(config, _log))
        merged = merge_adapter(checkpoint, out, base=base)
        print(f"merged {checkpoint} into {base}: full model written to {merged}")
        return 0
