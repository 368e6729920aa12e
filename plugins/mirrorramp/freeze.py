"""Freeze windows: times in which the ramp never moves the mirror up; rollbacks still happen.

Configured in group_vars as a list of windows, each with weekdays and/or an hour range, in UTC
(change freezes are usually stated in local time: `utc_offset` shifts a window, e.g. "+01:00"):

    mirror_ramp_freeze:
      - {name: weekend, days: [sat, sun]}
      - {name: evenings, hours: "18-08"}                 # 18:00 to 08:00, across midnight
      - {name: friday-afternoon, days: [fri], hours: "12-24", utc_offset: "+01:00"}

A window with both days and hours is frozen on those days within those hours (an hour range
across midnight belongs to the day it starts on). Pure functions: `now` is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mirrorramp.errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{1,2})-(\d{1,2})$")
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class FreezeWindow:
    name: str
    days: frozenset[int]  # 0 = Monday; empty = every day
    start_hour: int = 0
    end_hour: int = 24  # exclusive; smaller than start_hour: the window crosses midnight
    offset_minutes: int = 0

    def covers(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, tz=UTC) + timedelta(minutes=self.offset_minutes)
        hour, day = local.hour, local.weekday()
        if self.start_hour < self.end_hour:
            in_hours, start_day = self.start_hour <= hour < self.end_hour, day
        elif hour >= self.start_hour:
            in_hours, start_day = True, day
        else:  # the early hours belong to the window that started the day before
            in_hours, start_day = hour < self.end_hour, (day - 1) % 7
        return in_hours and (not self.days or start_day in self.days)


def parse_freeze_windows(raw: object) -> tuple[FreezeWindow, ...]:
    """Check and load the windows; ConfigError names the window, the key and what is allowed."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConfigError(f"freeze: got {type(raw).__name__}, expected a list of windows")
    windows = []
    for index, item in enumerate(raw):
        where = f"freeze[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: got {item!r:.60}, expected a mapping with days and/or hours")
        unknown = sorted(set(item) - {"name", "days", "hours", "utc_offset"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: name, days, hours, utc_offset")
        name = str(item.get("name") or where)
        if "days" not in item and "hours" not in item:
            raise ConfigError(f"{where} ({name}): give days, hours or both")
        days = _days(item.get("days", []), f"{where}.days")
        start, end = _hours(item.get("hours", "0-24"), f"{where}.hours")
        windows.append(FreezeWindow(name, days, start, end, _offset(item.get("utc_offset", "+00:00"), where)))
    return tuple(windows)


def frozen_by(windows: Sequence[FreezeWindow], now: float) -> str:
    """The name of the first window covering `now`, or "" when none does."""
    return next((window.name for window in windows if window.covers(now)), "")


def _days(value: object, where: str) -> frozenset[int]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"{where}: got {value!r:.60}, expected a list of {', '.join(DAYS)}")
    days = set()
    for day in value:
        key = str(day).strip().lower()[:3]
        if key not in DAYS or len(str(day).strip()) < 3:
            raise ConfigError(f"{where}: {day!r} is not a weekday; allowed: {', '.join(DAYS)}")
        days.add(DAYS.index(key))
    return frozenset(days)


def _hours(value: object, where: str) -> tuple[int, int]:
    match = _HOURS.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f'{where}: got {value!r:.60}, expected "START-END" in whole hours, e.g. "18-08"')
    start, end = int(match[1]), int(match[2])
    if not (0 <= start <= 23 and 0 <= end <= 24) or start == end:
        raise ConfigError(f"{where}: {value!r} must have START 0..23, END 0..24 and START != END")
    return start, end


def _offset(value: object, where: str) -> int:
    match = _OFFSET.match(str(value)) if isinstance(value, str) else None
    if not match or int(match[2]) > 14 or int(match[3]) >= 60:
        raise ConfigError(f'{where}.utc_offset: got {value!r:.40}, expected "+HH:MM" or "-HH:MM" (e.g. "+01:00")')
    minutes = int(match[2]) * 60 + int(match[3])
    return minutes if match[1] == "+" else -minutes
