"""The rendered document: contents, order, modes, size, and the unit embedded as is."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_init import (
    MAX_USER_DATA_BYTES,
    InvalidParameter,
    UserDataTooLarge,
    render,
    validate_params,
)
from cloud_init.agents import AGENTS_FILE
from cloud_init.firewall import FIREWALL_UNIT, RULES_FILE
from cloud_init.install import CONTROL_PLANE_CA_FILE
from cloud_init.render import ENV_FILE, FIREWALL_UNIT_FILE, TOKEN_FILE, UNIT_FILE
from cloud_init.scripts import PROVISION_DIR
from tests.cloud_init.helpers import (
    BUNDLE_SHA,
    BUNDLE_URL,
    PLANE,
    TOKEN,
    UNIT_SOURCE,
    WHEELHOUSE_SHA,
    WHEELHOUSE_URL,
    files_by_path,
    runcmd_scripts,
    step_scripts,
    valid_inputs,
)
from vm_agent.process.catalog import Catalog, builtin_agents

ALL_STEPS = [
    "swap",
    "packages",
    "vm-agent",
    "agents",
    "agent-users",
    "workspaces",
    "bootstrap-token",
    "start",
]
TEST_CA = (Path(__file__).parent / "test-ca.pem").read_text()


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
        "VM_AGENT_BOOTSTRAP_TOKEN_FILE=/etc/vm-agent/bootstrap-token\n"
        "VM_AGENT_CALLBACK_TOKEN_FILE=/etc/vm-agent/callback-token\n"
        "VM_AGENT_TLS_CERT_FILE=/etc/vm-agent/node-cert.pem\n"
        "VM_AGENT_TLS_KEY_FILE=/etc/vm-agent/node-key.pem\n"
        "VM_AGENT_TLS_RENEW=1\n"
        f"VM_AGENT_JWKS_URL={PLANE}/.well-known/jwks.json\n"
        "VM_AGENT_LISTEN_HOST=0.0.0.0\n"
        "VM_AGENT_LISTEN_PORT=8080\n"
        "VM_AGENT_STATE_DIR=/var/lib/vm-agent\n"
        "VM_AGENT_LOG_FORMAT=json\n"
        "VM_AGENT_AGENT_USERS=16\n"
        "VM_AGENT_AGENT_UID_BASE=61000\n"
        "VM_AGENT_WORKSPACE_ROOTS=/srv/workspaces\n"
        "VM_AGENT_AGENTS_FILE=/etc/vm-agent/agents.toml\n"
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n"
    )
    steps = step_scripts(text)
    assert list(steps) == ALL_STEPS
    swap = steps["swap"]
    assert "\nsize_mb=2048\n" in swap
    assert "\nswappiness=60\n" in swap
    for step in ("fallocate", "dd if=/dev/zero", "chmod 0600", "mkswap", "swapon", "/etc/fstab"):
        assert step in swap
    assert "sysctl -q -w" in swap and "/etc/sysctl.d/" in swap


def test_a_node_parameter_bounds_the_daemons_agent_start() -> None:
    env = files_by_path(rendered(agent_start_timeout_s=240))[ENV_FILE]["content"]
    assert "VM_AGENT_START_TIMEOUT_S=240\n" in env
    assert "VM_AGENT_START_TIMEOUT_S" not in files_by_path(rendered())[ENV_FILE]["content"]
    with pytest.raises(InvalidParameter):
        rendered(agent_start_timeout_s=0)


def test_runcmd_is_only_the_runner_naming_every_step_in_order() -> None:
    runner = runcmd_scripts(rendered())
    assert list(runner) == ["vm-agent-provision"]
    script = runner["vm-agent-provision"]
    assert f"\nsteps=({' '.join(ALL_STEPS)})\n" in script
    assert f"\ndir={PROVISION_DIR}\n" in script
    assert 'if ! bash "$dir/$step.sh"; then' in script and "exit 1" in script
    assert "set -e" not in script  # it stops by itself, after saying which step failed


def test_custom_swap_port_and_agent_users() -> None:
    text = rendered(
        swap={"size_mb": 4096, "swappiness": 10},
        port=9443,
        agent_users={"count": 4, "uid_base": 70000},
    )
    swap = step_scripts(text)["swap"]
    assert "\nsize_mb=4096\n" in swap
    assert "\nswappiness=10\n" in swap
    env = files_by_path(text)[ENV_FILE]["content"]
    assert "VM_AGENT_LISTEN_PORT=9443\n" in env
    assert "VM_AGENT_AGENT_USERS=4\nVM_AGENT_AGENT_UID_BASE=70000\n" in env
    rules = files_by_path(text)[RULES_FILE]["content"]
    assert rules.count("meta skuid 70000-70003 ") == 3
    assert "ip daddr 169.254.169.254 " in rules and "ip6 daddr fd00:ec2::254 " in rules
    # The daemon's own port, as this node listens on it, only for what stays on the machine.
    assert 'meta skuid 70000-70003 oifname "lo" tcp dport 9443 ' in rules


def test_swap_size_zero_disables_swap_entirely() -> None:
    text = rendered(swap={"size_mb": 0, "swappiness": 60})
    assert list(step_scripts(text)) == ALL_STEPS[1:]
    for word in ("swapfile", "swapon", "mkswap", "swappiness", "fstab"):
        assert word not in text


def test_no_agents_means_no_bundle_step_and_no_catalog() -> None:
    text = rendered(agents=None)
    assert "agents" not in step_scripts(text)
    assert AGENTS_FILE not in files_by_path(text)
    assert "VM_AGENT_AGENTS_FILE" not in files_by_path(text)[ENV_FILE]["content"]


def test_swap_is_set_up_before_anything_is_downloaded_or_installed() -> None:
    text = rendered()
    doc = yaml.safe_load(text)
    # No cloud-init module that downloads or installs runs ahead of runcmd.
    assert not {"packages", "package_update", "bootcmd", "swap", "mounts"} & set(doc)
    steps = step_scripts(text)
    downloads = re.compile(r"\b(pip|apt-get|curl|wget|venv)\b")
    assert not downloads.search(steps["swap"])
    assert downloads.search(steps["vm-agent"]) and downloads.search(steps["agents"])
    # Nothing of ours is resolved against a public index at boot; the image's own signed
    # Debian mirror is asked only for a command the image lacks (the packages step).
    others = [f["content"] for f in doc["write_files"] if not f["path"].endswith("/packages.sh")]
    assert not any("apt-get" in content for content in others)
    assert "--no-install-recommends $missing" in steps["packages"]


def in_order(script: str, parts: list[str]) -> None:
    positions = [script.index(part) for part in parts]
    assert positions == sorted(positions), parts


def test_vm_agent_step_checks_the_hash_then_installs_with_no_index_and_hashes() -> None:
    script = step_scripts(rendered())["vm-agent"]
    assert f"\nurl={WHEELHOUSE_URL}\n" in script and f"\nsha256={WHEELHOUSE_SHA}\n" in script
    in_order(
        script,
        [
            # a node image's install is kept only when its marker names this wheelhouse
            'if [ "$installed" = "$sha256" ] && "$venv/bin/vm-agent" --version',
            "already installed (node image): skipped",
            'fetch_verified "$url" "$sha256" "$work/wheelhouse.tar"',
            'tar -xf "$work/wheelhouse.tar"',
            'rm -rf "$venv"',
            '"$python" -m venv --without-pip "$venv"',
            '"${pips[0]}/pip" install',
            '"$venv/bin/vm-agent" --version\n',
            'printf \'%s\\n\' "$sha256" > "$marker"',
        ],
    )
    install = script[script.index('"${pips[0]}/pip" install') :]
    for flag in ("--no-index", "--require-hashes", "--only-binary=:all:", "--isolated"):
        assert flag in install.split("-r ")[0]
    assert "PIP_CONFIG_FILE=/dev/null" in script


def test_agents_step_checks_the_hash_and_moves_the_tree_in_whole() -> None:
    script = step_scripts(rendered())["agents"]
    assert f"\nurl={BUNDLE_URL}\n" in script and f"\nsha256={BUNDLE_SHA}\n" in script
    assert "\ncommands='claude-agent-acp codex-acp'\n" in script
    in_order(
        script,
        [
            'if [ "$installed" = "$sha256 $commands" ] && "$target/bin/node" --version',
            "already installed (node image): skipped",
            'fetch_verified "$url" "$sha256" "$work/agents.tar.gz"',
            'tar -xzf "$work/agents.tar.gz" -C "$target.new"',
            '"$target.new/bin/node" --version',
            '> "$target.new/$marker_name"',
            'mv "$target.new" "$target"',
        ],
    )


def test_a_mismatched_hash_deletes_the_download_and_fails_the_step() -> None:
    script = step_scripts(rendered())["vm-agent"]
    check = script[script.index("fetch_verified() {") : script.index("\n}\n")]
    in_order(check, ['if [ "$got" != "$want" ]; then', 'rm -f "$dest.part"', "return 1", "mv"])


def test_agent_users_then_firewall_then_start() -> None:
    steps = step_scripts(rendered())
    in_order(
        steps["agent-users"],
        ['"$venv/bin/vm-agent" agent-users ensure', 'systemctl enable --now "$firewall_unit"'],
    )
    assert f"\nfirewall_unit={FIREWALL_UNIT}\n" in steps["agent-users"]
    assert 'install -d -m 0755 -o root -g root "$workspaces"' in steps["workspaces"]
    assert "\nworkspaces=/srv/workspaces\n" in steps["workspaces"]
    in_order(
        steps["start"],
        [
            "systemctl daemon-reload",
            'systemctl enable "$unit"',
            'systemctl start --no-block "$unit"',
        ],
    )


def test_the_catalog_points_at_the_bundle_and_the_daemon_accepts_it(tmp_path: Path) -> None:
    content = files_by_path(rendered())[AGENTS_FILE]["content"]
    table = tomllib.loads(content)["agents"]
    assert set(table) == {"claude", "codex"}
    for name, entry in table.items():
        builtin = builtin_agents()[name]
        assert entry["command"] == [f"/opt/vm-agent-agents/bin/{builtin.command[0]}"]
        assert entry["credentials"] == list(builtin.credentials)
        assert entry["optional_credentials"] == list(builtin.optional_credentials)
        assert entry["mcp_transports"] == list(builtin.mcp_transports)
        assert entry["env"]["PATH"].startswith("/opt/vm-agent-agents/bin:")
        assert entry["env"] == {"PATH": entry["env"]["PATH"], **builtin.env}
    path = tmp_path / "agents.toml"
    path.write_text(content)
    catalog = Catalog.load(path)
    assert catalog.get("codex").command == ("/opt/vm-agent-agents/bin/codex-acp",)
    assert catalog.get("claude").credential_names == ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
    assert catalog.get("fake").name == "fake"  # the built-in fake agent stays
    for name in ("claude", "codex"):  # what the control plane knows of them holds on the VM
        assert catalog.get(name).mcp_transports == builtin_agents()[name].mcp_transports
        # and what the daemon knows of them: claude's signal of a cut answer
        cut = builtin_agents()[name].empty_usage_means_cut
        assert catalog.get(name).empty_usage_means_cut is cut is (name == "claude")
    assert catalog.get("claude").env["CLAUDE_CODE_MAX_RETRIES"] == "4"


def test_gemini_keeps_its_acp_flag() -> None:
    agents = {"bundle": {"url": BUNDLE_URL, "sha256": BUNDLE_SHA}, "names": ("gemini",)}
    content = files_by_path(rendered(agents=agents))[AGENTS_FILE]["content"]
    assert tomllib.loads(content)["agents"]["gemini"]["command"] == [
        "/opt/vm-agent-agents/bin/gemini",
        "--acp",
    ]
    assert tomllib.loads(content)["agents"]["gemini"]["model_env"] == "GEMINI_MODEL"


def test_a_private_ca_is_trusted_for_the_control_plane_only_and_only_when_given() -> None:
    plain = rendered()
    assert CONTROL_PLANE_CA_FILE not in plain
    assert "--cacert" in step_scripts(plain)["vm-agent"]  # unused: ca_file is empty
    assert "\nca_file=''\n" in step_scripts(plain)["vm-agent"]
    with_ca = rendered(ca_certificate=TEST_CA)
    # not system-wide (cloud-init's ca_certs): agents keep the image's trust
    assert "ca_certs" not in yaml.safe_load(with_ca)
    files = files_by_path(with_ca)
    ca = files[CONTROL_PLANE_CA_FILE]
    assert (ca["content"], ca["permissions"], ca["owner"]) == (TEST_CA, "0644", "root:root")
    assert f"VM_AGENT_CONTROL_PLANE_CA_FILE={CONTROL_PLANE_CA_FILE}\n" in files[ENV_FILE]["content"]
    for step in ("vm-agent", "agents"):
        assert f"\nca_file={CONTROL_PLANE_CA_FILE}\n" in step_scripts(with_ca)[step]


def test_the_unit_is_embedded_byte_for_byte() -> None:
    unit = files_by_path(rendered())[UNIT_FILE]
    assert unit["content"].encode("utf-8") == UNIT_SOURCE.read_bytes()
    # The package data (a symlink in a checkout, a copy in a wheel) is the same file.
    packaged = resources.files("cloud_init").joinpath("vm-agent.service").read_bytes()
    assert packaged == UNIT_SOURCE.read_bytes()


def test_file_modes_and_owners() -> None:
    text = rendered()
    files = files_by_path(text)
    steps = {f"{PROVISION_DIR}/{name}.sh": ("0700", "root:root") for name in ALL_STEPS}
    assert {path: (f["permissions"], f["owner"]) for path, f in files.items()} == {
        ENV_FILE: ("0600", "root:root"),
        TOKEN_FILE: ("0600", "root:root"),
        UNIT_FILE: ("0644", "root:root"),
        FIREWALL_UNIT_FILE: ("0644", "root:root"),
        RULES_FILE: ("0644", "root:root"),
        AGENTS_FILE: ("0644", "root:root"),
        **steps,
    }
    # Quoted in the YAML: an unquoted 0600 would be read as an octal integer.
    assert text.count("permissions: '0600'") == 2
    assert text.count("permissions: '0700'") == len(ALL_STEPS)


def test_the_bootstrap_token_is_only_in_its_0600_file_and_no_callback_token_anywhere() -> None:
    text = rendered()
    assert text.count(TOKEN) == 1
    assert files_by_path(text)[TOKEN_FILE]["content"] == TOKEN + "\n"
    assert TOKEN_FILE == "/etc/vm-agent/bootstrap-token"
    for path, entry in files_by_path(text).items():
        if path != TOKEN_FILE:
            assert TOKEN not in entry["content"]
    # No JWT of any kind (a callback token is one) is in the document.
    assert not re.search(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.", text)


def test_nothing_is_written_under_tmp() -> None:
    text = rendered()
    assert all(not path.startswith("/tmp") for path in files_by_path(text))
    assert "/tmp" not in text
    for name in ("vm-agent", "agents"):
        assert "work=/var/lib/vm-agent-install/" in step_scripts(text)[name]
    assert 'export TMPDIR="$work"' in step_scripts(text)["vm-agent"]


def test_largest_valid_parameters_stay_under_the_limit() -> None:
    long_path = "/" + "p" * 1900
    text = rendered(
        node_id="n" * 63,
        hostname="h" * 63,
        control_plane_url=PLANE + long_path,
        jwks_url=PLANE + long_path,
        bootstrap_token="t" * 256,
        wheelhouse={"url": PLANE + long_path + "/w.tar", "sha256": "0" * 64},
        agents={
            "bundle": {"url": PLANE + long_path + "/a.tar.gz", "sha256": "0" * 64},
            "names": ("claude", "codex", "gemini"),
        },
        ca_certificate=TEST_CA,
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
