"""``fulmen train``, ``eval`` and ``merge``: run a training job / an evaluation from a config, or
fold a LoRA checkpoint into its base."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``train``, ``eval`` and ``merge`` sub-commands."""
    p: argparse.ArgumentParser = sub.add_parser("train", help="train an agent from a config file")
    p.add_argument("config", type=Path, help="TOML config (see examples/calculator/train.toml)")
    p.add_argument("--backend", default=None, help="training backend (default: the config's, else 'local')")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.set_defaults(func=run_train)

    e: argparse.ArgumentParser = sub.add_parser("eval", help="evaluate a model on the config's eval split")
    e.add_argument("config", type=Path, help="TOML config")
    e.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory (default: base model)")
    e.add_argument("--backend", default=None, help="backend (default: the config's, else 'local')")
    e.set_defaults(func=run_eval)

    m: argparse.ArgumentParser = sub.add_parser(
        "merge", help="fold a LoRA checkpoint into its base and write a full model"
    )
    m.add_argument("config", type=Path, help="TOML config of the run")
    m.add_argument("--checkpoint", type=Path, required=True, help="LoRA checkpoint directory")
    m.add_argument("--out", type=Path, required=True, help="directory for the merged model")
    m.add_argument("--backend", default=None, help="backend (default: the config's, else 'local')")
    m.set_defaults(func=run_merge)


def _backend(args: argparse.Namespace) -> Any:
    """The backend to run, after the whole config (every table) has been validated.

    Raises:
        FulmenError: no such file, an invalid config, or no installed backend of that name.
    """
    from fulmen.backend import load_backend
    from fulmen.cli import UserFacingError
    from fulmen.config import load_config

    if not args.config.exists():
        raise UserFacingError(f"config file {str(args.config)!r} does not exist")
    config = load_config(args.config)
    return load_backend(args.backend or config.backend)


def run_train(args: argparse.Namespace) -> int:
    """Train. (A :class:`~fulmen.errors.FulmenError` the backend raises is printed as one line
    by :func:`fulmen.cli.main`.)"""
    return _backend(args).train(args.config, resume=args.resume)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate."""
    return _backend(args).evaluate(args.config, checkpoint=args.checkpoint)


def run_merge(args: argparse.Namespace) -> int:
    """Merge a LoRA checkpoint (backends without adapters refuse with one line)."""
    from fulmen.cli import UserFacingError

    backend = _backend(args)
    merge = getattr(backend, "merge", None)
    if merge is None:
        raise UserFacingError(
            f"the {type(backend).__name__} backend has no LoRA merge; merge with the backend "
            "that trained the checkpoint (fulmen-local: --backend local)"
        )
    return int(merge(args.config, checkpoint=args.checkpoint, out=args.out))
