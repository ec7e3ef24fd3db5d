"""Start settings against what the agent said: its ``initialize`` answer's MCP capabilities,
and the modes and config options its ``session/new`` (load, resume) answer offered.

``mcp_refusal`` and ``plan`` are pure decisions; ``apply`` carries the plan out through the
ACP client. A setting the agent cannot take is a ``SettingRefused`` naming the setting and
what the agent offers: the start fails (the process is stopped), nothing is dropped quietly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from vm_agent.acp.client import AcpClient
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.session.start_settings import StartSettings, transport_of

T = TypeVar("T")
# The run's request tracker (the method in flight, for crash reports).
Tracker = Callable[[str, Awaitable[Any]], Awaitable[Any]]


class SettingRefused(Exception):
    """The agent cannot take a start setting; the message says which and what it offers."""


@dataclass(frozen=True, slots=True)
class Change:
    method: str  # session/set_mode or session/set_config_option
    params: dict[str, Any]  # modeId, or configId and value (and type for a boolean)
    setting: str  # as agentSettings names it, for a refusal's message
    offers: str = ""  # what the agent offers for it, for a refusal's message


def mcp_refusal(settings: StartSettings, initialize: dict[str, Any]) -> str | None:
    """Why the agent cannot take one of the MCP servers (None: it takes them all)."""
    caps = initialize.get("agentCapabilities")
    mcp = caps.get("mcpCapabilities") if isinstance(caps, dict) else None
    mcp = mcp if isinstance(mcp, dict) else {}
    takes = ["stdio", *(k for k in ("http", "sse") if mcp.get(k) is True)]
    for server in settings.mcp_servers:
        kind = transport_of(server)
        if kind not in takes:
            return (
                f"agentSettings.mcpServers: server {server.name!r} uses {kind}, which the "
                f"agent does not take (its mcpCapabilities: {', '.join(takes)})"
            )
    return None


def _values(option: dict[str, Any]) -> list[str]:
    """A select option's values, its groups flattened."""
    out: list[str] = []
    for item in option.get("options") or []:
        if isinstance(item, dict) and isinstance(item.get("options"), list):
            out.extend(_values(item))
        elif isinstance(item, dict) and isinstance(item.get("value"), str):
            out.append(item["value"])
    return out


def _option_change(
    option: dict[str, Any], value: str | bool, setting: str, *, alias_ok: bool = False
) -> Change:
    """``alias_ok``: a value the option does not list is still sent (the agent may take it
    as an alias, as claude-agent-acp takes "sonnet" for "sonnet[1m]"); its refusal is then
    the start's, with what it offers."""
    config_id = str(option.get("id"))
    if option.get("type") == "boolean":
        if not isinstance(value, bool):
            raise SettingRefused(f"{setting}: option {config_id!r} takes true or false")
        params: dict[str, Any] = {"configId": config_id, "type": "boolean", "value": value}
        return Change("session/set_config_option", params, setting)
    values = _values(option)
    offers = f"it offers: {', '.join(values) or 'none'}"
    if value not in values and not alias_ok:
        raise SettingRefused(
            f"{setting}: the agent offers no value {value!r} for option {config_id!r} ({offers})"
        )
    params = {"configId": config_id, "value": value}
    return Change("session/set_config_option", params, setting, offers)


def _by_category(options: list[dict[str, Any]], category: str) -> dict[str, Any] | None:
    return next((o for o in options if o.get("category") == category), None)


def plan(
    settings: StartSettings, offered: dict[str, Any], *, model_by_env: bool = False
) -> list[Change]:
    """The changes that give the session its settings, in order: mode, model, effort, then
    the other config options. SettingRefused for the first one the agent does not offer.
    ``model_by_env``: the model went in the agent's environment (its catalog's
    ``model_env``), unless the agent offers a model option after all."""
    changes: list[Change] = []
    raw_options = offered.get("configOptions")
    options = [o for o in raw_options or [] if isinstance(o, dict)]
    if settings.mode is not None:
        modes = offered.get("modes")
        available = modes.get("availableModes") if isinstance(modes, dict) else None
        ids = [m["id"] for m in available or [] if isinstance(m, dict) and "id" in m]
        if settings.mode not in ids:
            what = f"it offers: {', '.join(map(str, ids))}" if ids else "it offers no modes"
            raise SettingRefused(f"agentSettings.mode: no mode {settings.mode!r} ({what})")
        offers = f"it offers: {', '.join(map(str, ids))}"
        changes.append(
            Change("session/set_mode", {"modeId": settings.mode}, "agentSettings.mode", offers)
        )
    for setting, category, value in (
        ("model", "model", settings.model),
        ("effort", "thought_level", settings.effort),
    ):
        if value is None:
            continue
        option = _by_category(options, category)
        if option is None and setting == "model" and model_by_env:
            continue
        if option is None:
            raise SettingRefused(
                f"agentSettings.{setting}: the agent offers no config option of category "
                f"{category!r} (its options: {_ids(options)})"
            )
        where = f"agentSettings.{setting}"
        changes.append(_option_change(option, value, where, alias_ok=setting == "model"))
    for config_id, given in settings.config_options.items():
        option = next((o for o in options if o.get("id") == config_id), None)
        if option is None:
            raise SettingRefused(
                f"agentSettings.configOptions: the agent offers no option {config_id!r} "
                f"(its options: {_ids(options)})"
            )
        where = f"agentSettings.configOptions.{config_id}"
        changes.append(_option_change(option, given, where))
    return changes


def _ids(options: list[dict[str, Any]]) -> str:
    return ", ".join(str(o.get("id")) for o in options) or "none"


async def apply(
    client: AcpClient, acp_session_id: str, changes: list[Change], track: Tracker
) -> None:
    """Each change in order; the agent's refusal of one is a SettingRefused naming it."""
    for change in changes:
        try:
            if change.method == "session/set_mode":
                call: Awaitable[Any] = client.set_mode(acp_session_id, change.params["modeId"])
            else:
                call = client.set_config_option(acp_session_id, change.params)
            await track(change.method, call)
        except JsonRpcError as exc:
            offers = f"; {change.offers}" if change.offers else ""
            raise SettingRefused(
                f"{change.setting}: the agent refused {change.method} {change.params}: "
                f"{exc.message} (JSON-RPC {exc.code}){offers}"
            ) from None
