"""Cross-package: every workspace package registers its plugins under fulmen's entry points."""

from __future__ import annotations

from fulmen.adapters import discover_adapters
from fulmen.backend import available_backends


def test_installed_adapters_are_registered() -> None:
    """The workspace's adapter packages register under the entry-point group."""
    names = {info.name: info for info in discover_adapters()}
    for name, dist in [
        ("langchain", "fulmen-langchain"),
        ("openai", "fulmen-openai"),
        ("openai-agents", "fulmen-openai"),
        ("autogen", "fulmen-autogen"),
        ("dspy", "fulmen-dspy"),
    ]:
        assert names[name].distribution == dist
        assert names[name].ok, names[name].error


def test_local_backend_is_registered() -> None:
    assert "local" in available_backends()
