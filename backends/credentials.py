"""Secrets for hosted backends, read at call time from a file (which wins) or an environment variable.

The value is returned to the caller and nowhere else: not stored on the backend, not logged, not in an error.
Errors name where the secret should be, never what it is. (`backends.openai` predates this and reads its own.)
"""

from __future__ import annotations

import os
from pathlib import Path

from backends.errors import BackendMisconfigured


def read_secret(path: Path | None, env: str, *, what: str, file_setting: str) -> str:
    """The secret from `path` if set, else from `$env`; `BackendMisconfigured` saying how to provide it."""
    if path is not None:
        try:
            value = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BackendMisconfigured(f"cannot read the {what} file {path}: {exc.strerror}") from None
        if not value:
            raise BackendMisconfigured(f"the {what} file {path} is empty")
        return value
    value = os.environ.get(env, "").strip()
    if not value:
        raise BackendMisconfigured(
            f"no {what}: set the environment variable {env} or name a file ({file_setting}: in the policy's backend)"
        )
    return value


def source(path: Path | None, env: str) -> str:
    """Where a secret comes from, for messages: the file, or `$ENV`."""
    return str(path) if path is not None else f"${env}"
