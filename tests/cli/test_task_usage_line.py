"""`vm-agent task show|follow` say a task's usage in words (the view's `usage`)."""

from __future__ import annotations

from typing import Any

import pytest

from vm_agent.cli.task import usage_line


@pytest.mark.parametrize(
    ("view", "line"),
    [
        ({}, None),
        ({"usage": {}}, None),
        ({"usage": "lots"}, None),
        (
            {
                "usage": {
                    "inputTokens": 12,
                    "outputTokens": 5,
                    "cachedReadTokens": 0,
                    "totalTokens": 17,
                    "cost": {"USD": 0.000111},
                }
            },
            "   usage: 17 tokens (12 in, 5 out, 0 cached) 0.000111 USD",
        ),
        ({"usage": {"cost": {"USD": 0.5, "EUR": 1.25}}}, "   usage: 1.25 EUR 0.5 USD"),
        ({"usage": {"inputTokens": 3}}, "   usage: (3 in)"),
        ({"usage": {"thoughtTokens": 3}}, None),
    ],
)
def test_usage_line(view: dict[str, Any], line: str | None) -> None:
    assert usage_line(view) == line
