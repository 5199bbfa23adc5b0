"""The kit's hidden-import probe: what ``import package`` says when a module is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fulmen_testkit._hidden_import import import_error_without

GUARDED = """
from fulmen.adapters import FrameworkRequirement

FrameworkRequirement(package="guarded-pkg", modules=("colorsys",)).check()
import colorsys
"""


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three importable packages in ``tmp_path`` (on the child's ``PYTHONPATH``)."""
    for name, body in {
        "guarded_pkg": GUARDED,
        "bare_pkg": "import colorsys\n",
        "free_pkg": "VALUE = 1\n",
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_a_guarded_package_names_its_install_line(packages: Path) -> None:
    message = import_error_without("guarded_pkg", ["colorsys"])
    assert message == (
        "guarded_pkg needs colorsys, which is not installed: "
        "pip install guarded-pkg (or: uv add guarded-pkg)"
    )


def test_an_unguarded_package_gives_python_s_bare_error(packages: Path) -> None:
    message = import_error_without("bare_pkg", ["colorsys"])
    assert "colorsys" in message and "pip install" not in message


def test_a_package_that_does_not_need_the_module_is_reported(packages: Path) -> None:
    with pytest.raises(AssertionError, match="free_pkg was imported without colorsys"):
        import_error_without("free_pkg", ["colorsys"])
