"""ACP method handling of the fake agent: initialize, sessions, prompts, cancel."""

from __future__ import annotations

import os
from typing import Any

import anyio

from vm_agent import __version__
from vm_agent.fake_agent.config import Config
from vm_agent.fake_agent.modes import Modes
from vm_agent.fake_agent.record import record
from vm_agent.fake_agent.scenarios import behaviours
from vm_agent.fake_agent.transcript import USER, TranscriptStore, first_time
from vm_agent.fake_agent.turn import Session, Turn, prompt_text, text_chunk
from vm_agent.fake_agent.wire import LinePeer, RpcError, log

PROTOCOL_VERSION = 1
AUTH_METHOD_ID = "fake-login"


def _params(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise RpcError(-32602, "Invalid params: expected an object")
    return params


def _string(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise RpcError(-32602, f"Invalid params: {key} must be a non-empty string")
    return value


def _cwd(params: dict[str, Any]) -> str:
    cwd = _string(params, "cwd")
    if not os.path.isabs(cwd):
        raise RpcError(-32602, "Invalid params: cwd must be an absolute path")
    servers = params.get("mcpServers", [])
    if not isinstance(servers, list):
        raise RpcError(-32602, "Invalid params: mcpServers must be a list")
    return cwd


class FakeAgent:
    def __init__(self, config: Config, peer: LinePeer) -> None:
        self.config = config
        self.peer = peer
        self.store = TranscriptStore(config.state_dir)
        self.sessions: dict[str, Session] = {}
        self.authenticated = False
        self._behaviour = behaviours()[config.scenario]
        self._methods = {
            "initialize": self._initialize,
            "authenticate": self._authenticate,
            "session/new": self._new_session,
            "session/load": self._load_session,
            "session/prompt": self._prompt,
        }
        if config.resume:
            self._methods["session/resume"] = self._resume_session
        if config.close:
            self._methods["session/close"] = self._close_session
        self.cost = 0.0  # the cumulative cost --usage reports (per process, like Claude Code)
        self.modes = Modes(peer) if config.modes else None
        if self.modes is not None:
            self._methods["session/set_mode"] = self.modes.set_mode
            self._methods["session/set_config_option"] = self.modes.set_config_option

    @property
    def load_session(self) -> bool:
        return self.config.scenario != "no-load" and not self.config.no_load

    async def on_request(self, method: str, params: Any) -> Any:
        handler = self._methods.get(method)
        if handler is None or (method == "session/load" and not self.load_session):
            raise RpcError(-32601, f"Method not found: {method}")
        if method == self.config.hang_on:
            log(f"fake-agent: never answering {method}")
            await anyio.sleep_forever()
        if method == self.config.auth_on:
            raise RpcError(-32000, "Authentication required: set FAKE_AGENT_KEY")
        record(self.config.record, method, params)
        return await handler(_params(params))

    def on_request_arrival(self, method: str, params: Any) -> None:
        """In arrival order: a prompt gets a fresh cancel event before any later cancel."""
        if method == "session/prompt" and isinstance(params, dict):
            session = self.sessions.get(str(params.get("sessionId")))
            if session is not None:
                session.cancel = anyio.Event()  # a cancel only concerns the prompt it follows

    def on_notification(self, method: str, params: Any) -> None:
        if method != "session/cancel" or not isinstance(params, dict):
            return
        if self.config.scenario in ("hang", "ignore-cancel"):
            log("fake-agent: ignoring session/cancel")
            return
        session = self.sessions.get(str(params.get("sessionId")))
        if session is not None:
            session.cancel.set()

    async def _initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        auth_methods: list[dict[str, Any]] = []
        if self.config.auth_on is not None:
            auth_methods.append(
                {
                    "id": "fake-key",
                    "name": "Fake key",
                    "description": "Set FAKE_AGENT_KEY",
                    "_meta": {"internal": "not for people"},
                }
            )
        if self.config.scenario == "auth-required":
            auth_methods.append(
                {
                    "id": AUTH_METHOD_ID,
                    "name": "Fake login",
                    "description": "Any client may call authenticate with this method",
                }
            )
        return {
            "protocolVersion": PROTOCOL_VERSION,
            "agentCapabilities": {
                "loadSession": self.load_session,
                "promptCapabilities": {"image": False, "audio": False, "embeddedContext": True},
                "sessionCapabilities": {
                    **({"resume": {}} if self.config.resume else {}),
                    **({"close": {}} if self.config.close else {}),
                },
            },
            "agentInfo": {"name": "fake-agent", "title": "Fake agent", "version": __version__},
            "authMethods": auth_methods,
        }

    async def _authenticate(self, params: dict[str, Any]) -> dict[str, Any]:
        method_id = _string(params, "methodId")
        if self.config.scenario != "auth-required" or method_id != AUTH_METHOD_ID:
            raise RpcError(-32602, f"Invalid params: unknown auth method {method_id!r}")
        self.authenticated = True
        return {}

    async def _new_session(self, params: dict[str, Any]) -> dict[str, Any]:
        cwd = _cwd(params)
        session_id = "fake-" + os.urandom(16).hex()
        self.sessions[session_id] = Session(session_id, cwd)
        self.store.open(session_id)
        return {"sessionId": session_id, **self._offered(session_id)}

    def _offered(self, session_id: str) -> dict[str, Any]:
        return {} if self.modes is None else self.modes.open(session_id)

    async def _load_session(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id = _string(params, "sessionId")
        cwd = _cwd(params)
        if self.config.scenario == "crash-on-load" and (
            not self.config.once or first_time(self.config.state_dir or ".", "crash-load")
        ):
            log("fake-agent: crashing on session/load with exit code 3")
            os._exit(3)
        records = self.store.load(session_id)
        if records is None:
            raise RpcError(-32002, f"Resource not found: session {session_id}")
        for kind, text in records:
            update_kind = "user_message_chunk" if kind == USER else "agent_message_chunk"
            self.peer.notify(
                "session/update",
                {"sessionId": session_id, "update": text_chunk(update_kind, text)},
            )
        self.sessions[session_id] = Session(session_id, cwd)
        self.store.open(session_id)
        return self._offered(session_id)

    async def _resume_session(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id = _string(params, "sessionId")
        cwd = _cwd(params)
        if self.store.load(session_id) is None:
            raise RpcError(-32002, f"Resource not found: session {session_id}")
        self.sessions[session_id] = Session(session_id, cwd)
        self.store.open(session_id)
        return self._offered(session_id)

    async def _prompt(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id = _string(params, "sessionId")
        blocks = params.get("prompt")
        if not isinstance(blocks, list):
            raise RpcError(-32602, "Invalid params: prompt must be a list of content blocks")
        session = self.sessions.get(session_id)
        if session is None:
            raise RpcError(-32002, f"Resource not found: session {session_id}")
        if self.config.stderr_text is not None:
            log(self.config.stderr_text)
        if self.config.scenario == "auth-required" and not self.authenticated:
            raise RpcError(-32000, "Authentication required")
        text = prompt_text(blocks)
        self.store.append(session_id, USER, text)
        turn = Turn(self.peer, self.store, session, self.config)
        answer: dict[str, Any] = {"stopReason": await self._behaviour(turn, text)}
        if self.config.usage is not None:
            answer["usage"] = self._report_usage(turn, text)
        return answer

    def _report_usage(self, turn: Turn, text: str) -> dict[str, Any]:
        """As claude-agent-acp does: a ``usage_update`` with the session's cumulative cost
        (and the context window), then the turn's tokens in the answer. Tokens: the prompt's
        length in, twice that out, 5 read from cache; each turn costs 0.25 USD."""
        if self.config.usage == "bad":
            turn.update(
                {
                    "sessionUpdate": "usage_update",
                    "used": 1,
                    "size": 2,
                    "cost": {"amount": -3, "currency": "usd"},
                }
            )
            return {"inputTokens": -5, "outputTokens": "many", "totalTokens": 1e30}
        self.cost += 0.25
        cost = {"amount": self.cost, "currency": "USD"}
        turn.update(
            {"sessionUpdate": "usage_update", "used": 3 * len(text), "size": 1000, "cost": cost}
        )
        tokens = {"inputTokens": len(text), "outputTokens": 2 * len(text), "cachedReadTokens": 5}
        return {**tokens, "totalTokens": sum(tokens.values())}

    async def _close_session(self, params: dict[str, Any]) -> dict[str, Any]:
        session_id = _string(params, "sessionId")
        if self.sessions.pop(session_id, None) is None:
            raise RpcError(-32002, f"Resource not found: session {session_id}")
        log(f"fake-agent: session/close {session_id}")
        if self.config.state_dir:
            safe = "".join(c for c in session_id if c.isalnum() or c == "-")
            await anyio.Path(self.config.state_dir, f"closed-{safe}").write_text(session_id)
        return {}
