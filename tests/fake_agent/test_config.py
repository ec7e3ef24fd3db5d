from __future__ import annotations

import pytest

from vm_agent.fake_agent.config import SCENARIOS, Config, ConfigError, parse_config
from vm_agent.fake_agent.turn import prompt_text, split_text


def test_defaults() -> None:
    config = parse_config(["--scenario", "echo"], {})
    assert config == Config(scenario="echo")
    assert config.chunks == 3
    assert config.delay_ms == 0
    assert config.stderr_bytes == 4 * 1024 * 1024


@pytest.mark.parametrize("scenario", ["slow", "ignore-cancel"])
def test_slow_scenarios_default_to_100_ms(scenario: str) -> None:
    assert parse_config(["--scenario", scenario], {}).delay_ms == 100


def test_environment_fills_in_and_flags_win() -> None:
    env = {
        "FAKE_AGENT_SCENARIO": "slow",
        "FAKE_AGENT_DELAY_MS": "7",
        "FAKE_AGENT_CHUNKS": "5",
        "FAKE_AGENT_STATE_DIR": "/tmp/x",
        "FAKE_AGENT_ONCE": "1",
        "FAKE_AGENT_LINE_MB": "0.5",
    }
    config = parse_config(["--chunks", "9"], env)
    assert config.scenario == "slow"
    assert config.delay_ms == 7
    assert config.chunks == 9
    assert config.once is True
    assert config.line_mb == 0.5
    assert parse_config(["--scenario", "echo"], env).scenario == "echo"


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        ([], {}, "required"),
        (["--scenario", "nope"], {}, "unknown scenario"),
        (["--scenario", "echo", "--chunks", "-1"], {}, "--chunks"),
        (["--scenario", "echo"], {"FAKE_AGENT_COUNT": "many"}, "FAKE_AGENT_COUNT"),
        (["--scenario", "load-replay"], {}, "--state-dir"),
        (["--scenario", "crash-mid-prompt", "--once"], {}, "--state-dir"),
        (["--scenario", "echo"], {"FAKE_AGENT_ONCE": "maybe"}, "FAKE_AGENT_ONCE"),
        (["--scenario", "echo", "--auth-on", "session/prompt"], {}, "--auth-on"),
        (["--scenario", "echo", "--auth-on", "initialize"], {}, "no authentication"),
        (["--scenario", "echo", "--hang-on", "fs/read"], {}, "--hang-on"),
    ],
)
def test_errors(argv: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config(argv, env)


def test_every_scenario_parses() -> None:
    for scenario in SCENARIOS:
        parse_config(["--scenario", scenario, "--state-dir", "/tmp/unused"], {})


def test_split_text_keeps_the_text_and_the_count() -> None:
    assert split_text("abcdefgh", 3) == ["abc", "def", "gh"]
    assert split_text("hi", 3) == ["h", "i", ""]
    assert split_text("x", 0) == []
    assert "".join(split_text("héllo wörld ✓", 4)) == "héllo wörld ✓"


def test_prompt_text_joins_text_blocks_only() -> None:
    blocks = [
        {"type": "text", "text": "a"},
        {"type": "image", "data": "..."},
        {"type": "text", "text": "b"},
        "junk",
    ]
    assert prompt_text(blocks) == "ab"


def test_switches_from_flags_and_environment() -> None:
    assert parse_config(["--scenario", "echo", "--timestamps"], {}).timestamps is True
    env = {"FAKE_AGENT_TIMESTAMPS": "1", "FAKE_AGENT_RESUME": "yes"}
    config = parse_config(["--scenario", "echo"], env)
    assert (config.timestamps, config.resume, config.once) == (True, True, False)
    with pytest.raises(ConfigError, match="FAKE_AGENT_TIMESTAMPS"):
        parse_config(["--scenario", "echo"], {"FAKE_AGENT_TIMESTAMPS": "maybe"})
