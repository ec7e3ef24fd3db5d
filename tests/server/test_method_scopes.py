"""Every workspace, terminal and port method is in a scope table: `access.check_method`
lets a method it does not know through, so a method missing there would be open to any
token."""

from __future__ import annotations

from typing import Any

from vm_agent.server import (
    port_forward,
    push_method,
    settings_methods,
    terminal_methods,
    workspace_methods,
)
from vm_agent.server.access import (
    NODE_METHODS,
    READ_METHODS,
    WRITE_METHODS,
    Grant,
    check_method,
)


class _Supervisor:
    log: Any = None


class _Ctx:
    supervisor = _Supervisor()


def _lookup(session_id: str) -> Any:
    raise AssertionError("not called")


def test_every_added_method_needs_a_scope() -> None:
    ctx: Any = _Ctx()
    names = (
        set(workspace_methods.handlers(_lookup))
        | set(terminal_methods.handlers(_lookup, ctx))
        | set(port_forward.PortForwards(ctx, _lookup).handlers())
        | set(settings_methods.handlers(_lookup, lambda: "x"))
        | set(push_method.handlers(_lookup, ctx.supervisor))
    )
    known = READ_METHODS | WRITE_METHODS | NODE_METHODS
    assert names <= known, names - known
    nothing = Grant(subject="x", read=False, write=False, node=False)
    for name in names:
        try:
            check_method(name, nothing)
        except Exception:
            continue
        raise AssertionError(f"{name} is open to a token without scopes")
    everything = Grant(subject="x", read=True, write=True, node=False)
    for name in NODE_METHODS:
        try:
            check_method(name, everything)
        except Exception:
            continue
        raise AssertionError(f"{name} is open to a token without the node scope")
    writes = {"workspace/write", "terminal/open", "terminal/input", "terminal/resize"}
    writes |= {"terminal/close", "port/open", "port/send", "port/close"}
    writes |= {"session/set_mode", "session/set_config_option"}
    assert {n for n in names if n in WRITE_METHODS} == writes
