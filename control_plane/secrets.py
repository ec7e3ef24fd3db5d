"""The per-agent secret store for agent credentials (dev: a JSON file)."""

from __future__ import annotations

import json
from pathlib import Path


class SecretStoreError(RuntimeError):
    pass


class FileSecretStore:
    """JSON `{"agent name": {"ENV_VAR": "value"}}`, read on each lookup so edits apply."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def env_for(self, agent: str) -> dict[str, str]:
        if self._path is None:
            return {}
        try:
            doc = json.loads(self._path.read_text())
        except (OSError, ValueError) as exc:
            # Never echo the file's content: it holds secrets.
            raise SecretStoreError(f"cannot read secrets file {self._path}") from exc
        if not isinstance(doc, dict):
            raise SecretStoreError(f"secrets file {self._path} is not a JSON object")
        env = doc.get(agent) or {}
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise SecretStoreError(f"secrets for agent {agent!r} must map names to strings")
        return dict(env)
