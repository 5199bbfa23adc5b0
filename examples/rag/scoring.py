"""Scoring a final answer against the gold one: token F1 (the training reward) and exact match.

Both compare *normalised* answers: the text after the last ``Answer:`` (the whole text when
there is none), lower-cased, punctuation dropped, the articles ``a``/``an``/``the`` removed,
whitespace collapsed. F1 is the harmonic mean of token precision and recall over those
normalised tokens (counted with multiplicity), so ``Vorna Dask`` for ``Vorna Kell`` earns 0.5;
exact match is 1 only when the normalised token lists are equal.
"""

from __future__ import annotations

import re
import string
from collections import Counter

__all__ = ["answer_text", "exact_match", "f1", "normalize"]

_ANSWER = re.compile(r"answer\s*:", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans(dict.fromkeys(string.punctuation, " "))


def answer_text(output: str | None) -> str:
    """The answer part of a final message: after the last ``Answer:``, else all of it."""
    if not output:
        return ""
    parts = _ANSWER.split(output)
    return parts[-1].strip()


def normalize(text: str) -> list[str]:
    """Lower-case, drop punctuation and articles, split on whitespace."""
    lowered = text.lower().translate(_PUNCT)
    return _ARTICLES.sub(" ", lowered).split()


def f1(output: str | None, gold: str) -> float:
    """Token F1 of the answer in ``output`` against ``gold`` (0.0 for no answer)."""
    predicted, truth = normalize(answer_text(output)), normalize(gold)
    if not predicted or not truth:
        return 0.0
    common = sum((Counter(predicted) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def exact_match(output: str | None, gold: str) -> float:
    """1.0 when the normalised answer equals the normalised gold, else 0.0."""
    return float(normalize(answer_text(output)) == normalize(gold) != [])
