"""Durations: parse what users write ("1d", "1.5h", "500ms", 90), show it back to humans and to PromQL.

One parser for every duration the ramp takes (step holds, analysis window, timeouts, poll
interval, deadline), so every argument accepts the same forms and fails with the same kind of
message: the argument's name, the value it got and what is allowed.

Accepted: a number of seconds (int or float, or a string holding one), or one or more
`<number><unit>` parts with units ms, s, m, h, d, w, largest first and each at most once
("1h30m", "1d 12h"), so that what format_duration prints parses back.
"""

from __future__ import annotations

import math
import re

from mirrorramp.errors import ConfigError

UNIT_SECONDS: dict[str, float] = {
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
# Largest first: the order parts must come in, as in Prometheus durations.
_UNIT_ORDER = ("w", "d", "h", "m", "s", "ms")
# `ms` before `m` and `s` in the alternation, or "500ms" would read as 500 minutes and an "s".
_PART_RE = re.compile(r"\s*(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>ms|[wdhms])")
_NUMBER_RE = re.compile(r"^\s*[+-]?(?:\d+(?:\.\d+)?|\.\d+)\s*$")

ALLOWED = "a duration such as 30s, 10m, 12h, 1d, 1.5h, 1h30m, 500ms (units ms, s, m, h, d, w) or a number of seconds"


def _fail(name: str, value: object, problem: str, allow_zero: bool) -> ConfigError:
    bound = ">= 0" if allow_zero else "> 0"
    return ConfigError(f"{name}: got {value!r} ({problem}), expected {ALLOWED} ({bound})")


def parse_duration(value: object, *, name: str = "duration", allow_zero: bool = False) -> float:
    """`value` in seconds (float).

    `name` is the argument as the user wrote it (e.g. "steps[2].hold"): every error names it,
    the value and the forms allowed. Zero is refused unless `allow_zero`, because a zero hold,
    window or timeout is nearly always a typo that would make the ramp race through its steps.
    Booleans are refused although Python counts them as numbers: `hold: yes` is a mistake.
    """
    if isinstance(value, bool) or value is None:
        raise _fail(name, value, "not a duration", allow_zero)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value, name, allow_zero)
    else:
        raise _fail(name, value, f"a {type(value).__name__}, not a duration", allow_zero)
    if not math.isfinite(seconds):
        raise _fail(name, value, "not a finite number", allow_zero)
    if seconds < 0:
        raise _fail(name, value, "negative", allow_zero)
    if seconds == 0 and not allow_zero:
        raise _fail(name, value, "zero", allow_zero)
    return seconds


def _parse_text(text: str, name: str, allow_zero: bool) -> float:
    stripped = text.strip()
    if not stripped:
        raise _fail(name, text, "empty", allow_zero)
    if _NUMBER_RE.match(stripped):
        return float(stripped)
    if stripped.startswith("-"):
        raise _fail(name, text, "negative", allow_zero)
    total = 0.0
    position = 0
    last_rank = -1
    while position < len(stripped):
        match = _PART_RE.match(stripped, position)
        if match is None:
            raise _fail(name, text, f"cannot read {stripped[position:]!r}", allow_zero)
        unit = match.group("unit")
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise _fail(name, text, f"unit {unit!r} out of order or repeated; write the largest first", allow_zero)
        last_rank = rank
        total += float(match.group("number")) * UNIT_SECONDS[unit]
        position = match.end()
        # A unit must end the part: "5min" or "3sec" is not "5m" + "in".
        if position < len(stripped) and stripped[position].isalpha():
            raise _fail(name, text, f"unknown unit in {stripped[match.start() :].strip()!r}", allow_zero)
    return total


def format_duration(seconds: float) -> str:
    """A compact human form: "1d 2h", "4m 10s", "45s", "1.5s", "500ms".

    At most the two largest units, because a reader wants "3h 12m left", not "3h 12m 7s left";
    the smaller units are cut off. Whole seconds are rounded (4m 9.97s reads "4m 10s").
    """
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        milliseconds = round(seconds * 1000)
        if milliseconds < 1000:
            return f"{max(milliseconds, 1)}ms"
    if seconds < 60:
        tenths = round(seconds, 1)
        if tenths < 60:
            return f"{tenths:g}s"
    remaining = round(seconds)
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        size = int(UNIT_SECONDS[unit])
        count, remaining = divmod(remaining, size)
        if parts:
            if count:
                parts.append(f"{count}{unit}")
            break
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


def prometheus_duration(seconds: float) -> str:
    """`seconds` as a PromQL range in whole seconds, at least "1s": 86400 -> "86400s".

    Rounded up, so a range never covers less than the period it stands for (a step's hold
    looked at over a shorter range could miss the first minutes of the step).
    """
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
        raise ConfigError(f"range: got {seconds!r}, expected a finite number of seconds >= 0")
    if seconds < 0:
        raise ConfigError(f"range: got {seconds!r}, expected a finite number of seconds >= 0")
    # The epsilon keeps float noise (3600.0000000001) from costing a whole extra second.
    return f"{max(1, math.ceil(seconds - 1e-9))}s"
