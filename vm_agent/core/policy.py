"""A session's deadlines, budgets and backoff: the numbers the machine decides with."""

from __future__ import annotations

from dataclasses import dataclass, field

from vm_agent.core.provider_errors import RetryPolicy


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    prompt_timeout_s: float | None = None
    no_output_timeout_s: float | None = None
    cancel_grace_s: float = 5.0
    restart_budget: int = 3
    restart_window_s: float = 300.0
    min_uptime_s: float = 3.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # Prompts failed by a transient model-provider error (issue 25); not crash recovery.
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # The session's agent ends a turn the provider cut mid-stream as a whole one, its usage
    # counting no tokens: its catalog entry says so (AgentSpec.empty_usage_means_cut).
    empty_usage_means_cut: bool = False

    def backoff(self, restarts_in_window: int) -> float:
        """Zero for the first restart in the window, then doubling up to the cap."""
        if restarts_in_window <= 0:
            return 0.0
        return float(min(self.backoff_max_s, self.backoff_base_s * 2 ** (restarts_in_window - 1)))
