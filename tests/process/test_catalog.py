"""The catalog's signal of a cut answer (``empty_usage_means_cut``): measured for claude
only, read from an agents file, and given to a session's policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from vm_agent.process.catalog import Catalog, CatalogError, builtin_agents
from vm_agent.session.config import SessionConfig


def test_only_the_built_in_claude_declares_it() -> None:
    declared = {name for name, spec in builtin_agents().items() if spec.empty_usage_means_cut}
    assert declared == {"claude"}


def test_an_agents_file_sets_it_and_it_defaults_to_false(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[agents.claude]\ncommand = ["/opt/claude-agent-acp"]\nempty_usage_means_cut = true\n'
        '[agents.other]\ncommand = ["/opt/other-acp"]\n'
    )
    catalog = Catalog.load(path)
    assert catalog.get("claude").empty_usage_means_cut is True
    assert catalog.get("other").empty_usage_means_cut is False


def test_a_value_that_is_no_boolean_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text('[agents.claude]\ncommand = ["/opt/x"]\nempty_usage_means_cut = "sometimes"\n')
    with pytest.raises(CatalogError, match=r"agents\.claude\.empty_usage_means_cut"):
        Catalog.load(path)


def test_a_session_s_policy_carries_its_agent_s_signal() -> None:
    config = SessionConfig()
    claude, codex = builtin_agents()["claude"], builtin_agents()["codex"]
    assert config.policy_for(claude).empty_usage_means_cut is True
    assert config.policy_for(codex) == config.policy  # the rest of the policy as it was
    assert config.policy_for(claude).retry == config.policy.retry
