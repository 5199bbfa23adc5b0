"""The run's metrics log: ``metrics.jsonl`` (always), TensorBoard (``tensorboardX``, when the
backend asks for it) and the experiment trackers ``[run] trackers`` names (Weights & Biases,
MLflow). Row keys follow :mod:`fulmen.train.schema`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from fulmen.errors import ConfigError, MissingDependencyError
from fulmen.observe._optional import require

__all__ = ["TRACKERS", "MetricsWriter", "read_metrics"]

TRACKERS = ("wandb", "mlflow")
"""Optional trackers ``[run] trackers`` may name; each is imported only when named."""


class _Tracker(Protocol):
    def log(self, scalars: Mapping[str, float], step: int) -> None: ...
    def close(self) -> None: ...


class _WandbTracker:
    """A W&B run in ``out_dir`` (project from ``WANDB_PROJECT``, default ``fulmen``; W&B's own
    environment variables, e.g. ``WANDB_MODE=offline``, apply)."""

    def __init__(self, out_dir: Path, run_name: str, config: Mapping[str, Any]) -> None:
        wandb: Any = require(
            "wandb", feature='[run] trackers = ["wandb"]', package="wandb",
            install="pip install wandb (or remove \"wandb\" from [run] trackers)",
        )
        self._run: Any = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "fulmen"), name=run_name, dir=str(out_dir),
            config=dict(config),
        )

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self._run.log(dict(scalars), step=step)

    def close(self) -> None:
        self._run.finish()


class _MLflowTracker:
    """An MLflow run (tracking URI and experiment from ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_EXPERIMENT_NAME``, MLflow's defaults otherwise)."""

    def __init__(self, out_dir: Path, run_name: str, config: Mapping[str, Any]) -> None:
        self._mlflow: Any = require(
            "mlflow", feature='[run] trackers = ["mlflow"]', package="mlflow",
            install="pip install mlflow (or remove \"mlflow\" from [run] trackers)",
        )
        self._mlflow.start_run(run_name=run_name)

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self._mlflow.log_metrics(dict(scalars), step=step)

    def close(self) -> None:
        self._mlflow.end_run()


_TRACKER_CLASSES: dict[str, type[_WandbTracker] | type[_MLflowTracker]] = {
    "wandb": _WandbTracker,
    "mlflow": _MLflowTracker,
}


class MetricsWriter:
    """Appends one JSON object per event to ``metrics.jsonl`` and mirrors scalars to TensorBoard
    and the named trackers.

    Every line has ``kind`` (``train`` or ``eval``) and ``step``. Lines are flushed as written,
    so a crashed run keeps what it logged.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        tensorboard: bool = False,
        trackers: Sequence[str] = (),
        run_name: str = "fulmen",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Open (append to) ``out_dir/metrics.jsonl`` and, with ``tensorboard``,
        ``out_dir/tensorboard/``.

        ``trackers`` (from :data:`TRACKERS`) are started first, with ``run_name`` and the run's
        ``config``; a tracker never named is never imported.

        Raises:
            ValueError: A tracker not in :data:`TRACKERS`.
            ConfigError: A named tracker, or ``tensorboardX`` for ``tensorboard``, is not
                installed (the message names the pip install; ``fulmen train`` prints it
                without a traceback).
        """
        unknown = [t for t in trackers if t not in _TRACKER_CLASSES]
        if unknown:
            raise ValueError(f"trackers: unknown {unknown[0]!r}; expected one of {', '.join(TRACKERS)}")
        summary_writer: Any = None
        self._trackers: list[_Tracker] = []
        try:
            if tensorboard:
                summary_writer = require(
                    "tensorboardX", feature="TensorBoard event files", package="tensorboardX",
                    install="pip install tensorboardX",
                ).SummaryWriter
            for name in trackers:
                self._trackers.append(_TRACKER_CLASSES[name](out_dir, run_name, config or {}))
        except MissingDependencyError as exc:
            self._close_trackers()
            raise ConfigError(str(exc)) from exc
        except BaseException:
            self._close_trackers()
            raise
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._tb: Any = (
            summary_writer(str(out_dir / "tensorboard")) if summary_writer is not None else None
        )

    def write(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """Record ``values`` for ``step``; numeric ones also go to TensorBoard as ``kind/name``."""
        row = {"kind": kind, "step": step, **values}
        self._file.write(json.dumps(row, default=str) + "\n")
        self._file.flush()
        scalars = {
            f"{kind}/{name}": float(value)
            for name, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        }
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, step)
            self._tb.flush()
        for tracker in self._trackers:
            tracker.log(scalars, step)

    def close(self) -> None:
        """Flush and close (the trackers' runs are finished)."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        self._close_trackers()

    def _close_trackers(self) -> None:
        trackers, self._trackers = self._trackers, []
        for tracker in trackers:
            tracker.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
