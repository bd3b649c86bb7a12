"""Series per (target, probe): at most 25 by default, the classic histogram only with
`agent.metrics.classicHistogram` (docs/scaling.md has the counts).

The exporter is fed one successful and one failed run of every probe kind with the phases that
kind reports against the simulator; every series is counted by its (target, probe) labels. With
the switch on, the same runs add exactly the histogram: 16 buckets, +Inf, _count and _sum. The
last test checks the same on a real agent's /metrics.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.prometheus_exporter import PrometheusExporter
from agent.prometheus_series import DURATION_BUCKETS
from agent.simulator import SimulatedPACS
from probes.base import Facts, ProbeResult, Reason, TLSInfo
from tests.helpers.agent_fixtures import base_url, running_agent, scrape, total
from tests.helpers.observe import info, observation
from tests.helpers.peers import wait_until

BUDGET = 25
HISTOGRAM = len(DURATION_BUCKETS) + 3  # the buckets, le="+Inf", _count, _sum
# The phases each kind reports against the simulator (plain TCP; TLS adds a `tls` phase).
PHASES: dict[str, tuple[str, ...]] = {
    "dicom_echo": ("connect", "associate", "dimse", "release"),
    "dicom_find": ("connect", "associate", "first_match", "dimse", "release"),
    "worklist": ("connect", "associate", "first_match", "dimse", "release"),
    "dicom_retrieve": ("connect", "associate", "first_image", "last_image", "release"),
    "dicom_store": ("connect", "associate", "store", "findable", "release"),
    "dicom_capabilities": ("connect", "associate", "release"),
    "failover": ("primary", "secondary"),
    "api_ping": ("connect", "first_byte", "transfer"),
    "viewer": ("connect", "first_byte", "transfer"),
    "dicomweb": ("connect", "first_byte", "transfer", "metadata"),
}
HTTP = {"api_ping", "viewer", "dicomweb"}
# Per (target, probe) whatever happens: probe_success, probe_duration_seconds, the last-run
# timestamp, 3 quantiles + _count + _sum, runs (success, failure), attempts, missed runs, out of
# range, check status (PASS, WARN, FAIL).
FIXED = 16


def runs(kind: str, tls: bool = False) -> list[ProbeResult]:
    """A failure with one reason (and, for a DICOM kind, the DIMSE status the PACS stated), then a
    successful run with the kind's phases: the most a probe shows (a failed run drops the
    phases it did not reach; its reason and status counters stay)."""
    phases = dict.fromkeys(PHASES[kind], 0.01)
    if tls:
        phases = {"tls": 0.01, **phases}
    cert = TLSInfo(2e9, 1.9e9, "TLS 1.3") if tls else None
    ok = ProbeResult("t", kind, True, None, "ok", phases, 0.05, ProbeResult.now(), tls=cert)
    if kind in HTTP:
        bad = ProbeResult("t", kind, False, Reason.HTTP_STATUS, "HTTP 503", {}, 0.02,
                          ProbeResult.now(), tls=cert)
    else:
        bad = ProbeResult("t", kind, False, Reason.DIMSE_STATUS, "status 0xA700", {}, 0.02,
                          ProbeResult.now(), tls=cert, facts=Facts(dicom_status="0xA700"))
    return [bad, ok]


def per_probe(text: str) -> Counter[tuple[str, str]]:
    """Series per (target, probe) in an exposition."""
    n: Counter[tuple[str, str]] = Counter()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if "target" in s.labels and "probe" in s.labels:
                n[(s.labels["target"], s.labels["probe"])] += 1
    return n


def exported(kind: str, classic: bool, tls: bool = False) -> str:
    ex = PrometheusExporter(classic_histogram=classic)
    ex.add_target(info("t", [kind]))
    for r in runs(kind, tls):
        ex.observe(observation(r, {0.5: 0.05, 0.95: 0.05, 0.99: 0.05}))
    return ex.render().decode()


@pytest.mark.parametrize("kind", sorted(PHASES))
def test_at_most_25_series_per_probe_by_default(kind: str) -> None:
    text = exported(kind, classic=False)
    n = per_probe(text)[("t", kind)]
    # the phases, one failure reason, one DICOM status (DICOM kinds)
    assert n == FIXED + len(PHASES[kind]) + 1 + (kind not in HTTP), text
    assert n <= BUDGET, f"{kind}: {n} series\n{text}"
    assert "pacs_probe_duration_seconds" not in text


@pytest.mark.parametrize("kind", sorted(PHASES))
def test_the_switch_adds_exactly_the_classic_histogram(kind: str) -> None:
    off, on = exported(kind, classic=False), exported(kind, classic=True)
    assert per_probe(on)[("t", kind)] == per_probe(off)[("t", kind)] + HISTOGRAM
    fams = {f.name: f for f in text_string_to_metric_families(on)}
    hist = fams["pacs_probe_duration_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert len(buckets) == len(DURATION_BUCKETS) + 1
    # one successful run of 50 ms: in every bucket from 0.05 up; the failed run is not counted
    assert buckets["0.025"] == 0.0 and buckets["0.05"] == 1.0 and buckets["+Inf"] == 1.0
    count = [s.value for s in hist.samples if s.name == "pacs_probe_duration_seconds_count"]
    assert count == [1.0]


def test_tls_adds_its_phase_and_three_certificate_series() -> None:
    """TLS is the one per-probe addition the budget above leaves out: +1 phase, +3 series."""
    for kind in ("dicom_echo", "api_ping"):
        plain, tls = exported(kind, classic=False), exported(kind, classic=False, tls=True)
        assert per_probe(tls)[("t", kind)] == per_probe(plain)[("t", kind)] + 4


def test_a_real_agent_exports_the_histogram_only_with_the_switch() -> None:
    """The simulator with all ten probes, once as configured by default, once with the switch:
    at most 25 series per (target, probe) on /metrics, and with the switch the histogram's 19
    on top for every probe that succeeded."""
    with SimulatedPACS() as sim:
        cfg = sim.endpoint_config("sim", interval_ms=500, imaging=True)
        for classic in (False, True):
            agent = {"metrics": {"classicHistogram": classic}}
            with running_agent([cfg], agent=agent) as svc:

                def all_succeeded(svc: object = svc) -> bool:
                    s = scrape(svc)  # type: ignore[arg-type]
                    return all(total(s, "pacs_probe_runs_total", probe=k, result="success") >= 1
                               for k in PHASES)

                wait_until(all_succeeded, 20, 0.1, "every probe kind succeeded once")
                text = httpx.get(base_url(svc) + "/metrics", timeout=5).text
            hist: Counter[tuple[str, str]] = Counter()
            rest: Counter[tuple[str, str]] = Counter()
            for fam in text_string_to_metric_families(text):
                for smp in fam.samples:
                    key = (smp.labels.get("target", ""), smp.labels.get("probe", ""))
                    if key[1]:
                        (hist if fam.name == "pacs_probe_duration_seconds" else rest)[key] += 1
            assert set(rest) == {("sim", k) for k in PHASES}
            over = {k: n for k, n in rest.items() if n > BUDGET}
            assert not over, f"over {BUDGET} series per probe (classic={classic}): {over}"
            assert hist == (dict.fromkeys(rest, HISTOGRAM) if classic else {}), hist
