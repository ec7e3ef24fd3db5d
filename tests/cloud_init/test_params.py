"""Every field's bounds, injection attempts and secret-looking values, refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_init import (
    InvalidParameter,
    SwapSettings,
    UserDataParams,
    params_from_env,
    validate_params,
)
from tests.cloud_init.helpers import BUNDLE_URL, PLANE, TOKEN, WHEELHOUSE_URL, valid_inputs

Swap = SwapSettings

INJECTIONS = ["\n", "x\ny", "'", '"', "$(id)", "`id`", ";id", " ", "\\", "\t", "#"]


def wheelhouse(url: str = WHEELHOUSE_URL, sha256: str = "a" * 64) -> dict[str, Any]:
    return {"wheelhouse": {"url": url, "sha256": sha256}}


def agents(
    url: str = BUNDLE_URL, names: Any = ("claude",), sha256: str = "b" * 64
) -> dict[str, Any]:
    return {"agents": {"bundle": {"url": url, "sha256": sha256}, "names": names}}


def refused(overrides: dict[str, Any]) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as caught:
        validate_params(valid_inputs(**overrides))
    return caught.value


def test_valid_inputs_are_accepted_with_defaults() -> None:
    params = validate_params(valid_inputs())
    assert params.port == 8080
    assert params.swap == SwapSettings(size_mb=2048, swappiness=60)
    assert TOKEN not in repr(params)


@pytest.mark.parametrize(
    ("field", "base"),
    [
        ("node_id", "node-1"),
        ("hostname", "vm-node-1"),
        ("control_plane_url", PLANE + "/x"),
        ("jwks_url", PLANE + "/jwks.json"),
        ("bootstrap_token", TOKEN),
    ],
)
@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize("where", ["suffix", "middle"])
def test_injection_is_refused_in_every_text_field(
    field: str, base: str, payload: str, where: str
) -> None:
    value = base + payload if where == "suffix" else base[:3] + payload + base[3:]
    error = refused({field: value})
    assert error.field == field
    assert value not in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda v: wheelhouse(url=WHEELHOUSE_URL + v), "wheelhouse.url"),
        (lambda v: wheelhouse(sha256="a" * 64 + v), "wheelhouse.sha256"),
        (lambda v: agents(url=BUNDLE_URL[:20] + v + BUNDLE_URL[20:]), "agents.bundle.url"),
        (lambda v: agents(names=("claude" + v,)), "agents.names"),
    ],
)
def test_injection_is_refused_in_the_artifacts(payload: str, build: Any, field: str) -> None:
    error = refused(build(payload))
    assert error.field == field
    assert payload.strip() == "" or payload not in str(error)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"port": -1}, "port"),
        ({"port": "8080"}, "port"),
        ({"port": "8080; rm -rf /"}, "port"),
        ({"port": True}, "port"),
        ({"swap": {"size_mb": -1}}, "swap.size_mb"),
        ({"swap": {"size_mb": 65537}}, "swap.size_mb"),
        ({"swap": {"size_mb": "1; rm -rf /"}}, "swap.size_mb"),
        ({"swap": {"size_mb": "2048\n"}}, "swap.size_mb"),
        ({"swap": {"size_mb": 2048.0}}, "swap.size_mb"),
        ({"swap": {"swappiness": 101}}, "swap.swappiness"),
        ({"swap": {"swappiness": -1}}, "swap.swappiness"),
        ({"swap": {"swappiness": "60"}}, "swap.swappiness"),
        ({"node_id": ""}, "node_id"),
        ({"node_id": "Node-1"}, "node_id"),
        ({"node_id": "-node"}, "node_id"),
        ({"node_id": "n" * 64}, "node_id"),
        ({"hostname": "vm.example.com"}, "hostname"),
        ({"hostname": "vm-"}, "hostname"),
        ({"control_plane_url": "http://cp.example.com"}, "control_plane_url"),
        ({"control_plane_url": "ftp://cp.example.com"}, "control_plane_url"),
        ({"control_plane_url": "https://"}, "control_plane_url"),
        ({"control_plane_url": "https://cp.example.com:99999"}, "control_plane_url"),
        ({"control_plane_url": "https://cp.example.com/" + "a" * 2048}, "control_plane_url"),
        ({"jwks_url": "http://jwks.example.com/jwks.json"}, "jwks_url"),
        ({"bootstrap_token": "short"}, "bootstrap_token"),
        ({"bootstrap_token": "a" * 257}, "bootstrap_token"),
        ({"bootstrap_token": "a.b.c" + "d" * 40}, "bootstrap_token"),
        (wheelhouse(sha256="A" * 64), "wheelhouse.sha256"),
        (wheelhouse(sha256="a" * 63), "wheelhouse.sha256"),
        (wheelhouse(url="https://evil.example.com/artifacts/w.tar"), "wheelhouse"),
        (wheelhouse(url=PLANE + ":8443/artifacts/w.tar"), "wheelhouse"),
        (wheelhouse(url="http://cp.example.com/artifacts/w.tar"), "wheelhouse.url"),
        (wheelhouse(url=PLANE + "/artifacts/w.tar#sha256=" + "a" * 64), "wheelhouse.url"),
        (wheelhouse(url=PLANE + "/artifacts/"), "wheelhouse.url"),
        ({"wheelhouse": None}, "wheelhouse"),
        (agents(url="https://evil.example.com/a.tar.gz"), "agents"),
        (agents(names=()), "agents.names"),
        (agents(names=("claude", "claude")), "agents.names"),
        (agents(names=("opencode",)), "agents.names"),
        (agents(names=("fake",)), "agents.names"),
        (agents(names=["claude"]), "agents.names"),
        ({"agent_users": {"count": 0}}, "agent_users.count"),
        ({"agent_users": {"count": 1025}}, "agent_users.count"),
        ({"agent_users": {"uid_base": 999}}, "agent_users.uid_base"),
        ({"ca_certificate": "not a pem"}, "ca_certificate"),
        (
            {"ca_certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "ca_certificate",
        ),
        (
            {"ca_certificate": "-----BEGIN CERTIFICATE-----\nAA$(id)\n-----END CERTIFICATE-----\n"},
            "ca_certificate",
        ),
    ],
)
def test_bounds_and_shapes_are_refused_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    assert refused(overrides).field == field


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": 1},
        {"port": 65535},
        {"swap": {"size_mb": 0, "swappiness": 0}},
        {"swap": {"size_mb": 65536, "swappiness": 100}},
        {"node_id": "0" * 63},
        {"hostname": "asia-east1-node"},
        {
            "control_plane_url": "http://127.0.0.1:8000",
            "jwks_url": "http://[::1]:8000/jwks",
            **wheelhouse(url="http://127.0.0.1:8000/artifacts/w.tar"),
            "agents": None,
        },
        {
            "control_plane_url": "http://localhost:8000",
            **wheelhouse(url="http://localhost:8000/artifacts/w.tar"),
            **agents(url="http://localhost:8000/artifacts/a.tar.gz"),
        },
        {"bootstrap_token": "a" * 32},
        {"bootstrap_token": "a" * 256},
        {"agents": None},
        agents(names=("gemini", "codex", "claude")),
        {"agent_users": {"count": 1, "uid_base": 1000}},
        {
            "control_plane_url": "http://127.0.0.1:8000",
            **wheelhouse(url="http://127.0.0.1:8000/artifacts/w.tar"),
            **agents(url="http://127.0.0.1:8000/artifacts/a.tar.gz"),
        },
    ],
)
def test_edges_of_each_range_are_accepted(overrides: dict[str, Any]) -> None:
    validate_params(valid_inputs(**overrides))


SECRET_LOOKING = {
    "node_id": [
        "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
        "sk-ant-api03-abcdef",
        "sk-proj-abcdef",
        "glpat-abcdefghij",
        "xoxb-1234-5678",
        TOKEN,
        "AKIAIOSFODNN7EXAMPLE",
    ],
    "hostname": ["sk-live-abcdef", "ghs_abcdef0123456789", "AIzaSyA0123456789"],
    "control_plane_url": [
        "https://user:hunter2@cp.example.com",
        "https://cp.example.com/?token=abc",
        "https://cp.example.com/#access_token=abc",
        "https://cp.example.com/ghp_0123456789abcdef",
        "https://cp.example.com/" + TOKEN,
    ],
    "jwks_url": [
        "https://cp.example.com/jwks?key=AKIAIOSFODNN7EXAMPLE",
        "https://cp.example.com/sk-ant-api03-abc/jwks.json",
        "https://x-access-token:ghs_abc@cp.example.com/jwks.json",
    ],
}
SECRET_LOOKING_URLS = [
    "https://ghp_abc@cp.example.com/artifacts/w.tar",
    PLANE + "/glpat-abc/w.tar",
    PLANE + "/artifacts/w.tar?X-Amz-Credential=AKIA",
    PLANE + "/artifacts/ghp_0123456789abcdef.tar",
]


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in SECRET_LOOKING.items() for value in values],
)
def test_secret_looking_values_are_refused_in_every_other_field(field: str, value: str) -> None:
    error = refused({field: value})
    assert error.field == field
    assert value not in str(error)


@pytest.mark.parametrize("url", SECRET_LOOKING_URLS)
def test_secret_looking_artifact_urls_are_refused(url: str) -> None:
    assert refused(wheelhouse(url=url)).field == "wheelhouse.url"
    assert refused(agents(url=url)).field == "agents.bundle.url"


@pytest.mark.parametrize(
    "name",
    ["provider_token", "hcloud_token", "aws_secret_access_key", "github_token", "api_key"],
)
def test_there_is_no_field_for_a_provider_credential(name: str) -> None:
    error = refused({name: "secret"})
    assert (error.field, error.reason) == (name, "no such parameter")


def test_the_bootstrap_token_is_the_only_secret_field() -> None:
    assert set(UserDataParams.model_fields) == {
        "node_id",
        "hostname",
        "control_plane_url",
        "jwks_url",
        "bootstrap_token",
        "wheelhouse",
        "agents",
        "port",
        "swap",
        "agent_users",
        "ca_certificate",
        "agent_start_timeout_s",
    }
    assert "callback_token" not in UserDataParams.model_fields


def test_swap_settings_from_env_defaults() -> None:
    assert params_from_env({}) == SwapSettings(size_mb=2048, swappiness=60)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SWAP_SIZE_MB": "0"}, SwapSettings(size_mb=0, swappiness=60)),
        (
            {"SWAP_SIZE_MB": "65536", "SWAP_SWAPPINESS": "100"},
            SwapSettings(size_mb=65536, swappiness=100),
        ),
        (
            {"SWAP_SIZE_MB": "4096", "SWAP_SWAPPINESS": "0"},
            SwapSettings(size_mb=4096, swappiness=0),
        ),
        ({"SWAP_SWAPPINESS": "10", "OTHER": "x"}, SwapSettings(size_mb=2048, swappiness=10)),
    ],
)
def test_swap_settings_from_env(env: dict[str, str], expected: SwapSettings) -> None:
    assert params_from_env(env) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWAP_SIZE_MB", "-1"),
        ("SWAP_SIZE_MB", "65537"),
        ("SWAP_SIZE_MB", "1; rm -rf /"),
        ("SWAP_SIZE_MB", "2048\n"),
        ("SWAP_SIZE_MB", " 2048"),
        ("SWAP_SIZE_MB", ""),
        ("SWAP_SIZE_MB", "+2048"),
        ("SWAP_SIZE_MB", "2_048"),
        ("SWAP_SIZE_MB", "0x800"),
        ("SWAP_SIZE_MB", "2048.0"),
        ("SWAP_SIZE_MB", "\uff12\uff10\uff14\uff18"),
        ("SWAP_SIZE_MB", "$(id)"),
        ("SWAP_SWAPPINESS", "101"),
        ("SWAP_SWAPPINESS", "-1"),
        ("SWAP_SWAPPINESS", "60\n"),
        ("SWAP_SWAPPINESS", "`id`"),
    ],
)
def test_swap_env_is_strictly_numeric(name: str, value: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        params_from_env({name: value})
    assert caught.value.field == name
