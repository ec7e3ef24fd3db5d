"""The per-agent secret store for agent credentials (dev: a JSON file)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr


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

    def env_for(self, agent: str) -> dict[str, str]:
        from_env = {k: v.get_secret_value() for k, v in self._fallback.get(agent, {}).items()}
        if self._path is None:
            return from_env
        try:
            doc = json.loads(self._path.read_text())
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
