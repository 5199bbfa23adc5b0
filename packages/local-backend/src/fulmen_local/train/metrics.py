"""Per-step metrics: JSONL (always), TensorBoard (tensorboardX), and the curve PNG at the end."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "plot_curves", "read_metrics"]


class MetricsWriter:
    """Appends one JSON object per event to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Every line has ``kind`` (``train`` or ``eval``) and ``step``. Lines are flushed as written,
    so a crashed run keeps what it logged.
    """

    def __init__(self, out_dir: Path, *, tensorboard: bool = True) -> None:
        """Open (append to) ``out_dir/metrics.jsonl`` and ``out_dir/tensorboard/``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._tb: Any = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """Record ``values`` for ``step``; numeric ones also go to TensorBoard as ``kind/name``."""
        row = {"kind": kind, "step": step, **values}
        self._file.write(json.dumps(row, default=str) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{name}", value, step)
            self._tb.flush()

    def close(self) -> None:
        """Flush and close."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()


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


def plot_curves(metrics_path: Path, png_path: Path, *, title: str = "fulmen training") -> Path:
    """Draw reward (train) and success (eval, greedy) per step into ``png_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.plot([r["step"] for r in train], [r.get("reward_mean", float("nan")) for r in train],
            label="train reward (sampled)")
    ax.plot([r["step"] for r in train], [r.get("success_rate", float("nan")) for r in train],
            label="train success (sampled)", alpha=0.6)
    ax.plot([r["step"] for r in evals], [r.get("success_rate", float("nan")) for r in evals],
            "o-", label="held-out success (greedy)")
    ax.set_xlabel("step")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right")
    ax.set_title(title)
    ax2 = axes[1]
    for key in ("kl", "clip_fraction", "tool_call_rate"):
        ax2.plot([r["step"] for r in train], [r.get(key, float("nan")) for r in train], label=key)
    ax2.set_xlabel("step")
    ax2.legend(loc="upper right")
    ax2.set_title("policy statistics")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
