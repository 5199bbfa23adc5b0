"""``fulmen train`` and ``fulmen eval``: run a training job / an evaluation from a config."""

from __future__ import annotations

import argparse
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``train`` and ``eval`` sub-commands."""
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


def _backend(args: argparse.Namespace) -> Any:
    from fulmen.backend import BackendNotFound, load_backend
    from fulmen.cli import UserFacingError
    from fulmen.config import ConfigError, load_config

    if not args.config.exists():
        raise UserFacingError(f"config file {str(args.config)!r} does not exist")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    name = args.backend or config.backend
    try:
        return load_backend(name)
    except BackendNotFound as exc:
        raise UserFacingError(str(exc)) from None


def run_train(args: argparse.Namespace) -> int:
    """Train."""
    backend = _backend(args)
    with _config_errors():
        return backend.train(args.config, resume=args.resume)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate."""
    backend = _backend(args)
    with _config_errors():
        return backend.evaluate(args.config, checkpoint=args.checkpoint)


@contextmanager
def _config_errors() -> Generator[None]:
    """A config problem a backend finds (a run directory already in use, a bad backend
    section...) is reported as its message, without a traceback."""
    from fulmen.cli import UserFacingError
    from fulmen.config import ConfigError

    try:
        yield
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
