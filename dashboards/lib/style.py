"""Colours, thresholds and value mappings the panels share: what a number looks like."""

from __future__ import annotations

from typing import Any

DEGRADED_LATENCY = 2  # seconds: the integration guide's degradedLatency, as in the alert rules

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"
GREY = "#8e8e8e"  # UNKNOWN: no result yet, neither good nor bad


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def value_map(*entries: tuple[int, str, str]) -> list[dict[str, Any]]:
    return [
        {
            "type": "value",
            "options": {
                str(value): {"text": text, "color": color, "index": i}
                for i, (value, text, color) in enumerate(entries)
            },
        }
    ]


# State codes in the agent's own order of severity (worst target wins).
STATE_MAP = value_map(
    (0, "HEALTHY", GREEN), (1, "UNKNOWN", GREY), (2, "DEGRADED", ORANGE), (3, "UNHEALTHY", RED)
)
STATE_THRESHOLDS = thresholds((GREEN, None), (GREY, 1), (ORANGE, 2), (RED, 3))
CHECK_MAP = value_map((0, "PASS", GREEN), (1, "WARN", ORANGE), (2, "FAIL", RED))
SUCCESS_MAP = value_map((0, "FAILED", RED), (1, "OK", GREEN))
ENDPOINT_MAP = value_map((0, "primary", GREEN), (1, "secondary", ORANGE))
UP_MAP = value_map((0, "DOWN", RED), (1, "UP", GREEN))
ACCEPTED_MAP = value_map((0, "REFUSED", RED), (1, "accepted", GREEN))
RELOAD_MAP = value_map((0, "FAILED", RED), (1, "OK", GREEN))
MAINTENANCE_MAP = value_map((0, "no window", GREEN), (1, "MAINTENANCE", BLUE))
CODE_THRESHOLDS = thresholds((GREEN, None), (ORANGE, 1), (RED, 2))

DAY = 86400
EXPIRY_STEPS = thresholds((RED, None), (ORANGE, 3 * DAY), (GREEN, 14 * DAY))
AVAILABILITY_STEPS = thresholds((RED, None), (ORANGE, 0.95), (GREEN, 0.99))
# Budget left: red when spent, orange in its last quarter. Burn rates: the alert factors.
BUDGET_STEPS = thresholds((RED, None), (ORANGE, 0), (GREEN, 0.25))
BURN_STEPS = thresholds((GREEN, None), (ORANGE, 1), (RED, 6))
