"""The lifecycle's fault points are a closed list: a misspelt CONTROL_PLANE_NODES_KILL_AT
stops the replica at start instead of silently never firing, and none is set by default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from control_plane.dispatch.node_faults import POINTS
from control_plane.dispatch.nodes import NodeSettings


def test_no_fault_point_unless_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTROL_PLANE_NODES_KILL_AT", raising=False)
    assert NodeSettings().kill_at is None


@pytest.mark.parametrize("point", sorted(POINTS))
def test_each_point_is_accepted(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    monkeypatch.setenv("CONTROL_PLANE_NODES_KILL_AT", point)
    assert NodeSettings().kill_at == point


def test_a_misspelt_point_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROL_PLANE_NODES_KILL_AT", "create_sen")
    with pytest.raises(ValidationError):
        NodeSettings()
