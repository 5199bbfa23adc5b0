"""Loading agents and datasets named in configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fulmen.loading import LoadError, load_object, load_tasks
from fulmen.protocol import Task


def test_load_object_and_errors(tmp_path: Path) -> None:
    (tmp_path / "mymod_fulmen_test.py").write_text(
        "def tasks():\n    return [{'q': 1}, {'id': 'b', 'q': 2}]\n"
    )
    fn = load_object("mymod_fulmen_test:tasks", base_dir=tmp_path)
    assert callable(fn)
    with pytest.raises(LoadError, match="not 'module.path:attribute'"):
        load_object("nocolon")
    with pytest.raises(LoadError, match="cannot import module"):
        load_object("no_such_module_xyz:f")
    with pytest.raises(LoadError, match="has no attribute 'nope'"):
        load_object("mymod_fulmen_test:nope", base_dir=tmp_path)
    tasks = load_tasks("mymod_fulmen_test:tasks", split="train", base_dir=tmp_path)
    assert [t.id for t in tasks] == ["train-0", "b"]
    assert tasks[1].data["q"] == 2


def test_load_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    task = Task(id="x", data={"q": 1})
    path.write_text(task.to_json() + "\n\n" + json.dumps({"id": "y", "q": 2}) + "\n")
    tasks = load_tasks("d.jsonl", split="eval", base_dir=tmp_path)
    assert tasks[0].data == {"q": 1} and tasks[1].id == "y" and tasks[1].split == "eval"
    path.write_text('{"id": "a"}\n{broken\n')
    with pytest.raises(LoadError, match=r"d.jsonl:2: invalid JSON"):
        load_tasks(str(path), split="eval")
    path.write_text('{"id": "a"}\n{"id": "a"}\n')
    with pytest.raises(LoadError, match="duplicate task id 'a'"):
        load_tasks(str(path), split="eval")
