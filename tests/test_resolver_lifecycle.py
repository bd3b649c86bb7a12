"""The probes' resolver pool: no thread at import, started by the first lookup, stopped with the
service that ran the probes (AgentService.stop → probes.net.close_resolver)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from tests.helpers.agent_fixtures import running_agent
from tests.helpers.peers import echo_scp, wait_until

ROOT = Path(__file__).resolve().parents[1]


def dns_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dns") and t.is_alive()]


def test_importing_the_probes_starts_no_thread() -> None:
    code = (
        "import threading, probes.net, probes.dicom_echo, probes.http_timing; "
        "print(','.join(t.name for t in threading.enumerate()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MainThread"


def test_stopping_the_service_stops_the_resolver_pool() -> None:
    with echo_scp() as port:
        target = {
            "id": "by-name",
            "config": {"host": "localhost", "port": port, "calledAET": "SECTRA_PACS"},
            "healthCheck": {"interval": 1000, "timeout": 1000},
            "probes": {"dicom_find": {"enabled": False}},
        }
        with running_agent([target]):
            # a name, not an address: the first run resolves it on the pool
            wait_until(dns_threads, 10, what="a lookup on the resolver pool")
        wait_until(lambda: not dns_threads(), 5, what="the resolver pool stopped with the service")
