"""Where an adapter's secrets come from, read at the moment of each call.

A credential is a :class:`Credential`: anything with ``current() -> SecretStr``. Three kinds:

* :class:`FixedCredential`: a value known at start-up (a ``MEWS_*``/``PAYNOW_*`` setting, or
  the environment variable a merchant profile names: a process's environment never changes);
* :class:`FileCredential`: a file, the ``*_FILE`` convention of Docker and Kubernetes secrets.
  It is read at start-up (a missing or empty file fails there, naming the path) and looked at
  again on every call: when the file changed (inode, size or modification time, or simply
  after :data:`REREAD_AFTER_S`) it is read again, so a rotated secret is used from the next
  call on without restarting the worker. A file that is briefly missing or empty (Kubernetes
  swaps a secret volume's files through a symlink) keeps the last value read, with a warning
  naming the path.

No message here ever holds a secret: only setting names and paths.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from core.settings import MissingSettingError

log = logging.getLogger("refunds.credentials")

# A file is read again at least this often even when its stat looks unchanged: a rewrite of
# the same length within the file system's timestamp granularity would otherwise be missed.
REREAD_AFTER_S = 30.0


@runtime_checkable
class Credential(Protocol):
    """One secret an adapter sends; asked for on every call."""

    def current(self) -> SecretStr: ...


class FixedCredential:
    """A secret known at start-up that never changes while the process runs."""

    def __init__(self, value: SecretStr) -> None:
        self._value = value

    def current(self) -> SecretStr:
        return self._value

    def __repr__(self) -> str:
        return "FixedCredential(**********)"


def as_credential(value: SecretStr | Credential) -> Credential:
    return FixedCredential(value) if isinstance(value, SecretStr) else value


def env_credential(variable: str, *, what: str) -> FixedCredential:
    """The secret in environment variable ``variable``; a start-up error naming it if unset."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise MissingSettingError(
            f"{variable} is not set: it holds {what}. Set it in the worker's environment."
        )
    return FixedCredential(SecretStr(value))


class FileCredential:
    """A secret in a file, read again when the file changes (rotation without a restart)."""

    def __init__(
        self,
        path: Path,
        *,
        what: str,
        reread_after_s: float = REREAD_AFTER_S,
    ) -> None:
        self.path = path
        self._what = what
        self._reread_after_s = reread_after_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._read_at = 0.0
        self._value: SecretStr | None = None
        # At start-up a missing, unreadable or empty file is an error, not a warning.
        self.current()

    def __repr__(self) -> str:
        return f"FileCredential(path={str(self.path)!r})"

    def current(self) -> SecretStr:
        with self._lock:
            try:
                info = self.path.stat()
                stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
                stale = time.monotonic() - self._read_at >= self._reread_after_s
                if self._value is None or stamp != self._stamp or stale:
                    text = self.path.read_text(encoding="utf-8").strip()
                    if not text:
                        raise ValueError("the file is empty")
                    if self._value is not None and text != self._value.get_secret_value():
                        log.info("credential file %s changed: using the new value", self.path)
                    self._value = SecretStr(text)
                    self._stamp = stamp
                    self._read_at = time.monotonic()
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                if self._value is None:
                    raise MissingSettingError(
                        f"{self.path} cannot be read ({reason}): it holds {self._what}."
                    ) from None
                log.warning(
                    "credential file %s cannot be read (%s): keeping the last value read",
                    self.path,
                    reason,
                )
            return self._value
