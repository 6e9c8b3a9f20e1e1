"""`.env.example` lists every setting of core/settings.py, once, and works when copied.

Each setting is a line ``NAME=value``, or ``# NAME=value`` for the optional ones left at their
default; OpenTelemetry's own ``OTEL_*`` variables may be listed besides.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import Settings
from starter.connection import SDK_ENV

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / ".env.example"
LINE = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def listed() -> list[tuple[str, str, bool]]:
    """(name, value, commented) of each setting line."""
    found = []
    for line in EXAMPLE.read_text().splitlines():
        match = LINE.match(line.strip())
        if match:
            found.append((match["name"], match["value"], bool(match["commented"])))
    return found


@pytest.fixture
def clean_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no setting in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return tmp_path


def test_every_setting_is_listed_once() -> None:
    names = [name for name, _, _ in listed()]
    settings = {name.upper() for name in Settings.model_fields}
    missing = sorted(settings - set(names))
    assert not missing, f"add {', '.join(missing)} to .env.example"
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert not repeated, f"listed more than once: {repeated}"
    # Besides: OpenTelemetry's own OTEL_* and the Temporal SDK's connection settings.
    unknown = sorted(n for n in set(names) - settings - set(SDK_ENV) if not n.startswith("OTEL_"))
    assert not unknown, f".env.example lists what no setting reads: {unknown}"


def test_the_copied_file_loads_with_the_defaults(clean_dir: Path) -> None:
    (clean_dir / ".env").write_text(EXAMPLE.read_text())
    copied = Settings()
    defaults = Settings(_env_file=None)
    for name, _, commented in listed():
        field = name.lower()
        if commented or field not in Settings.model_fields:
            continue
        value = getattr(copied, field)
        if hasattr(value, "get_secret_value"):
            # Credentials ship empty: the copy leaves them unset, never made up.
            assert value.get_secret_value() == "", name
        else:
            assert value == getattr(defaults, field), f"{name} differs from its default"


def test_every_commented_value_is_valid(clean_dir: Path) -> None:
    """Uncommenting any optional line gives a valid setting (its value is an example)."""
    lines = [f"{name}={value}" for name, value, _ in listed() if not name.startswith("OTEL_")]
    (clean_dir / ".env").write_text("\n".join(lines) + "\n")
    Settings()
