"""The scale benchmark's workload and the figures each run is judged against."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MATPLOTLIB_PIN = "matplotlib==3.11.2"
PROBES = ("dicom_echo", "dicom_find", "api_ping")
INTERVAL = 30.0
PROBE_TIMEOUT_MS = 5000

# What each run is judged against
TARGET_EXECUTED = 0.999
TARGET_LATENESS_P99 = 0.250
TARGET_CPU = 0.50  # of one core
TARGET_RSS_MB = 200.0
TARGET_METRICS_P99 = 0.250
TARGET_HEALTH_P99 = 0.050
# the self-probe's median (the statistic PacsAgentSelfProbeOverheadHigh uses) within idle + 3 ms
TARGET_SELF_PROBE_EXTRA = 0.003


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
