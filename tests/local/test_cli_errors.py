"""``fulmen train`` reports a problem the backend finds as one clear line, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from fulmen.cli import main


@pytest.mark.slow
def test_a_used_run_directory_is_refused_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    config = tmp_path / "train.toml"
    config.write_text(
        f'[run]\noutput_dir = "{out}"\n'
        '[agent]\nentry = "examples.calculator.agent:solve"\n'
        '[data]\ntrain = "examples.calculator.agent:train_tasks"\n'
        f'[model]\npath = "{tmp_path / "model"}"\n'
    )
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert "Traceback" not in err
    assert (out / "metrics.jsonl").read_text() == '{"kind": "train", "step": 1}\n'  # untouched
