"""Compare the one-policy and the two-policy runs of this example: each agent's own metric on the
held-out tasks (greedy), step by step, and a figure.

* **solver**: held-out success, the fraction of held-out questions whose final answer is exact
  (the episode's outcome; the solver gives the final answer, so it is also the end-to-end
  success of the system);
* **planner**: plan quality, the mean of the planner's ``plan`` reward over the held-out
  episodes (greedy) and over each step's training rollouts (sampled at the training
  temperature, by the version before the step). The reward is
  :func:`~examples.multi_agent.plan.plan_quality`, the plan's decomposition score against the
  task's ground truth (operands, operation, no stated result: 1/3 each); runs recorded before
  it had the format-only :func:`~examples.multi_agent.plan.plan_score` under that name.

Both come from the runs' own records: ``metrics.jsonl`` (eval rows) and ``episodes.db`` (each
held-out episode's ``plan`` reward; evaluation episodes have no group and run in blocks of
``[train] eval_size``, one block per evaluation, in order).

Run from the repository root after both trainings::

    uv run --locked python -m examples.multi_agent.compare \\
        runs/multi-agent-one-policy runs/multi-agent-policies examples/multi_agent/policies.png
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from fulmen.store import open_store
from fulmen.train.metrics_log import read_metrics


def held_out(run: Path) -> list[tuple[int, float, float]]:
    """``(step, solver held-out success, planner held-out plan score)`` per evaluation."""
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "eval"]
    with open_store(run / "episodes.db") as store:
        episodes = sorted(
            (e for e in store.list_episodes() if e.group_id is None), key=lambda e: e.created_at
        )
        size = len(episodes) // max(len(evals), 1)
        plan_scores: list[float] = []
        for i in range(len(evals)):
            block = [e.id for e in episodes[i * size : (i + 1) * size]]
            plans = [
                r.value for rec in store.records(block) for r in rec.rewards if r.name == "plan"
            ]
            plan_scores.append(statistics.fmean(plans) if plans else 0.0)
    return [(int(e["step"]), float(e["success_rate"]), p) for e, p in zip(evals, plan_scores, strict=True)]


def sampled_plan_scores(run: Path) -> dict[int, float]:
    """Mean plan score of each training step's rollouts (``step<k>:`` groups)."""
    with open_store(run / "episodes.db") as store:
        by_step: dict[int, list[str]] = {}
        for e in store.list_episodes():
            if e.group_id and e.group_id.startswith("step"):
                by_step.setdefault(int(e.group_id.split(":")[0].removeprefix("step")), []).append(e.id)
        return {
            step: statistics.fmean(
                r.value for rec in store.records(ids) for r in rec.rewards if r.name == "plan"
            )
            for step, ids in sorted(by_step.items())
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="Compare the one-policy and the two-policy runs.")
    parser.add_argument("one_policy", type=Path)
    parser.add_argument("two_policies", type=Path)
    parser.add_argument("png", type=Path)
    args = parser.parse_args()
    runs = {"one policy (solver LoRA; planner masked)": args.one_policy,
            "two policies (planner LoRA + solver LoRA)": args.two_policies}  # fmt: skip
    results = {name: held_out(path) for name, path in runs.items()}
    sampled = {name: sampled_plan_scores(path) for name, path in runs.items()}
    print("| run | step | solver held-out success | planner held-out plan quality | planner plan quality, rollouts of the next step |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        for step, success, plan in rows:
            nxt = sampled[name].get(step + 1)
            after = f"{nxt:.2f}" if nxt is not None else ""
            print(f"| {name} | {step} | {success:.0%} | {plan:.2f} | {after} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in results.items():
        steps = [r[0] for r in rows]
        axes[0].plot(steps, [r[1] for r in rows], "o-", label=name)
        axes[1].plot(steps, [r[2] for r in rows], "o:", label=f"{name}, held-out")
        points = sorted(sampled[name].items())
        axes[1].plot([k - 1 for k, _ in points], [v for _, v in points], "s-", label=f"{name}, rollouts")
    for ax, title in zip(axes, ("solver: held-out success (= end to end)", "planner: plan quality (after step)"), strict=True):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].set_xlabel("step (evaluation after it)")
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(f"figure: {args.png}")


if __name__ == "__main__":
    main()
