"""The ramp plan: the user's `steps` list checked up front and turned into Steps.

Validated before anything is read or written, so a typo in the plan fails the task with a
message that points at the entry (`steps[2].percent`), the value and what is allowed, and the
mirror is never touched by a half-understood plan.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from mirrorramp.durations import parse_duration
from mirrorramp.errors import ConfigError
from mirrorramp.model import Step

STEP_KEYS = ("percent", "hold")
_PERCENT_TEXT_RE = re.compile(r"^\s*(?P<number>[+-]?(?:\d+(?:\.\d+)?|\.\d+))\s*%?\s*$")
PERCENT_ALLOWED = "a number with 0 < percent <= 100 (fractions allowed, e.g. 0.5)"


def parse_percent(value: object, *, name: str) -> float:
    """`value` as a mirror percentage: 0 < p <= 100, fractional allowed (Istio takes a double).

    Strings holding a number ("5", "2.5", "5%") are accepted because YAML and Jinja often hand
    numbers over as text. Zero is refused: a step that mirrors nothing is not a step.
    """
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{name}: got {value!r}, expected {PERCENT_ALLOWED}")
    if isinstance(value, int | float):
        percent = float(value)
    elif isinstance(value, str):
        match = _PERCENT_TEXT_RE.match(value)
        if match is None:
            raise ConfigError(f"{name}: got {value!r} (not a number), expected {PERCENT_ALLOWED}")
        percent = float(match.group("number"))
    else:
        raise ConfigError(f"{name}: got {value!r} (a {type(value).__name__}), expected {PERCENT_ALLOWED}")
    if not math.isfinite(percent) or percent <= 0 or percent > 100:
        raise ConfigError(f"{name}: got {value!r}, expected {PERCENT_ALLOWED}")
    return percent


def parse_steps(raw: object) -> tuple[Step, ...]:
    """The plan from `[{percent, hold}, ...]`; ConfigError naming `steps[i].<key>` on bad input.

    Percents must strictly increase: a ramp only goes up, and equal neighbours would make one
    step a silent no-op. Holds must be > 0: the hold is the time the gates watch a step.
    Unknown keys are refused, because a misspelt `hodl` would otherwise be ignored.
    """
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        raise ConfigError(f"steps: got {raw!r}, expected a non-empty list of {{percent, hold}}")
    if not raw:
        raise ConfigError("steps: got [], expected a non-empty list of {percent, hold}")
    steps: list[Step] = []
    for index, entry in enumerate(raw):
        where = f"steps[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: got {entry!r}, expected a mapping {{percent, hold}}")
        unknown = sorted(str(key) for key in entry if key not in STEP_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; a step has only percent and hold")
        for key in STEP_KEYS:
            if key not in entry:
                raise ConfigError(f"{where}.{key} is missing; a step needs percent and hold")
        percent = parse_percent(entry["percent"], name=f"{where}.percent")
        if steps and percent <= steps[-1].percent:
            raise ConfigError(
                f"{where}.percent: got {entry['percent']!r}, expected more than "
                f"steps[{index - 1}].percent ({steps[-1].percent:g}): percents must strictly increase"
            )
        hold = parse_duration(entry["hold"], name=f"{where}.hold")
        steps.append(Step(percent=percent, hold_seconds=hold))
    return tuple(steps)


def describe_steps(steps: Sequence[Step]) -> str:
    """The plan in one line for messages: "1% -> 5% -> 10% -> 20%"."""
    return " -> ".join(f"{step.percent:g}%" for step in steps)


def fingerprint(steps: Sequence[Step]) -> str:
    """The plan as exact, canonical text, stored with the ramp: "1%/86400s 5%/86400s".

    Exact (repr of the floats, seconds not rounded) so that any change of a percent or a hold
    is seen, and readable so that "plan changed" can say from what.
    """
    return " ".join(f"{_exact(step.percent)}%/{_exact(step.hold_seconds)}s" for step in steps)


def _exact(number: float) -> str:
    """repr, the shortest text that reads back as the same float, without a trailing ".0"."""
    text = repr(float(number))
    return text.removesuffix(".0")


def percents_of(fingerprint_text: str) -> str:
    """ "1% -> 5% -> 10%" from a stored fingerprint (for messages about the plan a ramp followed)."""
    return " -> ".join(part.partition("/")[0] for part in fingerprint_text.split())
