"""``fulmen show --drift --tokenizer DIR``: the tokenizer directory as a drift view."""

from __future__ import annotations

from fulmen.drift.hf_view import HFTokenView

__all__ = ["load_view"]


def load_view(path: str) -> HFTokenView:
    """The view of the tokenizer in ``path``.

    Raises:
        fulmen.cli.UserFacingError: ``transformers`` is not installed or ``path`` holds no
            tokenizer.
    """
    from fulmen.cli import UserFacingError

    try:
        # optional, lazy, guarded: only `--tokenizer` loads it (never a core dependency)
        from transformers import AutoTokenizer  # noqa: TID251
    except ImportError:
        raise UserFacingError("--tokenizer needs transformers installed (pip install transformers)") from None
    try:
        return HFTokenView(AutoTokenizer.from_pretrained(path))
    except (OSError, ValueError) as exc:
        raise UserFacingError(f"--tokenizer {path}: no tokenizer there ({exc})") from None
