"""Stored layer defaults over HTTP: versions, who may change what, reading any version."""

from __future__ import annotations

import pytest

from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_each_change_is_a_new_version_and_old_ones_stay_readable(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        path = "/api/defaults/projects/proj-1"
        r = await cp.client.put(
            path, json={"requirements": {"minVcpu": 3}}, headers=cp.user("alice")
        )
        assert r.status_code == 201
        first = r.json()
        assert {k: first[k] for k in ("kind", "id", "version", "requirements", "owner")} == {
            "kind": "project",
            "id": "proj-1",
            "version": 1,
            "requirements": {"minVcpu": 3.0},
            "owner": "alice",
        }
        r = await cp.client.put(
            path, json={"requirements": {"minDiskGb": 60}}, headers=cp.user("alice")
        )
        assert (r.status_code, r.json()["version"]) == (200, 2)
        assert (await cp.client.get(path, headers=cp.user("alice"))).json()["requirements"] == {
            "minDiskGb": 60.0
        }
        old = await cp.client.get(path, params={"version": 1}, headers=cp.user("alice"))
        assert old.json()["requirements"] == {"minVcpu": 3.0}
        r = await cp.client.get(path, params={"version": 9}, headers=cp.user("alice"))
        assert (r.status_code, r.json()["error"]) == (
            404,
            "no stored defaults for project 'proj-1' version 9",
        )
        r = await cp.client.get(path, params={"version": "x"}, headers=cp.user("alice"))
        assert r.status_code == 422
        # Optimistic concurrency: a change made against an older version is refused.
        r = await cp.client.put(
            path,
            json={"requirements": {"minVcpu": 1}, "expectedVersion": 1},
            headers=cp.user("alice"),
        )
        assert (r.status_code, r.json()["error"]) == (
            409,
            "project 'proj-1' is at version 2, not 1",
        )
        r = await cp.client.put(
            path,
            json={"requirements": {"minVcpu": 1}, "expectedVersion": 2},
            headers=cp.user("alice"),
        )
        assert r.json()["version"] == 3


WHO_MAY_CHANGE = [
    ("/api/defaults/platform/platform", "alice", 403, "only an admin"),
    ("/api/defaults/users/bob", "alice", 403, "a user's defaults are that user's"),
    # Names are per owner: alice writes only under her own name, whatever bob stored.
    ("/api/defaults/projects/owned-by-bob?owner=bob", "alice", 403, "under their own name"),
    ("/api/defaults/agent-profiles/owned-by-bob?owner=bob", "alice", 403, "their own name"),
    ("/api/defaults/triggers/owned-by-bob?owner=bob", "alice", 403, "their own name"),
    ("/api/defaults/triggers/nobody-has-it?owner=bob", "alice", 403, "their own name"),
    ("/api/defaults/projects/owned-by-bob", "alice", 201, None),  # alice's own, another layer
    ("/api/defaults/users/alice?owner=bob", "alice", 422, "owner applies to projects"),
    ("/api/defaults/projects/p?owner=bad%20name", "alice", 422, "owner must be"),
    ("/api/defaults/teams/x", "alice", 404, "no such layer kind 'teams'"),
    ("/api/defaults/platform/other", "admin", 404, "the platform layer's id is 'platform'"),
    ("/api/defaults/projects/bad%20id", "alice", 422, "id must be"),
    ("/api/defaults/users/alice", "alice", 200, None),
    ("/api/defaults/users/bob", "admin", 200, None),
    ("/api/defaults/projects/owned-by-bob?owner=bob", "admin", 200, None),
    ("/api/defaults/projects/new-one", "alice", 201, None),
]


async def test_who_may_change_a_layer(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        for kind in ("projects", "agent-profiles", "triggers"):
            await cp.put_defaults(kind, "owned-by-bob", {"minVcpu": 1}, user="bob")
        await cp.put_defaults("users", "alice", {"minVcpu": 1}, user="alice")
        await cp.put_defaults("users", "bob", {"minVcpu": 1}, user="bob")
        for path, user, status, error in WHO_MAY_CHANGE:
            headers = cp.admin() if user == "admin" else cp.user(user)
            # A refused change must not reveal anything: a body that is invalid as well.
            for requirements in ({"minVcpu": 2}, {"minVcpu": -1}):
                r = await cp.client.put(path, json={"requirements": requirements}, headers=headers)
                if requirements["minVcpu"] == -1 and status < 300:
                    assert r.status_code == 422, (path, user, r.text)
                    continue
                assert r.status_code == status, (path, user, r.text)
                if error is not None:
                    assert error in r.json()["error"], (path, user)


async def test_bad_requirements_name_the_layer_and_field(settings: ControlPlaneSettings) -> None:
    async with running(settings) as cp:
        r = await cp.client.put(
            "/api/defaults/agent-profiles/p",
            json={"requirements": {"maxCoTenants": 0}},
            headers=cp.user("alice"),
        )
        assert r.status_code == 422
        assert (r.json()["layer"], r.json()["field"]) == ("agent_profile", "maxCoTenants")
        r = await cp.client.put(
            "/api/defaults/platform/platform",
            json={"requirements": {"minVcpu": 1}},
            headers=cp.admin(),
        )
        assert r.status_code == 422
        assert "must define every field" in r.json()["error"]
        r = await cp.client.put(
            "/api/defaults/projects/p", json={"requirements": {}, "other": 1}, headers=cp.admin()
        )
        assert r.status_code == 422


async def test_the_platform_layer_is_stored_with_an_id_and_a_version(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        r = await cp.client.get("/api/defaults/platform/platform", headers=cp.user("alice"))
        seed = r.json()
        assert (seed["kind"], seed["id"], seed["version"]) == ("platform", "platform", 1)
        assert seed["requirements"] == {
            "minVcpu": 2.0,
            "minMemoryGb": 4.0,
            "minDiskGb": 40.0,
            "exclusiveNode": False,
            "maxCoTenants": 4,
        }
        changed = {**seed["requirements"], "maxCoTenants": 2}
        made = await cp.put_defaults("platform", "platform", changed)
        assert made["version"] == 2
