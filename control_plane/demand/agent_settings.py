"""Agent settings: what a layer says about how the task's agent runs (issue 25).

The second kind of layered content beside the resource requirements (reservations.py):
the model, the mode, the reasoning effort, ACP config options, MCP servers (ACP's
`McpServer` objects, exactly as the node passes them to `session/new`) and extra
environment that is not secret. Every field optional; JSON is camelCase. Pure: shapes and
the checks a submission makes so that a task never fails on its node for what could be
known before (the node refuses the same: docs/viewer-api.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from control_plane.demand.reservations import LayerKind
from vm_agent.process.agent_env import DEFAULT_ALLOWED

# The node's bounds (vm_agent/session/start_settings.py), so that what passes here passes
# there: a value at most 4 KiB (counted in UTF-8 bytes here, stricter than characters),
# a name, id, model, mode or effort at most 256 characters.
MAX_STRING_BYTES = 4096
MAX_SHORT = 256
MAX_MCP_SERVERS = 32  # in a layer, and resolved
MAX_ENV = 64  # entries of `env`, in a layer and resolved
MAX_CONFIG_OPTIONS = 32
MAX_ARGS = 64  # an MCP server's args
MAX_PAIRS = 64  # an MCP server's env or headers

# The daemon's own variables (what it passes to every agent, and what it or its
# containment sets), and prefixes it keeps to itself or that change how programs load
# (LD_PRELOAD): never an agent setting.
DAEMON_ENV = frozenset({*DEFAULT_ALLOWED, "LOGNAME", "PWD", "SHLVL"})
RESERVED_PREFIXES = ("LD_", "VM_AGENT_", "CONTROL_PLANE_", "FAKE_AGENT_")
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
# Names that say "secret": secrets reach an agent as its credentials, never as settings.
SECRET_NAME = re.compile(
    r"(?:^|_)(?:KEY|APIKEY|TOKEN|SECRET|SECRETS|PASSWORD|PASSWD|PASS|CREDENTIAL|CREDENTIALS|PAT)$",
    re.IGNORECASE,
)
_HOW_SECRETS_COME = (
    "secrets reach an agent as its credentials (the control plane's AGENT_SECRETS), "
    "not as agentSettings env"
)

Transport = Literal["stdio", "http", "sse"]


def bounded(value: str) -> str:
    if len(value.encode()) > MAX_STRING_BYTES:
        raise ValueError(f"longer than {MAX_STRING_BYTES} bytes")
    return value


Text = Annotated[str, AfterValidator(bounded)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_SHORT)]

_strict = ConfigDict(extra="forbid", strict=True, frozen=True)


SecretRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class NameValue(BaseModel):
    """ACP's `EnvVariable` and `HttpHeader`; or, instead of the value, `secret`: the name
    of one of the task owner's secrets (identity/user_secrets.py), which the node fetches
    for the session at spawn. Exactly one of the two."""

    model_config = _strict
    name: Name
    value: Text | None = None
    secret: SecretRef | None = None

    @model_validator(mode="after")
    def _one_of(self) -> NameValue:
        if (self.value is None) == (self.secret is None):
            raise ValueError("give exactly one of value and secret")
        return self


class StdioServer(BaseModel):
    """ACP's stdio `McpServer`: it has no `type` (`"stdio"` is taken, and left out)."""

    model_config = _strict
    type: Literal["stdio"] | None = Field(default=None, exclude=True)
    name: Name
    command: Annotated[str, Field(min_length=1), AfterValidator(bounded)]
    args: list[Text] = Field(default_factory=list, max_length=MAX_ARGS)
    env: list[NameValue] = Field(default_factory=list, max_length=MAX_PAIRS)

    @property
    def transport(self) -> Transport:
        return "stdio"

    def shown(self) -> dict[str, Any]:
        """For answers and logs: env variable names, never their values."""
        return {
            "name": self.name,
            "command": self.command,
            "args": list(self.args),
            "envNames": [e.name for e in self.env],
            **_secret_names(self.env),
        }


class RemoteServer(BaseModel):
    """ACP's http and sse `McpServer`."""

    model_config = _strict
    type: Literal["http", "sse"]
    name: Name
    url: Annotated[str, Field(pattern=r"^https?://\S+$"), AfterValidator(bounded)]
    headers: list[NameValue] = Field(default_factory=list, max_length=MAX_PAIRS)

    @property
    def transport(self) -> Transport:
        return self.type

    def shown(self) -> dict[str, Any]:
        """For answers and logs: header names, never their values."""
        return {
            "type": self.type,
            "name": self.name,
            "url": self.url,
            "headerNames": [h.name for h in self.headers],
            **_secret_names(self.headers),
        }


def _secret_names(pairs: list[NameValue]) -> dict[str, Any]:
    """Which entries are secrets, and whose names (not a value): `{"secrets": {entry: name}}`."""
    refs = {p.name: p.secret for p in pairs if p.secret is not None}
    return {"secrets": refs} if refs else {}


