"""fulmen-dspy: the fulmen adapter for DSPy (module tree, predictors, tool results).

Add one line before the program runs, and point each episode's program at its route::

    import dspy
    from fulmen_dspy import DSPyAdapter

    ADAPTER = DSPyAdapter().attach()

    def agent(task, ctx):
        with dspy.context(lm=ADAPTER.model_for(ctx)):
            return program(question=task.data["question"]).answer
"""

from __future__ import annotations

from fulmen_dspy._requirement import REQUIREMENT

REQUIREMENT.check()  # before DSPy is imported: a missing framework names the install line

from fulmen_dspy._adapter import DSPyAdapter  # noqa: E402

__all__ = ["DSPyAdapter"]
