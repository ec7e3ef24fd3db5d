"""The per-agent secret store for agent credentials (dev: a JSON file).

The file must be its owner's alone (mode 0600 or stricter), as the daemon's callback token
file must: one that group or others may read, write or run is refused, checked on the open
descriptor at each read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from vm_agent.common.private_files import FileUnusable, open_private

MAX_SECRETS_FILE_BYTES = 1024 * 1024


class SecretStoreError(RuntimeError):
    pass


class FileSecretStore:
    """JSON `{"agent name": {"ENV_VAR": "value"}}`, read on each lookup so edits apply.

    `fallback` (from the environment) serves agents the file does not name.
    """

    def __init__(
        self, path: Path | None, fallback: Mapping[str, Mapping[str, SecretStr]] | None = None
    ) -> None:
        self._path = path
        self._fallback = fallback or {}

    def check(self) -> None:
        """At start: a secrets file that exists must be its owner's alone (one that does not
        exist yet may come later; each lookup reads it)."""
        if self._path is not None and os.path.lexists(self._path):
            os.close(self._open(self._path))

    @staticmethod
    def _open(path: Path) -> int:
        try:
            return open_private(path, "secrets file")
        except FileUnusable as exc:
            raise SecretStoreError(str(exc)) from None

    @classmethod
    def _read(cls, path: Path) -> bytes:
        fd = cls._open(path)
        try:
            data = os.read(fd, MAX_SECRETS_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_SECRETS_FILE_BYTES:
            raise SecretStoreError(f"secrets file {path} is larger than {MAX_SECRETS_FILE_BYTES}")
        return data

    def env_for(self, agent: str) -> dict[str, str]:
        from_env = {k: v.get_secret_value() for k, v in self._fallback.get(agent, {}).items()}
        if self._path is None:
            return from_env
        try:
            doc = json.loads(self._read(self._path))
        except (OSError, ValueError) as exc:
            # Never echo the file's content: it holds secrets.
            raise SecretStoreError(f"cannot read secrets file {self._path}") from exc
        if not isinstance(doc, dict):
            raise SecretStoreError(f"secrets file {self._path} is not a JSON object")
        if agent not in doc:
            return from_env
        env = doc[agent] or {}
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise SecretStoreError(f"secrets for agent {agent!r} must map names to strings")
        return dict(env)
