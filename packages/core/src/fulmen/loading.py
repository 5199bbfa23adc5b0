"""Load user objects named in configs: ``module:attribute`` specs and task datasets."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fulmen.errors import ConfigError
from fulmen.protocol import ProtocolError, Task

__all__ = ["LoadError", "load_object", "load_tasks", "to_task"]


class LoadError(ConfigError, ImportError):
    """A ``module:attribute`` spec or dataset could not be loaded; the message says why."""


def load_object(spec: str, *, base_dir: str | Path | None = None) -> Any:
    """Import ``module.path:attribute`` (``base_dir`` is put on ``sys.path`` first).

    Raises:
        LoadError: malformed spec, module not importable, or attribute missing.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"{spec!r} is not 'module.path:attribute' (e.g. 'my_agent:solve')")
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoadError(f"cannot import module {module_name!r} for {spec!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})") from None
    return obj


def to_task(item: Task | Mapping[str, Any], *, index: int, split: str) -> Task:
    """A :class:`Task` from a Task or a dict (``id`` optional: defaults to ``{split}-{index}``).

    A dict with a ``data`` key is a serialised Task; any other dict is the task's data.
    """
    if isinstance(item, Task):
        return item
    if not isinstance(item, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance] - user data
        raise LoadError(f"task #{index}: expected a Task or a dict, got {type(item).__name__}")
    if "data" in item:
        try:
            return Task.from_dict({"split": split, **item})
        except ProtocolError as exc:
            raise LoadError(f"task #{index}: {exc}") from exc
    task_id = str(item.get("id", f"{split}-{index}"))
    return Task(id=task_id, data=dict(item), split=split)


def load_tasks(spec: str, *, split: str, base_dir: str | Path | None = None) -> list[Task]:
    """Tasks from a ``.jsonl`` file (one task per line) or a ``module:function`` returning an
    iterable of tasks/dicts.

    Raises:
        LoadError: missing file, bad JSON line (with its number), bad spec, duplicate ids.
    """
    items: Any
    if spec.endswith(".jsonl"):
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.exists():
            raise LoadError(f"dataset file {str(path)!r} does not exist")
        parsed: list[Any] = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LoadError(f"{path}:{n}: invalid JSON: {exc}") from exc
        items = parsed
    else:
        factory = load_object(spec, base_dir=base_dir)
        items = factory() if callable(factory) else factory
        if not isinstance(items, Iterable):
            raise LoadError(f"{spec!r} gave {type(items).__name__}, expected an iterable of tasks")
    tasks = [to_task(item, index=i, split=split) for i, item in enumerate(items)]
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise LoadError(f"dataset {spec!r}: duplicate task id {task.id!r}")
        seen.add(task.id)
    if not tasks:
        raise LoadError(f"dataset {spec!r} is empty")
    return tasks
