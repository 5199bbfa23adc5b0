"""fulmen-dspy: the fulmen adapter for DSPy (module tree, predictors, tool results).

Add one line before the program runs, and point each episode's program at its route::

    import dspy
    import fulmen_dspy

    fulmen_dspy.DSPyAdapter().attach()

    def agent(task, ctx):
        with dspy.context(lm=fulmen_dspy.lm_for(ctx, "policy")):
            return program(question=task.data["question"]).answer
"""

from __future__ import annotations

try:
    import dspy  # noqa: F401  # pyright: ignore[reportUnusedImport]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fulmen-dspy needs DSPy: pip install 'fulmen-dspy' (which pulls dspy>=3.0,<4)"
    ) from exc

from fulmen_dspy._adapter import DSPyAdapter
from fulmen_dspy._lm import lm_for

__all__ = ["DSPyAdapter", "lm_for"]
