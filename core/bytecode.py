"""Compiled bytecode for the workflow modules, written when the worker starts.

Temporal's workflow sandbox imports a workflow's own module afresh for every workflow it
loads into its cache. Without a ``.pyc`` beside the source (``PYTHONDONTWRITEBYTECODE`` set,
an editable install, a source tree just edited), each of those imports compiles the module
from source: measured, about a third of the refund worker's CPU in the throughput
benchmark (docs/performance.md, "Worker CPU"). Python only *writes* bytecode on import when
allowed; reading an up-to-date ``.pyc`` is always allowed, so writing them once here is
enough. An installed wheel has them already; a read-only tree without them is left as it is.
"""

from __future__ import annotations

import compileall
import importlib.util
import logging
import struct
from pathlib import Path
from types import ModuleType

log = logging.getLogger("refunds.worker")


def ensure_bytecode(*packages: ModuleType) -> list[Path]:
    """Write missing or stale ``.pyc`` files of ``packages``' modules; returns the source
    files that still have none (a read-only tree)."""
    missing: list[Path] = []
    for package in packages:
        for directory in package.__path__:
            root = Path(directory)
            # Best effort: a file it cannot write is reported below, never raised.
            compileall.compile_dir(root, maxlevels=0, quiet=2)
            for source in sorted(root.glob("*.py")):
                if not _fresh(source):
                    missing.append(source)
    if missing:
        log.warning(
            "no bytecode for %d workflow module(s) (%s): the sandbox compiles them for every "
            "workflow it loads",
            len(missing),
            ", ".join(p.name for p in missing),
        )
    return missing


def _fresh(source: Path) -> bool:
    """A ``.pyc`` of ``source`` exists that an import would use (its header names the
    source's modification time and size, as ``compileall`` and the import system write it)."""
    cached = Path(importlib.util.cache_from_source(str(source)))
    try:
        header = cached.read_bytes()[:16]
    except OSError:
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags, mtime, size = (int(v) for v in struct.unpack("<III", header[4:16]))
    if flags:
        # Hash-based (SOURCE_DATE_EPOCH builds): the import checks the hash itself.
        return True
    stat = source.stat()
    return (mtime, size) == (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)
