"""The fake agent's session modes and config options (``--modes``: a model and an effort):
offered in the answers to session/new, session/load and session/resume, changed by
``session/set_mode`` and ``session/set_config_option`` (each change is also announced as a
``session/update``, as ACP agents do). A mode or value it does not offer is -32602. A new
agent process starts each session in the first mode again: nothing set is remembered
across processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vm_agent.fake_agent.wire import LinePeer, RpcError

MODES = ({"id": "ask", "name": "Ask"}, {"id": "code", "name": "Code"})
MODEL_ID = "model"
MODELS = ({"value": "fast", "name": "Fast"}, {"value": "smart", "name": "Smart"})
EFFORT_ID = "effort"
EFFORTS = ({"value": "low", "name": "Low"}, {"value": "high", "name": "High"})
# Each option: (id, name, category, values).
OPTIONS = (
    (MODEL_ID, "Model", "model", MODELS),
    (EFFORT_ID, "Effort", "thought_level", EFFORTS),
)


@dataclass
class Settings:
    mode: str = MODES[0]["id"]
    values: dict[str, str] = field(
        default_factory=lambda: {oid: values[0]["value"] for oid, _, _, values in OPTIONS}
    )

    def offered(self) -> dict[str, Any]:
        """What session/new (load, resume) answers besides the session id."""
        return {
            "modes": {"currentModeId": self.mode, "availableModes": list(MODES)},
            "configOptions": self.config_options(),
        }

    def config_options(self) -> list[dict[str, Any]]:
        return [
            {
                "id": oid,
                "name": name,
                "category": category,
                "type": "select",
                "currentValue": self.values[oid],
                "options": list(values),
            }
            for oid, name, category, values in OPTIONS
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
        config_id = params.get("configId")
        offered = {oid: values for oid, _, _, values in OPTIONS}
        if config_id not in offered:
            raise RpcError(-32602, f"Invalid params: no config option {config_id!r}")
        value = params.get("value")
        if value not in {m["value"] for m in offered[str(config_id)]}:
            raise RpcError(-32602, f"Invalid params: no value {value!r} for {config_id}")
        settings.values[str(config_id)] = str(value)
        options = settings.config_options()
        update = {"sessionUpdate": "config_option_update", "configOptions": options}
        self.peer.notify("session/update", {"sessionId": session_id, "update": update})
        return {"configOptions": options}
