"""`make test` on a machine that cannot install the Debian packages (not Debian, no root):
scripts/install-system.sh --if-possible says so and carries on, and the tests needing the
packages skip, naming them. With CI=true both fail instead: there nothing may be skipped.

The script runs for real with a PATH of fakes (no apt-get, or a dpkg-query that finds nothing
and an ``id`` that is not root), so it never installs anything here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.system_tools import require_program

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-system.sh"
BASH = shutil.which("bash") or "/bin/bash"


def fake_bin(tmp_path: Path, **programs: str) -> Path:
    """A directory of shell-script fakes (name -> body) plus a real grep."""
    directory = tmp_path / "bin"
    directory.mkdir()
    grep = shutil.which("grep")
    assert grep is not None
    (directory / "grep").symlink_to(grep)
    for name, body in programs.items():
        path = directory / name.replace("_", "-")
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return directory


def install(path: Path, *args: str, ci: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [BASH, str(SCRIPT), *args, "chromium"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


NOT_INSTALLED = {"dpkg_query": "exit 1", "apt_get": "echo apt-get must not run >&2; exit 9"}


def test_not_debian_is_skipped_under_if_possible(tmp_path: Path) -> None:
    done = install(fake_bin(tmp_path), "--if-possible")
    assert done.returncode == 0, done.stderr
    assert "not Debian-based" in done.stderr
    assert "the tests that need chromium will skip" in done.stderr


def test_not_debian_fails_under_ci(tmp_path: Path) -> None:
    done = install(fake_bin(tmp_path), "--if-possible", ci="true")
    assert done.returncode == 2
    assert "not Debian-based" in done.stderr
    assert "skipping" not in done.stderr


def test_not_debian_fails_without_if_possible(tmp_path: Path) -> None:
    assert install(fake_bin(tmp_path)).returncode == 2


def test_not_root_without_sudo_is_skipped_unless_ci(tmp_path: Path) -> None:
    path = fake_bin(tmp_path, id="echo 1000", **NOT_INSTALLED)
    skipped = install(path, "--if-possible")
    assert skipped.returncode == 0, skipped.stderr
    assert "run as root (or install sudo) to install chromium" in skipped.stderr
    assert "must not run" not in skipped.stderr
    assert install(path, "--if-possible", ci="true").returncode == 2


def test_a_sudo_asking_for_a_password_is_not_waited_for(tmp_path: Path) -> None:
    path = fake_bin(tmp_path, id="echo 1000", sudo="exit 1", **NOT_INSTALLED)
    done = install(path, "--if-possible")
    assert done.returncode == 0, done.stderr
    assert "sudo needs a password" in done.stderr


def test_a_failed_install_is_skipped_unless_ci(tmp_path: Path) -> None:
    path = fake_bin(tmp_path, id="echo 0", dpkg_query="exit 1", apt_get="exit 100")
    assert install(path, "--if-possible").returncode == 0
    assert install(path, "--if-possible", ci="true").returncode == 2


# ------------------------------------------------------------------ the tests' side


def test_a_missing_program_skips_naming_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian's chromium-driver"):
        require_program(Path("/nonexistent/chromedriver"), package="chromium-driver", purpose="x")


def test_a_missing_program_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: required"):
        require_program("no-such-program-here", package="docker-compose", purpose="x")


def test_a_present_program_is_found() -> None:
    assert require_program(BASH, package="bash", purpose="x") == Path(BASH)


def run_compose_test(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """One docker-compose test in its own pytest, with no docker-compose on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)  # an empty directory: no docker-compose
    env["REFUNDS_NORMAL_EXIT"] = "1"
    if ci is not None:
        env["CI"] = ci
    test = "tests/deploy/test_compose.py::test_config_accepts_the_file"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_tests_skip_without_docker_compose(tmp_path: Path) -> None:
    done = run_compose_test(tmp_path, ci=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "docker-compose is missing" in done.stdout
    assert "make install-system" in done.stdout


def test_compose_tests_fail_without_docker_compose_under_ci(tmp_path: Path) -> None:
    done = run_compose_test(tmp_path, ci="true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CI=true: required" in done.stdout
