"""Child processes of the dev stack: each in its own process group, its output appended to a
log file, stopped with SIGTERM then SIGKILL. On Linux a child also gets SIGTERM when the
thread that started it dies, so a killed parent leaves no orphans."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def _death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    # Resolved once here: the child, between fork and exec, only makes the call.
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return set_death_signal


_SET_DEATH_SIGNAL = _death_signal()


class ChildProcess:
    """One child in its own process group, its output appended to a log file."""

    def __init__(
        self, name: str, argv: list[str], *, env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            # Fixed argv from our own config, never a shell.
            self._popen = subprocess.Popen(  # noqa: S603
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_SET_DEATH_SIGNAL,
            )

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._popen is None:
            return
        # start_new_session made the child a group leader: its pid is the group id, and the
        # group outlives the leader while any member (a grandchild) is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM the group, wait up to ``grace_s``, then SIGKILL what is left."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self._popen.wait, grace_s)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the group and reap the child."""
        if self._popen is None:
            return
        self._signal_group(signal.SIGKILL)
        self._popen.wait(timeout=10)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
