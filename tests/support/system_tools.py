"""Tests that need a program from a Debian package (chromium, docker-compose).

On a developer's machine without it (not Debian, no root: `make test` could not install it)
such a test skips, naming the package and how to install it. In CI (``CI=true``) the package
must be there: the test fails instead, so nothing is skipped where it matters.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_program(program: str | Path, *, package: str, purpose: str) -> Path:
    """The program's path (an absolute path, or a name looked up on PATH); else skip, or
    fail under CI=true, saying which Debian package provides it."""
    path = Path(program)
    if path.is_absolute():
        found = path if path.is_file() and os.access(path, os.X_OK) else None
    else:
        located = shutil.which(str(program))
        found = Path(located) if located else None
    if found is not None:
        return found
    message = (
        f"{program} is missing: {purpose} needs Debian's {package}; install it with "
        f"`make install-system` (root or sudo) or scripts/install-system.sh {package}"
    )
    if in_ci():
        pytest.fail(f"{message} (CI=true: required, not skipped)", pytrace=False)
    pytest.skip(message)
