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
from tests.cloud_init.helpers import PLANE, TOKEN, WHEEL, valid_inputs

WHEEL_NAME = "vm_agent-0.1.0-py3-none-any.whl"
Swap = SwapSettings

INJECTIONS = ["\n", "x\ny", "'", '"', "$(id)", "`id`", ";id", " ", "\\", "\t", "#"]


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
        ("callback_token", TOKEN),
        ("agent_package", "vm-agent==0.1.0"),
        ("agent_package", WHEEL),
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
        ({"jwks_url": "http://10.0.0.1/jwks.json"}, "jwks_url"),
        ({"callback_token": "not-a-jwt"}, "callback_token"),
        ({"callback_token": TOKEN + "." + "a"}, "callback_token"),
        ({"callback_token": "a" * 4000 + "." + "b" * 100 + ".c"}, "callback_token"),
        ({"agent_package": "vm-agent"}, "agent_package"),
        ({"agent_package": "vm-agent>=0.1"}, "agent_package"),
        ({"agent_package": "other==1.0"}, "agent_package"),
        ({"agent_package": "vm-agent==0.1.0 --index-url=https://evil"}, "agent_package"),
        (
            {"agent_package": "https://evil.example.com/vm_agent-0.1.0-py3-none-any.whl"},
            "agent_package",
        ),
        ({"agent_package": PLANE + ":8443/vm_agent-0.1.0-py3-none-any.whl"}, "agent_package"),
        ({"agent_package": PLANE + "/evil-0.1.0-py3-none-any.whl"}, "agent_package"),
        ({"agent_package": PLANE + "/vm_agent-0.1.0.tar.gz"}, "agent_package"),
        ({"agent_package": WHEEL + "#md5=abc"}, "agent_package"),
        (
            {"agent_package": "http://cp.example.com/vm_agent-0.1.0-py3-none-any.whl"},
            "agent_package",
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
        {"control_plane_url": "http://127.0.0.1:8000", "jwks_url": "http://[::1]:8000/jwks"},
        {"control_plane_url": "http://localhost:8000"},
        {"agent_package": "vm-agent==1.2.3rc1.post2.dev3"},
        {"agent_package": WHEEL + "#sha256=" + "0" * 64},
        {
            "control_plane_url": "http://127.0.0.1:8000",
            "agent_package": "http://127.0.0.1:8000/whl/vm_agent-0.1.0-py3-none-any.whl",
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
    "agent_package": [
        "https://ghp_abc@cp.example.com/vm_agent-0.1.0-py3-none-any.whl",
        PLANE + "/glpat-abc/vm_agent-0.1.0-py3-none-any.whl",
        PLANE + "/vm_agent-0.1.0-py3-none-any.whl?X-Amz-Credential=AKIA",
        "vm-agent==0.1.0+ghp_abc",
    ],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in SECRET_LOOKING.items() for value in values],
)
def test_secret_looking_values_are_refused_in_every_other_field(field: str, value: str) -> None:
    error = refused({field: value})
    assert error.field == field
    assert value not in str(error)


@pytest.mark.parametrize(
    "name",
    ["provider_token", "hcloud_token", "aws_secret_access_key", "github_token", "api_key"],
)
def test_there_is_no_field_for_a_provider_credential(name: str) -> None:
    error = refused({name: "secret"})
    assert (error.field, error.reason) == (name, "no such parameter")


def test_the_callback_token_is_the_only_secret_field() -> None:
    assert set(UserDataParams.model_fields) == {
        "node_id",
        "hostname",
        "control_plane_url",
        "jwks_url",
        "callback_token",
        "agent_package",
        "port",
        "swap",
    }


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