def _server_kind(raw: Any) -> str:
    found = raw.get("type", "stdio") if isinstance(raw, dict) else getattr(raw, "transport", "")
    return "stdio-server" if found == "stdio" else "remote-server"


McpServer = Annotated[
    Annotated[StdioServer, Tag("stdio-server")] | Annotated[RemoteServer, Tag("remote-server")],
    Discriminator(_server_kind),
]


class AgentSettings(BaseModel):
    """What one layer says; every field optional (absent or null: "not defined here")."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )

    model: Name | None = None
    mode: Name | None = None
    effort: Name | None = None
    config_options: Annotated[dict[Name, Name], Field(max_length=MAX_CONFIG_OPTIONS)] | None = None
    mcp_servers: Annotated[list[McpServer], Field(max_length=MAX_MCP_SERVERS)] | None = None
    env: Annotated[dict[str, Text], Field(max_length=MAX_ENV)] | None = None

    def empty(self) -> bool:
        return not self.model_dump(exclude_none=True)

    def to_json_dict(self) -> dict[str, Any]:
        """As stored and as the node takes it (every value, for the node only; a secret
        as its reference)."""
        return self.model_dump(by_alias=True, exclude_none=True)

    def secret_refs(self) -> list[tuple[str, str]]:
        """Each referenced secret: (the field that names it, the secret's name)."""
        return server_secret_refs(self.mcp_servers or [])

    def shown(self) -> dict[str, Any]:
        """As answers show a layer: MCP servers' env and header names only."""
        out = self.model_dump(by_alias=True, exclude_none=True, exclude={"mcp_servers"})
        if self.mcp_servers is not None:
            out["mcpServers"] = [s.shown() for s in self.mcp_servers]
        return out


def server_secret_refs(servers: Iterable[StdioServer | RemoteServer]) -> list[tuple[str, str]]:
    """(field, secret name) for each `secret` entry of the servers' env and headers."""
    out: list[tuple[str, str]] = []
    for server in servers:
        pairs, what = (
            (server.env, "env") if isinstance(server, StdioServer) else (server.headers, "headers")
        )
        for pair in pairs:
            if pair.secret is not None:
                out.append((f"mcpServers.{server.name}.{what}.{pair.name}", pair.secret))
    return out


SETTINGS_SCALARS: tuple[str, ...] = ("model", "mode", "effort")


class SettingsError(ValueError):
    """A layer's agent settings are refused; names the layer and the field."""

    def __init__(self, layer: LayerKind, field_name: str, problem: str) -> None:
        super().__init__(f"{layer.value} agentSettings: field {field_name!r}: {problem}")
        self.layer = layer
        self.field = field_name
        self.problem = problem


_TAGS = {"stdio-server", "remote-server"}


def parse_settings(layer: LayerKind, raw: Mapping[str, Any] | None) -> AgentSettings:
    """Validate one layer's raw JSON object (its shape); errors name the layer and field."""
    if raw is None:
        return AgentSettings()
    if not isinstance(raw, Mapping):
        raise SettingsError(layer, "*", "agentSettings must be a JSON object")
    try:
        settings = AgentSettings.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"] if p not in _TAGS) or "*"
        problem = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        problem = problem.removeprefix("Value error, ")
        if name.startswith("mcpServers.") and name.endswith(".type"):
            problem = "an MCP server's type is 'stdio' (or none), 'http' or 'sse'"
        raise SettingsError(layer, name, problem) from exc
    seen: set[str] = set()
    for i, server in enumerate(settings.mcp_servers or []):
        if server.name in seen:
            raise SettingsError(layer, f"mcpServers.{i}.name", f"{server.name!r} given twice")
        seen.add(server.name)
    return settings


def env_refusal(name: str, credentials: Iterable[str] = ()) -> str | None:
    """Why `name` may not be an agent setting's environment variable; None if it may.
    `credentials`: the agent's credential names (the control plane supplies those)."""
    if not ENV_NAME.fullmatch(name):
        return "an environment variable's name is 1-128 of [A-Z0-9_], not starting with a digit"
    if name in DAEMON_ENV or name.startswith(RESERVED_PREFIXES):
        return f"{name} is the node's own; agent settings may not override it"
    if name in set(credentials):
        return f"{name} is one of the agent's credentials: {_HOW_SECRETS_COME}"
    if SECRET_NAME.search(name):
        return f"{name} looks like a secret: {_HOW_SECRETS_COME}"
    return None


def check_env(layer: LayerKind, settings: AgentSettings, credentials: Iterable[str] = ()) -> None:
    """Refuse a layer's env names the node would refuse, or that look like secrets."""
    names = list(credentials)
    for name in settings.env or {}:
        if why := env_refusal(name, names):
            raise SettingsError(layer, f"env.{name}", why)


def transport_refusal(transport: Transport, agent: str, takes: Iterable[Transport]) -> str | None:
    """Why `agent` (taking the transports `takes`) cannot have an MCP server of `transport`."""
    allowed = tuple(takes)
    if transport in allowed:
        return None
    return f"agent {agent!r} takes MCP servers over {', '.join(allowed)} only, not {transport}"
