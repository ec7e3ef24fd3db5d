"""Who may call which viewer method on which session (pure: facts in, a decision out).

Scopes (docs/viewer-api.md): ``read`` may list and subscribe; ``write`` may also start,
prompt, cancel, stop, recover and answer permissions; both only for the sessions the token's
user (``sub``) owns. ``node`` is the control plane's own connection: every method on every
session of the node, and it may name the ``owner`` of a session it starts, give it a
``repository``, and call ``workspace/push``. A session with no
owner (started by the node scope without one, or kept from before owners existed) is the
node's alone.
"""

from __future__ import annotations

from dataclasses import dataclass

# A session's files and git view (``workspace_methods``): reading, and uploading.
WORKSPACE_READ = frozenset(
    {
        "workspace/list",
        "workspace/stat",
        "workspace/read",
        "workspace/git_status",
        "workspace/diff",
        "workspace/log",
        "workspace/ports",
    }
)
# People's terminals (``terminal_methods``): watching, and typing.
TERMINAL_READ = frozenset({"terminal/list", "terminal/snapshot"})
TERMINAL_WRITE = frozenset({"terminal/open", "terminal/input", "terminal/resize", "terminal/close"})
# Streams to a port the session listens on (``port_forward``): they reach its servers.
PORT_WRITE = frozenset({"port/open", "port/send", "port/close"})
# A session's modes and config options (``settings_methods``): reading, and changing.
SETTINGS_READ = frozenset({"session/settings"})
SETTINGS_WRITE = frozenset({"session/set_mode", "session/set_config_option"})
READ_METHODS = (
    frozenset({"session/list", "session/subscribe"})
    | WORKSPACE_READ
    | TERMINAL_READ
    | SETTINGS_READ
)
# What only the control plane's own connection may call (issue 23: the task branch's push).
NODE_METHODS = frozenset({"workspace/push"})
WRITE_METHODS = (
    frozenset(
        {
            "session/start",
            "session/prompt",
            "session/cancel",
            "session/stop",
            "session/recover",
            "permission/respond",
            "workspace/write",
        }
    )
    | TERMINAL_WRITE
    | PORT_WRITE
    | SETTINGS_WRITE
)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    subject: str
    read: bool
    write: bool
    node: bool


class Denied(Exception):
    """Refused; ``str(exc)`` says why, for the viewer (JSON-RPC -32003)."""


def check_method(method: str, grant: Grant) -> None:
    """Raises ``Denied`` when the token's scopes do not cover ``method``."""
    if grant.node:
        return
    if method in NODE_METHODS:
        raise Denied(f"forbidden: {method} is the control plane's (the 'node' scope)")
    if method in WRITE_METHODS and not grant.write:
        raise Denied(f"forbidden: {method} needs the 'write' scope")
    if method in READ_METHODS and not (grant.read or grant.write):
        raise Denied(f"forbidden: {method} needs the 'read' scope")


def may_reach(grant: Grant, owner: str | None) -> bool:
    """Whether the token may see and act on a session owned by ``owner``."""
    return grant.node or (owner is not None and owner == grant.subject)


def check_reach(grant: Grant, owner: str | None, session_id: str) -> None:
    if not may_reach(grant, owner):
        raise Denied(f"forbidden: session {session_id!r} belongs to another user")


def check_repository_at_start(grant: Grant, repository: object | None) -> None:
    """Only the node scope may have a session clone a repository (it names the workspace
    whose git token the daemon then asks for)."""
    if repository is not None and not grant.node:
        raise Denied("forbidden: only the 'node' scope may start a session with a repository")


def owner_at_start(grant: Grant, requested: str | None) -> str | None:
    """The owner of a session this token starts (raises ``Denied``)."""
    if grant.node:
        return requested
    if requested is not None and requested != grant.subject:
        raise Denied("forbidden: only the 'node' scope may name another owner")
    return grant.subject
