"""One error tree: every fulmen exception derives from ``FulmenError`` and keeps its old base."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import fulmen.errors
import pytest
from fulmen.errors import (
    AdapterError,
    BackendError,
    ConfigError,
    FulmenError,
    MissingDependencyError,
)

SOURCES = sorted((Path(__file__).parents[2] / "packages").glob("*/src/**/*.py"))
BUILTIN_EXCEPTIONS = {
    name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
}


def _classes() -> dict[str, tuple[str, list[str]]]:
    """Every class defined at module level in the packages: name -> (file, base names)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for path in SOURCES:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                out[node.name] = (str(path), bases)
    return out


def _public_exceptions() -> dict[str, tuple[str, list[str]]]:
    classes = _classes()

    def is_exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in BUILTIN_EXCEPTIONS:
            return True
        if name not in classes or name in seen:
            return False
        return any(is_exception(b, seen | {name}) for b in classes[name][1])

    return {n: c for n, c in classes.items() if not n.startswith("_") and is_exception(n)}


def test_every_public_exception_class_in_every_package_is_under_fulmen_error() -> None:
    """Read from the source (no package imported), so torch-heavy modules are covered too."""
    found = _public_exceptions()
    roots = {"FulmenError", "FulmenWarning"}

    def rooted(name: str) -> bool:
        if name in roots:
            return True
        return name in found and any(rooted(b) for b in found[name][1])

    assert len(found) >= 20, sorted(found)  # the walk sees the tree, not an empty set
    stray = {name: where for name, (where, _) in found.items() if not rooted(name)}
    assert not stray, f"exception classes outside fulmen.errors' tree: {stray}"


def test_the_docstring_draws_every_class() -> None:
    doc = fulmen.errors.__doc__ or ""
    missing = [name for name in _public_exceptions() if name not in doc]
    assert not missing, f"add these to the tree in fulmen/errors.py's docstring: {missing}"


def test_one_config_error_everywhere() -> None:
    import fulmen.config
    import fulmen.credit
    import fulmen.loading

    assert fulmen.config.ConfigError is fulmen.credit.ConfigError is ConfigError
    assert issubclass(fulmen.loading.LoadError, ConfigError)
    assert issubclass(fulmen.loading.LoadError, ImportError)  # old `except ImportError` still works


@pytest.mark.parametrize(
    ("name", "old_base"),
    [
        ("fulmen.config:ConfigError", ValueError),
        ("fulmen.protocol:ProtocolError", ValueError),
        ("fulmen.store:StoreError", RuntimeError),
        ("fulmen.store:EpisodeNotFound", KeyError),
        ("fulmen.gateway.errors:GatewayError", RuntimeError),
        ("fulmen.context:NoEpisodeError", RuntimeError),
        ("fulmen.context:RewardError", RuntimeError),
        ("fulmen.adapters:AdapterError", RuntimeError),
        ("fulmen.backend:BackendNotFound", LookupError),
        ("fulmen.observe:MissingDependencyError", ImportError),
        ("fulmen.cli:UserFacingError", Exception),
    ],
)
def test_core_exceptions_keep_their_old_base_under_the_root(name: str, old_base: type) -> None:
    import importlib

    module, _, attr = name.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    assert issubclass(cls, FulmenError) and issubclass(cls, old_base)


def test_re_exported_names_are_the_tree_s_classes() -> None:
    import fulmen.adapters
    import fulmen.backend
    import fulmen.observe

    assert fulmen.adapters.AdapterError is AdapterError
    assert fulmen.observe.MissingDependencyError is MissingDependencyError
    assert issubclass(fulmen.backend.BackendNotFound, BackendError)


def test_message_and_fix_make_one_line() -> None:
    assert str(FulmenError("no GPU", fix="use --backend local")) == "no GPU (use --backend local)"
    assert str(FulmenError("no GPU; use --backend local", fix="use --backend local")) == (
        "no GPU; use --backend local"
    )
    err = MissingDependencyError(feature="export-otel", package="opentelemetry-sdk", install="pip x")
    assert str(err) == "export-otel needs opentelemetry-sdk, which is not installed: pip x"
    assert err.install == "pip x" and err.package == "opentelemetry-sdk"
