"""What ``fulmen watch`` and ``fulmen dashboard`` share: which run or store they show, and the
alarm thresholds they judge it by (``--threshold NAME=VALUE``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fulmen.observe.alarms import AlarmThresholds

__all__ = ["add_source_arguments", "source_paths", "thresholds_from"]


def add_source_arguments(p: argparse.ArgumentParser, *, store_help: str) -> None:
    """Add the ``run_dir`` positional, ``--store`` (``store_help``) and ``--threshold``."""
    p.add_argument("run_dir", nargs="?", help="run directory ([run] output_dir)")
    p.add_argument("--store", help=store_help)
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override an alarm threshold (repeatable; see docs/observability.md)",
    )


def thresholds_from(texts: Iterable[str], base: AlarmThresholds | None = None) -> AlarmThresholds:
    """``base`` (default thresholds when None) with each ``NAME=VALUE`` of ``texts`` applied.

    Raises:
        UserFacingError: a text that names no threshold or has a bad value.
    """
    from fulmen.cli import UserFacingError
    from fulmen.observe.alarms import AlarmThresholds, parse_threshold

    thresholds = base if base is not None else AlarmThresholds()
    try:
        for text in texts:
            thresholds = parse_threshold(text, thresholds)
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    return thresholds


def source_paths(run_dir: str | None, store: str | None, *, command: str) -> tuple[Path | None, Path]:
    """The run directory (None: a store alone) and the store file that ``fulmen COMMAND`` shows.

    The store is ``--store`` when given, else ``RUN_DIR/episodes.db``; it may not exist yet when
    a run directory is given (a run that has not finished an episode).

    Raises:
        UserFacingError: neither given, a run directory that does not exist, or a ``--store``
            without a run directory that does not exist.
    """
    from fulmen.cli import UserFacingError

    if run_dir is None and store is None:
        raise UserFacingError(f"pass a run directory (fulmen {command} runs/NAME) or --store PATH")
    directory = Path(run_dir) if run_dir else None
    if directory is not None and not directory.is_dir():
        raise UserFacingError(f"no run directory {str(directory)!r} ([run] output_dir of the config)")
    store_path = Path(store) if store else (directory or Path()) / "episodes.db"
    if directory is None and not store_path.exists():
        raise UserFacingError(f"no store at {str(store_path)!r}; pass the gateway's --store PATH")
    return directory, store_path
