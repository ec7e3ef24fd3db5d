"""Command-line flags of the fake agent, each also readable from `FAKE_AGENT_<FLAG>`.

Kept free of anyio and I/O apart from reading the environment mapping it is given,
so start-up stays cheap and parsing is testable on its own.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

SCENARIOS: tuple[str, ...] = (
    "echo",
    "tools",
    "slow",
    "crash-mid-prompt",
    "sigkill-mid-prompt",
    "hang",
    "ignore-cancel",
    "close-stdout",
    "garbage-lines",
    "huge-line",
    "stderr-flood",
    "auth-required",
    "no-load",
    "load-replay",
    "crash-on-load",
    "exit-on-start",
    "flood",
    "spawns-children",
    "env",
    "prompt-error",
    "hostile",
    "commit",
    "provider-error",
    "tool-then-provider-error",
)

# Scenarios that stream with a pause by default; every other one streams at full speed.
_SLOW_BY_DEFAULT = frozenset({"slow", "ignore-cancel"})
# Scenarios whose crash `--once` limits to the first time per state directory.
ONCE_SCENARIOS = frozenset(
    {"crash-mid-prompt", "sigkill-mid-prompt", "no-load", "crash-on-load", "exit-on-start"}
)
ENV_PREFIX = "FAKE_AGENT_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """The flags or environment do not describe a runnable agent."""


@dataclass(frozen=True, slots=True)
class Config:
    scenario: str
    chunks: int = 3
    delay_ms: int = 0
    after_chunks: int = 2
    exit_code: int = 1
    count: int = 1000
    size: int = 40
    line_mb: float = 4.0
    stderr_bytes: int = 4 * 1024 * 1024
    stderr_text: str | None = None
    children: int = 2
    pid_file: str | None = None
    state_dir: str | None = None
    once: bool = False
    resume: bool = False  # advertise and serve session/resume (a load without replay)
    modes: bool = False  # offer session modes and a config option, and take changes of them
    timestamps: bool = False  # put the send time in each update's _meta (latency benchmarks)
    auth_on: str | None = None  # refuse this method with -32000 (as codex-acp without a key)
    hang_on: str | None = None  # never answer this method (a start that hangs)
    usage: str | None = None  # report usage after each turn: "good" or "bad" (hostile numbers)
    close: bool = False  # advertise and answer session/close (recorded in --state-dir)
    record: str | None = None  # append what it was given to this file (record.py)
    no_load: bool = False  # advertise no loadSession, whatever the scenario
    fail_times: int = 1  # provider-error: prompts that fail before one succeeds
    fail_status: int = 529  # provider-error: the provider's HTTP status (529 or 429)
    retry_after: float | None = None  # provider-error: "Please try again in Ns." in the message


@dataclass(frozen=True, slots=True)
class _Option:
    flag: str
    convert: Callable[[str], object]
    help: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must not be negative: {value}")
    return value


START_METHODS = ("initialize", "session/new", "session/load")


def _start_method(text: str) -> str:
    if text not in START_METHODS:
        raise ValueError(f"must be one of {', '.join(START_METHODS)}")
    return text


USAGE_KINDS = ("good", "bad")


def _hang_method(text: str) -> str:
    if text not in (*START_METHODS, "session/close"):
        raise ValueError(f"must be one of {', '.join(START_METHODS)}, session/close")
    return text


def _usage_kind(text: str) -> str:
    if text not in USAGE_KINDS:
        raise ValueError(f"must be one of {', '.join(USAGE_KINDS)}")
    return text


def _provider_status(text: str) -> int:
    if text not in ("529", "429"):
        raise ValueError("must be 529 or 429")
    return int(text)


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"must not be negative: {text}")
    return value


_OPTIONS: tuple[_Option, ...] = (
    _Option("--scenario", str, "scenario name (required unless FAKE_AGENT_SCENARIO)"),
    _Option("--chunks", _non_negative_int, "echo chunks per prompt (default 3)"),
    _Option("--delay-ms", _non_negative_int, "pause between chunks (100 for slow, else 0)"),
    _Option("--after-chunks", _non_negative_int, "chunks before a crash (default 2)"),
    _Option("--exit-code", int, "exit code of crashes and exit-on-start (default 1)"),
    _Option("--count", _non_negative_int, "flood: number of updates (default 1000)"),
    _Option("--size", _non_negative_int, "flood: text bytes per update (default 40)"),
    _Option("--line-mb", _non_negative_float, "huge-line: MiB of text (default 4)"),
    _Option("--stderr-bytes", _non_negative_int, "stderr-flood: bytes (default 4 MiB)"),
    _Option("--stderr-text", str, "text written to stderr at the start of each prompt"),
    _Option("--children", _non_negative_int, "spawns-children: grandchildren (default 2)"),
    _Option("--pid-file", str, "spawns-children: file receiving grandchild pids"),
    _Option(
        "--state-dir",
        os.path.expanduser,  # '~/...': the agent user's own HOME, as real agents keep theirs
        "directory keeping session transcripts (a leading ~ is the agent's HOME)",
    ),
    _Option("--auth-on", _start_method, "refuse session/new or session/load with -32000"),
    _Option("--hang-on", _hang_method, "never answer a start method (or session/close)"),
    _Option("--usage", _usage_kind, "report usage each turn: good, or bad (hostile numbers)"),
    _Option("--record", str, "file getting a JSON line for each session or settings method"),
    _Option("--fail-times", _non_negative_int, "provider-error: prompts that fail (default 1)"),
    _Option("--fail-status", _provider_status, "provider-error: 529 (default) or 429"),
    _Option("--retry-after", _non_negative_float, "provider-error: the wait the error asks"),
)


# On/off flags: `--flag`, or FAKE_AGENT_<FLAG>=1|0 from the environment.
_SWITCHES: tuple[tuple[str, str], ...] = (
    ("--resume", "advertise sessionCapabilities.resume and answer session/resume"),
    ("--once", "crash scenarios crash only the first time per --state-dir"),
    ("--modes", "offer modes (ask, code) and a config option (model), answer set_mode/_config"),
    ("--no-load", "advertise no loadSession (a session that cannot go to a new process)"),
    ("--timestamps", "put time.time() of each update's send in its _meta (vm_agent/sent_at)"),
    (
        "--close",
        "advertise sessionCapabilities.close; each session/close leaves a file closed-<id>",
    ),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fake-agent",
        description="Deterministic ACP agent speaking line-delimited JSON-RPC on stdio.",
        epilog="Every flag can also come from FAKE_AGENT_<FLAG> (e.g. FAKE_AGENT_DELAY_MS); "
        "a flag wins over the environment. Scenarios: " + ", ".join(SCENARIOS),
    )
    for option in _OPTIONS:
        parser.add_argument(option.flag, dest=option.dest, default=None, help=option.help)
    for flag, help_text in _SWITCHES:
        parser.add_argument(flag, action="store_true", default=None, help=help_text)
    return parser


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Build a Config from flags, falling back to `FAKE_AGENT_*` variables, then defaults."""
    args = vars(_parser().parse_args(list(argv)))
    values: dict[str, object] = {}
    for option in _OPTIONS:
        raw = args[option.dest]
        source = option.flag
        if raw is None and option.env in environ:
            raw, source = environ[option.env], option.env
        if raw is None:
            continue
        try:
            values[option.dest] = option.convert(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: invalid value {raw!r} ({exc})") from None
    for flag, _ in _SWITCHES:
        dest = flag.removeprefix("--").replace("-", "_")
        switch = args[dest]
        env_name = ENV_PREFIX + dest.upper()
        if switch is None and env_name in environ:
            switch = _parse_bool(env_name, environ[env_name])
        values[dest] = bool(switch)

    scenario = values.pop("scenario", None)
    if scenario is None:
        raise ConfigError("--scenario (or FAKE_AGENT_SCENARIO) is required")
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    values.setdefault("delay_ms", 100 if scenario in _SLOW_BY_DEFAULT else 0)
    config = Config(scenario=str(scenario), **values)  # type: ignore[arg-type]
    _check(config)
    return config


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}: invalid value {text!r} (use 1 or 0)")


def _check(config: Config) -> None:
    if config.scenario == "load-replay" and not config.state_dir:
        raise ConfigError("scenario load-replay needs --state-dir (or FAKE_AGENT_STATE_DIR)")
    if config.once and not config.state_dir:
        raise ConfigError("--once needs --state-dir (the marker file lives there)")
    if config.auth_on == "initialize":
        raise ConfigError("--auth-on: initialize needs no authentication in ACP")
