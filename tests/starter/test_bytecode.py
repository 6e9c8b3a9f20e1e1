"""The worker writes the workflow modules' bytecode at start: the sandbox imports a workflow's
module again for every workflow it loads, and without a ``.pyc`` each import compiles it."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

from core.bytecode import ensure_bytecode


def package_in(tmp_path: Path) -> types.ModuleType:
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "flow.py").write_text("X = 1\n")
    package = types.ModuleType("pkg")
    package.__path__ = [str(root)]
    return package


def test_it_writes_the_missing_bytecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    package = package_in(tmp_path)
    source = tmp_path / "pkg" / "flow.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert not cached.exists()

    assert ensure_bytecode(package) == []

    assert cached.exists()


def test_a_stale_pyc_is_rewritten(tmp_path: Path) -> None:
    package = package_in(tmp_path)
    source = tmp_path / "pkg" / "flow.py"
    ensure_bytecode(package)
    cached = Path(importlib.util.cache_from_source(str(source)))
    first = cached.read_bytes()
    source.write_text("X = 22\n")
    later = source.stat().st_mtime + 10
    os.utime(source, (later, later))

    assert ensure_bytecode(package) == []

    assert cached.read_bytes() != first


def test_a_tree_it_cannot_write_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = package_in(tmp_path)
    # As on a read-only tree (the tests run as root, who may write anywhere): nothing written.
    monkeypatch.setattr("compileall.compile_dir", lambda *a, **k: False)
    missing = ensure_bytecode(package)
    assert {p.name for p in missing} == {"__init__.py", "flow.py"}
