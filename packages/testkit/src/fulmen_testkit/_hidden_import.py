"""Importing a package in a fresh interpreter where some modules cannot be imported: how the
kit sees what a user without the framework sees."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

__all__ = ["import_error_without"]

_SCRIPT = """
import sys
for name in {modules!r}:
    sys.modules[name] = None  # importing it now fails, as if it were not installed
try:
    import {package}
except ImportError as exc:
    print(exc)
else:
    sys.exit("{package} was imported without " + ", ".join({modules!r}))
"""


def import_error_without(package: str, modules: Sequence[str], *, timeout_s: float = 120) -> str:
    """The message of the ``ImportError`` that ``import package`` raises in a new interpreter
    (this one's executable) in which every module of ``modules`` fails to import.

    Raises:
        AssertionError: the import succeeded, or the interpreter failed otherwise (its
            stderr is in the message).
    """
    script = _SCRIPT.format(package=package, modules=list(modules))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stderr.strip()
    return done.stdout.strip()
