"""The rendered document: contents, order, modes, size, and the unit embedded as is."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
import yaml

from cloud_init import MAX_USER_DATA_BYTES, UserDataTooLarge, render, validate_params
from cloud_init.render import ENV_FILE, TOKEN_FILE, UNIT_FILE
from tests.cloud_init.helpers import (
    PLANE,
    TOKEN,
    UNIT_SOURCE,
    files_by_path,
    runcmd_scripts,
    valid_inputs,
)


def rendered(**overrides: Any) -> str:
    return render(validate_params(valid_inputs(**overrides)))


def test_defaults() -> None:
    text = rendered()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert list(doc) == ["hostname", "preserve_hostname", "write_files", "runcmd"]
    assert doc["hostname"] == "vm-node-1"
    assert files_by_path(text)[ENV_FILE]["content"] == (
        "VM_AGENT_NODE_ID=node-1\n"
        f"VM_AGENT_CONTROL_PLANE_URL={PLANE}\n"
        "VM_AGENT_CALLBACK_TOKEN_FILE=/etc/vm-agent/callback-token\n"
        f"VM_AGENT_JWKS_URL={PLANE}/.well-known/jwks.json\n"
        "VM_AGENT_LISTEN_HOST=0.0.0.0\n"
        "VM_AGENT_LISTEN_PORT=8080\n"
        "VM_AGENT_STATE_DIR=/var/lib/vm-agent\n"
        "VM_AGENT_LOG_FORMAT=json\n"
    )
    scripts = runcmd_scripts(text)
    assert list(scripts) == ["vm-agent-swap", "vm-agent-install"]
    swap = scripts["vm-agent-swap"]
    assert "\nsize_mb=2048\n" in swap
    assert "\nswappiness=60\n" in swap
    for step in ("fallocate", "dd if=/dev/zero", "chmod 0600", "mkswap", "swapon", "/etc/fstab"):
        assert step in swap
    assert "sysctl -q -w" in swap and "/etc/sysctl.d/" in swap


def test_custom_swap_and_port() -> None:
    text = rendered(swap={"size_mb": 4096, "swappiness": 10}, port=9443)
    swap = runcmd_scripts(text)["vm-agent-swap"]
    assert "\nsize_mb=4096\n" in swap
    assert "\nswappiness=10\n" in swap
    assert "VM_AGENT_LISTEN_PORT=9443\n" in files_by_path(text)[ENV_FILE]["content"]


def test_swap_size_zero_disables_swap_entirely() -> None:
    text = rendered(swap={"size_mb": 0, "swappiness": 60})
    assert list(runcmd_scripts(text)) == ["vm-agent-install"]
    for word in ("swapfile", "swapon", "mkswap", "swappiness", "fstab"):
        assert word not in text


def test_swap_is_set_up_before_anything_is_downloaded_or_installed() -> None:
    doc = yaml.safe_load(rendered())
    # No cloud-init module that downloads or installs runs ahead of runcmd.
    assert not {"packages", "package_update", "bootcmd", "swap", "mounts"} & set(doc)
    names = [entry[3] for entry in doc["runcmd"]]
    assert names.index("vm-agent-swap") < names.index("vm-agent-install")
    downloads = re.compile(r"\b(pip|apt-get|curl|wget|venv)\b")
    swap, install = (entry[2] for entry in doc["runcmd"])
    assert not downloads.search(swap)
    assert downloads.search(install)


def test_install_steps_in_order() -> None:
    install = runcmd_scripts(rendered())["vm-agent-install"]
    steps = [
        "venv=/opt/vm-agent",
        "requirement=vm-agent==0.1.0",
        'python3 -m venv "$venv"',
        '"$venv/bin/python" -m pip install',
        "systemctl daemon-reload",
        'systemctl enable --now "$unit"',
    ]
    positions = [install.index(step) for step in steps]
    assert positions == sorted(positions)


def test_a_wheel_url_is_quoted_into_the_install_script() -> None:
    wheel = f"{PLANE}/dist/vm_agent-0.2.0-py3-none-any.whl#sha256=" + "ab" * 32
    install = runcmd_scripts(rendered(agent_package=wheel))["vm-agent-install"]
    assert f"\nrequirement='{wheel}'\n" in install


def test_the_unit_is_embedded_byte_for_byte() -> None:
    unit = files_by_path(rendered())[UNIT_FILE]
    assert unit["content"].encode("utf-8") == UNIT_SOURCE.read_bytes()
    # The package data (a symlink in a checkout, a copy in a wheel) is the same file.
    packaged = resources.files("cloud_init").joinpath("vm-agent.service").read_bytes()
    assert packaged == UNIT_SOURCE.read_bytes()


def test_file_modes_and_owners() -> None:
    text = rendered()
    files = files_by_path(text)
    assert {path: (f["permissions"], f["owner"]) for path, f in files.items()} == {
        ENV_FILE: ("0600", "root:root"),
        TOKEN_FILE: ("0600", "root:root"),
        UNIT_FILE: ("0644", "root:root"),
    }
    # Quoted in the YAML: an unquoted 0600 would be read as an octal integer.
    assert text.count("permissions: '0600'") == 2
    assert text.count("permissions: '0644'") == 1


def test_the_token_is_only_in_its_0600_file() -> None:
    text = rendered()
    assert text.count(TOKEN) == 1
    assert files_by_path(text)[TOKEN_FILE]["content"] == TOKEN + "\n"
    for path, entry in files_by_path(text).items():
        if path != TOKEN_FILE:
            assert TOKEN not in entry["content"]


def test_nothing_is_written_under_tmp() -> None:
    text = rendered()
    assert all(not path.startswith("/tmp") for path in files_by_path(text))
    assert "/tmp" not in text
    install = runcmd_scripts(text)["vm-agent-install"]
    assert 'export TMPDIR="$work"' in install and "work=/var/lib/" in install


def test_largest_valid_parameters_stay_under_the_limit() -> None:
    long_path = "/" + "p" * 2000
    text = rendered(
        node_id="n" * 63,
        hostname="h" * 63,
        control_plane_url=PLANE + long_path,
        jwks_url=PLANE + long_path,
        callback_token="a" * 2000 + "." + "b" * 2000 + "." + "c" * 94,
        agent_package=PLANE
        + "/"
        + "d" * 1900
        + "/vm_agent-0.1.0-py3-none-any.whl#sha256="
        + "0" * 64,
    )
    assert len(text.encode()) <= MAX_USER_DATA_BYTES


def test_over_the_limit_is_refused_saying_by_how_much() -> None:
    params = validate_params(valid_inputs())
    small = len(render(params, unit="x\n").encode())
    # Each extra unit line adds itself plus the block indentation.
    unit = "x\n" + "y" * 40_000 + "\n"
    expected_size = small + 40_000 + 1 + 4
    with pytest.raises(UserDataTooLarge) as caught:
        render(params, unit=unit)
    assert caught.value.size == expected_size
    assert caught.value.over == expected_size - 32 * 1024
    assert f"{caught.value.over} bytes over the 32768-byte limit" in str(caught.value)


def test_exactly_at_the_limit_is_accepted() -> None:
    params = validate_params(valid_inputs())
    small = len(render(params, unit="x\n").encode())
    filler = MAX_USER_DATA_BYTES - small - 5
    text = render(params, unit="x\n" + "y" * filler + "\n")
    assert len(text.encode()) == MAX_USER_DATA_BYTES
    with pytest.raises(UserDataTooLarge) as caught:
        render(params, unit="x\n" + "y" * (filler + 1) + "\n")
    assert caught.value.over == 1
