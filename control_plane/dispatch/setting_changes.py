"""A running task's mode or model, changed by its owner (`POST /api/tasks/{id}/settings`):
recorded here at once, relayed to the node by the dispatcher as one of the task's steps
(under its lease, reconcile.ChangeSetting): the mode with the node's `session/set_mode`,
the model with `session/set_config_option` on the config option the agent offers in the
`model` category (ACP's; found through `session/settings`). A change the node or its
agent refuses is recorded with the refusal; the task goes on. Relaying again is harmless
(the same mode or value twice), so a replica that died mid-step leaves nothing wrong."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from anyio import to_thread
from sqlalchemy import Connection, Engine, insert, select, update

from control_plane.dispatch import status as st
from control_plane.dispatch.reconcile import ChangeSetting
from control_plane.storage.db import task_setting_changes as changes
from control_plane.storage.db import tasks
from vm_agent.jsonrpc.errors import JsonRpcError

FIELDS = ("mode", "model")


class _Settings(Protocol):
    @property
    def call_limit_s(self) -> float: ...


class _Calls(Protocol):
    async def call(
        self, target: Any, method: str, params: dict[str, Any], *, limit_s: float
    ) -> Any: ...


class Relaying(Protocol):
    """What of the dispatcher a relay uses (loop.Dispatcher)."""

    @property
    def nodes(self) -> _Calls: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def settings(self) -> _Settings: ...
    @property
    def clock(self) -> Callable[[], float]: ...


class ChangeRefused(ValueError):
    pass


def ask(engine: Engine, key: str, wanted: dict[str, str], user: str, now: float) -> list[str]:
    """Record the changes (field to value) for the task keyed `key`; their ids. 409
    (ChangeRefused) for a task that ended: nothing would carry them."""
    made: list[str] = []
    with engine.begin() as conn:
        status = conn.execute(select(tasks.c.status).where(tasks.c.task_id == key)).scalar_one()
        if st.is_end(status):
            raise ChangeRefused(f"task ended ({status}): its settings no longer change")
        for name in FIELDS:
            if name not in wanted:
                continue
            change_id = f"chg-{uuid.uuid4().hex}"
            conn.execute(
                insert(changes).values(
                    change_id=change_id,
                    task_id=key,
                    field=name,
                    value=wanted[name],
                    asked_by=user,
                    asked_at=now,
                )
            )
            made.append(change_id)
    return made


def pending(conn: Connection, key: str) -> tuple[tuple[str, str, str], ...]:
    """The changes not yet relayed, oldest first: (change id, field, value)."""
    query = (
        select(changes.c.change_id, changes.c.field, changes.c.value)
        .where(changes.c.task_id == key, changes.c.sent_at.is_(None))
        .order_by(changes.c.asked_at, changes.c.change_id)
    )
    return tuple((a, b, c) for a, b, c in conn.execute(query))


def model_option(offered: Any) -> str | None:
    """The id of the config option the agent offers for its model (category `model`). Pure."""
    options = offered.get("configOptions") if isinstance(offered, dict) else None
    for option in options if isinstance(options, list) else []:
        if isinstance(option, dict) and option.get("category") == "model":
            found = option.get("id")
            if isinstance(found, str):
                return found
    return None


def _mark(engine: Engine, change_id: str, now: float, error: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(changes).where(changes.c.change_id == change_id).values(sent_at=now, error=error)
        )


async def relay(by: Relaying, target: Any, session_id: str, step: ChangeSetting) -> None:
    """Relay one change and record it; a node that cannot be reached raises (the pass
    tries again later), a refusal is recorded as the change's error."""
    call, limit_s = by.nodes.call, by.settings.call_limit_s
    error: str | None = None
    try:
        if step.field == "mode":
            params = {"session_id": session_id, "mode_id": step.value}
            await call(target, "session/set_mode", params, limit_s=limit_s)
        else:
            offered = await call(
                target, "session/settings", {"session_id": session_id}, limit_s=limit_s
            )
            config_id = model_option(offered)
            if config_id is None:
                error = "the agent offers no model option"
            else:
                params = {"session_id": session_id, "config_id": config_id, "value": step.value}
                await call(target, "session/set_config_option", params, limit_s=limit_s)
    except JsonRpcError as exc:
        error = f"the node refused: {exc.message}"
    await to_thread.run_sync(_mark, by.engine, step.change_id, by.clock(), error)
