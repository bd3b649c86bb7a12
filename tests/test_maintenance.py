"""Maintenance windows: config shapes, window arithmetic (one-off and cron), and a running agent's
pacs_target_maintenance, /health and status page, with probes going on during the window."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from agent.config import ConfigError, load_config_text
from agent.maintenance import schedule_from_config
from agent.simulator import SimulatedPACS
from tests.helpers import wait_until
from tests.helpers.agent_fixtures import base_url, running_agent, sample, scrape, total


def schedule(*windows: dict[str, Any]):  # noqa: ANN201
    doc = {"targets": [{"id": "t", "config": {"host": "x"}, "maintenance": list(windows)}]}
    loaded = load_config_text(json.dumps(doc), "<test>", {})
    return schedule_from_config(loaded.model.targets[0].maintenance)


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def test_one_off_window_is_half_open() -> None:
    s = schedule({"from": "2026-03-01T22:00:00Z", "to": "2026-03-02T02:00:00+00:00"})
    assert not s.active(utc(2026, 3, 1, 21, 59, 59))
    assert s.active(utc(2026, 3, 1, 22, 0, 0))
    assert s.active(utc(2026, 3, 2, 1, 59, 59))
    assert not s.active(utc(2026, 3, 2, 2, 0, 0))


def test_naive_times_are_utc_and_offsets_are_honoured() -> None:
    s = schedule({"from": "2026-03-01T22:00:00", "to": "2026-03-02T01:00:00+01:00"})
    assert s.active(utc(2026, 3, 1, 23, 30))  # 01:00+01:00 is 00:00 UTC
    assert not s.active(utc(2026, 3, 2, 0, 0))


def test_recurring_cron_window() -> None:
    # Sundays 02:00 for 2 hours (2026-11-29 is a Sunday)
    s = schedule({"cron": "0 2 * * sun", "duration": "2h"})
    assert not s.active(utc(2026, 11, 29, 1, 59))
    assert s.active(utc(2026, 11, 29, 2, 0))
    assert s.active(utc(2026, 11, 29, 3, 59, 59))
    assert not s.active(utc(2026, 11, 29, 4, 0))
    assert not s.active(utc(2026, 11, 30, 2, 30))  # Monday
    assert s.active(utc(2026, 12, 6, 2, 30))  # next Sunday


def test_cron_window_in_a_time_zone() -> None:
    s = schedule({"cron": "0 2 * * *", "duration": 1800000, "timezone": "Europe/Stockholm"})
    assert s.active(utc(2026, 7, 1, 0, 15))  # 02:15 CEST
    assert not s.active(utc(2026, 7, 1, 2, 15))


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"cron": "not a cron", "duration": "1h"}, "invalid cron"),
        ({"cron": "0 2 * * *"}, "recurring window"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "later than"),
        ({"from": "2026-01-01T00:00:00Z"}, "{from, to}"),
        (
            {
                "from": "2026-01-01T00:00:00Z",
                "to": "2026-01-02T00:00:00Z",
                "cron": "0 2 * * *",
                "duration": "1h",
            },
            "recurring window",
        ),
        ({"cron": "0 2 * * *", "duration": "1h", "timezone": "Mars/Olympus"}, "timezone"),
        ({"from": "yesterday", "to": "2026-01-02T00:00:00Z"}, "datetime"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}, "start"),
    ],
)
def test_bad_windows_are_refused(window: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        schedule(window)
    assert message in str(e.value) and "maintenance[0]" in str(e.value)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_running_agent_reports_the_window_and_keeps_probing() -> None:
    now = datetime.now(UTC)
    with SimulatedPACS() as sim:
        maint = sim.endpoint_config("pacs-maint", interval_ms=1000)
        maint["maintenance"] = [
            {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(hours=1))}
        ]
        free = sim.endpoint_config("pacs-free", interval_ms=1000)
        free["maintenance"] = [
            {"from": iso(now - timedelta(days=2)), "to": iso(now - timedelta(days=1))},
            {"cron": f"0 0 1 {(now.month + 5) % 12 + 1} *", "duration": "1m"},
        ]
        closing = sim.endpoint_config("pacs-closing", interval_ms=1000)
        closing["maintenance"] = [
            {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(seconds=4))}
        ]
        with running_agent([maint, free, closing], {"selfProbe": {"enabled": False}}) as svc:
            s = scrape(svc)
            assert sample(s, "pacs_target_maintenance", target="pacs-maint") == 1.0
            assert sample(s, "pacs_target_maintenance", target="pacs-free") == 0.0
            # probes go on and record during the window
            wait_until(
                lambda: total(scrape(svc), "pacs_probe_runs_total", target="pacs-maint") >= 3,
                20,
                what="runs recorded during maintenance",
            )
            health = httpx.get(base_url(svc) + "/health", timeout=5).json()
            flags = {t["id"]: t["maintenance"] for t in health["targets"]}
            assert flags["pacs-maint"] is True and flags["pacs-free"] is False
            page = httpx.get(base_url(svc) + "/", timeout=5).text
            section = page[page.index('id="t-pacs-maint"') :]
            section = section[: section.index("</section>")]
            assert "MAINTENANCE" in section and "planned maintenance window" in section
            free_section = page[page.index('id="t-pacs-free"') :]
            assert "MAINTENANCE" not in free_section[: free_section.index("</section>")]
            # a window closes on its own, without a reload
            wait_until(
                lambda: (
                    sample(scrape(svc), "pacs_target_maintenance", target="pacs-closing") == 0.0
                ),
                15,
                what="the closing window to close",
            )
            health = httpx.get(base_url(svc) + "/health", timeout=5).json()
            assert {t["id"]: t["maintenance"] for t in health["targets"]}["pacs-closing"] is False


def test_thresholds_are_exported_per_target() -> None:
    with SimulatedPACS() as sim:
        fast = sim.endpoint_config(
            "pacs-fast", interval_ms=5000, degradedLatency=500, certExpiryWarningDays=30
        )
        default = sim.endpoint_config("pacs-default", interval_ms=5000)
        with running_agent([fast, default], {"selfProbe": {"enabled": False}}) as svc:
            s = scrape(svc)
    assert sample(s, "pacs_target_degraded_latency_seconds", target="pacs-fast") == 0.5
    assert sample(s, "pacs_target_degraded_latency_seconds", target="pacs-default") == 2.0
    assert sample(s, "pacs_target_cert_expiry_warning_seconds", target="pacs-fast") == 30 * 86400
    assert sample(s, "pacs_target_cert_expiry_warning_seconds", target="pacs-default") == (
        14 * 86400
    )


def test_otlp_carries_maintenance_and_thresholds() -> None:
    from tests.helpers.otlp_receiver import GrpcReceiver

    now = datetime.now(UTC)
    with SimulatedPACS() as sim, GrpcReceiver() as rx:
        maint = sim.endpoint_config("pacs-maint", interval_ms=5000, degradedLatency=750)
        maint["maintenance"] = [
            {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(hours=1))}
        ]
        free = sim.endpoint_config("pacs-free", interval_ms=5000)
        otlp = {"endpoint": rx.endpoint, "protocol": "grpc", "interval": 300}
        with running_agent([maint, free], {"selfProbe": {"enabled": False}, "otlp": otlp}):

            def exported() -> dict[str, dict[str, float]] | None:
                out = {}
                for name in (
                    "pacs.target.maintenance",
                    "pacs.target.degraded_latency",
                    "pacs.target.cert_expiry_warning",
                ):
                    pts = rx.latest(name)
                    if len(pts) < 2:
                        return None
                    out[name] = {p.attributes["target"]: p.value for p in pts}
                return out

            got = wait_until(exported, 20, what="an OTLP export with the target settings")
    assert got["pacs.target.maintenance"] == {"pacs-maint": 1, "pacs-free": 0}
    assert got["pacs.target.degraded_latency"] == {"pacs-maint": 0.75, "pacs-free": 2.0}
    assert got["pacs.target.cert_expiry_warning"]["pacs-free"] == 14 * 86400


def test_probe_once_reports_the_window() -> None:
    from agent.cli_probe import run_once
    from agent.redaction import Redactor
    from agent.targets import build_plan

    now = datetime.now(UTC)
    with SimulatedPACS() as sim:
        maint = sim.endpoint_config("pacs-maint")
        maint["maintenance"] = [
            {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(hours=1))}
        ]
        doc = {"targets": [maint, sim.endpoint_config("pacs-free")]}
        loaded = load_config_text(json.dumps(doc), "<test>", {})
        plans = [build_plan(t) for t in loaded.model.targets]
        result = run_once(plans, Redactor(), "dicom_echo")
    flags = {t["id"]: t["maintenance"] for t in result["targets"]}
    assert flags == {"pacs-maint": True, "pacs-free": False}
    assert result["status"] == "HEALTHY"  # the window marks the target, it does not change state


def test_book_answers_for_every_target_and_asks_only_those_with_windows() -> None:
    from agent.maintenance import MaintenanceBook, Schedule

    class Counting(Schedule):
        asked = 0

        def active(self, now: datetime | None = None) -> bool:
            Counting.asked += 1
            return super().active(now)

    book = MaintenanceBook()
    on = schedule({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"})
    book.install({"a": Counting(), "b": Counting(on.windows), "c": Counting()})
    assert book.active(utc(2026, 1, 1, 12)) == {"a": False, "b": True, "c": False}
    assert Counting.asked == 1  # a and c have no window: not asked
    assert book.active(utc(2026, 1, 3)) == {"a": False, "b": False, "c": False}


def test_scrapes_hand_on_only_a_change_of_window() -> None:
    from agent.maintenance import MaintenanceBook
    from agent.observation import Maintenance

    now = datetime.now(UTC)
    with SimulatedPACS() as sim:
        free = sim.endpoint_config("pacs-free", interval_ms=60_000)
        with running_agent([free], {"selfProbe": {"enabled": False}}) as svc:
            emitted: list[Maintenance] = []
            emit = svc.pipeline.emit

            def spy(ev: Any) -> None:
                if isinstance(ev, Maintenance):
                    emitted.append(ev)
                emit(ev)

            svc.pipeline.emit = spy  # type: ignore[method-assign]
            for _ in range(3):
                assert sample(scrape(svc), "pacs_target_maintenance", target="pacs-free") == 0.0
            assert emitted == []  # nothing changed: the evaluator and exporters were not told
            # a window opens (as time passing into one would): the next scrape shows it
            book: MaintenanceBook = svc.maintenance
            book.install({"pacs-free": schedule(
                {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(hours=1))}
            )})
            assert sample(scrape(svc), "pacs_target_maintenance", target="pacs-free") == 1.0
            assert [e.active for e in emitted] == [{"pacs-free": True}]
            health = httpx.get(base_url(svc) + "/health", timeout=5).json()
            assert health["targets"][0]["maintenance"] is True
            assert len(emitted) == 1
