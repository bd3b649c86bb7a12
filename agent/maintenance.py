"""Maintenance windows: is a target in a planned change window right now?

A target's `maintenance:` list holds one-off windows (`{from, to}`, ISO 8601) and recurring ones
(`{cron, duration}`, a five-field crontab in UTC unless `timezone` says otherwise). Probes go on
running and recording during a window; only the `pacs_target_maintenance` gauge, /health, the
status page and (through that gauge) the shipped alert rules change.

Recurring windows use APScheduler's CronTrigger, already a dependency for the scheduler, rather
than a second cron library. A window is open at `now` if the first firing at or after
`now - duration` is not later than `now`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.triggers.cron import CronTrigger

if TYPE_CHECKING:
    from agent.config.schema import MaintenanceWindow


def cron_trigger(expr: str, timezone: str | None = None) -> CronTrigger:
    """A CronTrigger for a five-field crontab; ValueError when it does not parse."""
    return CronTrigger.from_crontab(expr, timezone=timezone or UTC)


def aware(dt: datetime) -> datetime:
    """Naive timestamps in the config are UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class OneOff:
    start: datetime
    end: datetime

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class Recurring:
    trigger: CronTrigger
    duration: timedelta

    def active(self, now: datetime) -> bool:
        fire = self.trigger.get_next_fire_time(None, now - self.duration)
        return fire is not None and fire <= now < fire + self.duration


Window = OneOff | Recurring


class Schedule:
    """A target's windows; `active()` is cheap for targets without any."""

    def __init__(self, windows: Iterable[Window] = ()) -> None:
        self.windows = tuple(windows)

    def active(self, now: datetime | None = None) -> bool:
        if not self.windows:
            return False
        now = now or datetime.now(UTC)
        return any(w.active(now) for w in self.windows)


def schedule_from_config(items: Iterable[MaintenanceWindow]) -> Schedule:
    windows: list[Window] = []
    for w in items:
        if w.cron is not None and w.duration is not None:
            windows.append(
                Recurring(cron_trigger(w.cron, w.timezone), timedelta(seconds=w.duration))
            )
        elif w.start is not None and w.end is not None:
            windows.append(OneOff(aware(w.start), aware(w.end)))
    return Schedule(windows)


class MaintenanceBook:
    """Every installed target's schedule; the service swaps it on reload."""

    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}
        self._windowed: dict[str, Schedule] = {}  # the few targets that have windows at all

    def install(self, schedules: dict[str, Schedule]) -> None:
        self._schedules = dict(schedules)
        self._windowed = {t: s for t, s in schedules.items() if s.windows}

    def active(self, now: datetime | None = None) -> dict[str, bool]:
        """target id → in a window now, for every installed target (asked before every scrape:
        the targets without windows cost no call each)."""
        out = dict.fromkeys(self._schedules, False)
        if self._windowed:
            now = now or datetime.now(UTC)
            for t, s in self._windowed.items():
                out[t] = s.active(now)
        return out


__all__ = [
    "MaintenanceBook",
    "OneOff",
    "Recurring",
    "Schedule",
    "aware",
    "cron_trigger",
    "schedule_from_config",
]
