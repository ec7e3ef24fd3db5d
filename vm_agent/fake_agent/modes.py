"""The fake agent's session modes and config option (``--modes``): offered in the answers
to session/new, session/load and session/resume, changed by ``session/set_mode`` and
``session/set_config_option`` (each change is also announced as a ``session/update``, as
ACP agents do). A mode or value it does not offer is -32602. A new agent process starts
each session in the first mode again: what was set is not remembered across processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vm_agent.fake_agent.wire import LinePeer, RpcError

MODES = ({"id": "ask", "name": "Ask"}, {"id": "code", "name": "Code"})
MODEL_ID = "model"
MODELS = ({"value": "fast", "name": "Fast"}, {"value": "smart", "name": "Smart"})


@dataclass
class Settings:
    mode: str = MODES[0]["id"]
    model: str = MODELS[0]["value"]

    def offered(self) -> dict[str, Any]:
        """What session/new (load, resume) answers besides the session id."""
        return {
            "modes": {"currentModeId": self.mode, "availableModes": list(MODES)},
            "configOptions": self.config_options(),
        }

    def config_options(self) -> list[dict[str, Any]]:
        return [
            {
                "id": MODEL_ID,
                "name": "Model",
                "category": "model",
                "type": "select",
                "currentValue": self.model,
                "options": list(MODELS),
            }
        ]


class Modes:
    def __init__(self, peer: LinePeer) -> None:
        self.peer = peer
        self.sessions: dict[str, Settings] = {}

    def open(self, session_id: str) -> dict[str, Any]:
        settings = self.sessions[session_id] = Settings()
        return settings.offered()

    def _settings(self, params: dict[str, Any]) -> tuple[str, Settings]:
        session_id = params.get("sessionId")
        settings = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if settings is None or not isinstance(session_id, str):
            raise RpcError(-32002, f"Resource not found: session {session_id}")
        return session_id, settings

    async def set_mode(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id, settings = self._settings(params)
        mode = params.get("modeId")
        if mode not in {m["id"] for m in MODES}:
            raise RpcError(-32602, f"Invalid params: no mode {mode!r}")
        settings.mode = str(mode)
        update = {"sessionUpdate": "current_mode_update", "currentModeId": settings.mode}
        self.peer.notify("session/update", {"sessionId": session_id, "update": update})
        return {}

    async def set_config_option(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id, settings = self._settings(params)
        if params.get("configId") != MODEL_ID:
            raise RpcError(-32602, f"Invalid params: no config option {params.get('configId')!r}")
        value = params.get("value")
        if value not in {m["value"] for m in MODELS}:
            raise RpcError(-32602, f"Invalid params: no value {value!r} for {MODEL_ID}")
        settings.model = str(value)
        options = settings.config_options()
        update = {"sessionUpdate": "config_option_update", "configOptions": options}
        self.peer.notify("session/update", {"sessionId": session_id, "update": update})
        return {"configOptions": options}
