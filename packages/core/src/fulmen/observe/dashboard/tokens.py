"""The token viewer's data: recorded token ids turned back into text, with their logprobs.

The store keeps the exact token ids (and logprobs) the inference server used, not their text.
:class:`TokenText` reads the model's ``tokenizer.json`` with the ``tokenizers`` library (no
torch; the ``dashboard`` extra) and decodes each id on its own, special tokens included, so
that every token of a call can be shown where it is. A byte-level token that is only part of a
multi-byte character decodes to U+FFFD on its own; its id is always shown next to it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fulmen.observe._optional import require
from fulmen.protocol import Transition

__all__ = ["TokenText", "find_tokenizer", "token_view"]

_INSTALL = "pip install 'fulmen[dashboard]'"


class TokenText:
    """Decodes token ids one by one with a Hugging Face ``tokenizer.json`` (not thread-safe:
    it caches each id's text; the dashboard calls it from its one data thread).

    Args:
        path: The ``tokenizer.json`` file, or a model directory that holds one.

    Raises:
        FileNotFoundError: no ``tokenizer.json`` at ``path``.
        ValueError: the file is not a tokenizer the ``tokenizers`` library can read.
        MissingDependencyError: ``tokenizers`` is not installed.
    """

    def __init__(self, path: str | Path) -> None:
        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {str(path)!r}")
        tokenizers: Any = require(
            "tokenizers",
            feature="the dashboard's token viewer",
            package="tokenizers",
            install=_INSTALL,
        )
        try:
            self._tokenizer: Any = tokenizers.Tokenizer.from_file(str(file))
        except Exception as exc:  # the Rust library raises its own Exception type
            raise ValueError(f"{file}: not a tokenizer the tokenizers library reads ({exc})") from exc
        self.path = file
        """The ``tokenizer.json`` read."""
        self.vocab_size: int = int(self._tokenizer.get_vocab_size(with_added_tokens=True))
        self._cache: dict[int, str] = {}

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The text of each id, in order; an id outside the vocabulary is ``⟨id⟩``."""
        missing = sorted({i for i in ids if i not in self._cache and 0 <= i < self.vocab_size})
        if missing:
            texts = self._tokenizer.decode_batch([[i] for i in missing], skip_special_tokens=False)
            self._cache.update(zip(missing, (str(t) for t in texts), strict=True))
        return [self._cache.get(i, f"⟨{i}⟩") for i in ids]


def find_tokenizer(run_dir: Path) -> Path | None:
    """The ``tokenizer.json`` of a run's newest checkpoint (None when there is none).

    Looks at ``checkpoints/latest`` (the file naming the newest step) first, then at every
    ``checkpoints/step-*`` directory, newest first.
    """
    root = run_dir / "checkpoints"
    latest = root / "latest"
    candidates: list[Path] = []
    if latest.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):  # half-written: fall back below
            candidates.append(root / latest.read_text(encoding="utf-8").strip())
    if root.is_dir():
        candidates.extend(sorted(root.glob("step-*"), reverse=True))
    for directory in candidates:
        if (directory / "tokenizer.json").is_file():
            return directory / "tokenizer.json"
    return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def token_view(transition: Transition, text: TokenText | None) -> dict[str, Any]:
    """The token viewer's JSON for one call.

    Returns ``{"prompt": {"ids", "text"}, "response": {"ids", "text", "logprobs"}}``: ``text``
    lists one string per id (None without a tokenizer); ``logprobs`` has one entry per
    response token (None when the server returned none; a non-finite logprob is None).
    """
    prompt = list(transition.prompt_token_ids)
    response = list(transition.response_token_ids)
    logprobs = transition.response_logprobs
    return {
        "prompt": {"ids": prompt, "text": text.pieces(prompt) if text is not None else None},
        "response": {
            "ids": response,
            "text": text.pieces(response) if text is not None else None,
            "logprobs": None if logprobs is None else [_finite(float(v)) for v in logprobs],
        },
    }
