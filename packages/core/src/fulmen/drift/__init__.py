"""Token drift diagnostics: where the tokens the trainer trains differ from what the model saw.

* :mod:`fulmen.drift.prefix`: consecutive calls of one agent whose prompts do not continue
  each other (:func:`prefix_checks`, :func:`first_divergence`);
* :mod:`fulmen.drift.tokens`: with the policy's tokenizer (:class:`TokenView`), the recorded
  messages re-rendered against the served prompt ids, and counted token anomalies;
* :mod:`fulmen.drift.hf_view`: that view over a Hugging Face tokenizer object;
* :mod:`fulmen.drift.metrics`: the ``drift/`` metrics of a step and a run.

The rollout-vs-trainer logprob figures come from each backend's update (its own forward pass);
their keys are :data:`UPDATE_KEYS`. ``docs/drift.md`` says what each figure means and what to
check.
"""

from fulmen.drift.hf_view import HFTokenView
from fulmen.drift.metrics import (
    LOGPROB_KEYS,
    RUN_KEYS,
    STEP_KEYS,
    UPDATE_KEYS,
    run_drift_metrics,
    run_drift_summary,
    step_drift_metrics,
)
from fulmen.drift.prefix import TOKEN_DRIFT_REASONS, PrefixCheck, first_divergence, prefix_checks
from fulmen.drift.tokens import ANOMALY_KINDS, RenderCheck, TokenView, render_check, token_anomalies

__all__ = [
    "ANOMALY_KINDS",
    "LOGPROB_KEYS",
    "RUN_KEYS",
    "STEP_KEYS",
    "TOKEN_DRIFT_REASONS",
    "UPDATE_KEYS",
    "HFTokenView",
    "PrefixCheck",
    "RenderCheck",
    "TokenView",
    "first_divergence",
    "prefix_checks",
    "render_check",
    "run_drift_metrics",
    "run_drift_summary",
    "step_drift_metrics",
    "token_anomalies",
]
