"""The curve PNG of a run: reward and held-out success per step, and the policy statistics."""

from __future__ import annotations

from pathlib import Path

from fulmen.train.metrics_log import read_metrics

__all__ = ["plot_curves"]


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
