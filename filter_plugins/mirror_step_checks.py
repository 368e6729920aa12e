"""Pure filter: the ramp steps that the ramp engine refuses, for the role mirror_preflight.

The preflight asks the engine's own parsers (mirrorramp.plan, mirrorramp.durations) instead of
holding a copy of their rules: what the preflight passes is what the ramp reads, and the two
cannot drift apart. The rows carry the words for the preflight's message, which names the
inventory path and the value: "<path> = <value as JSON>: <says>".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ansible.errors import AnsibleFilterError

from mirrorramp.durations import parse_duration
from mirrorramp.errors import ConfigError

# The documentation is mirror_ramp_step_problems.yml beside this file (ansible-doc -t filter).


def _says(error: ConfigError, engine_name: str, value: object) -> str:
    """The engine's "<name>: got <value!r>[ (<problem>)], expected <allowed>" as
    "[<problem>; ]must be <allowed>": the preflight's message names the path and the value itself."""
    text = str(error)
    rest = text.removeprefix(f"{engine_name}: got {value!r}")
    if rest.startswith(", expected "):
        return "must be " + rest.removeprefix(", expected ")
    if rest.startswith(" (") and "), expected " in rest:
        # rsplit: the problem may quote the value, the engine's allowed forms never hold "), expected ".
        problem, allowed = rest.removeprefix(" (").rsplit("), expected ", 1)
        return f"{problem}; must be {allowed}"
    # Any other form of message: the engine's words as they are.
    return f"must be what the ramp reads ({text})"


def _refusal(
    parse: Callable[[object], object], given: object, engine_name: str, path: str, value: object
) -> dict | None:
    """The row of `value` at `path` when the engine's `parse` refuses `given` (which holds `value`,
    named `engine_name` in the engine's message), else None."""
    try:
        parse(given)
    except ConfigError as e:
        return {"path": path, "value": value, "says": _says(e, engine_name, value)}
    return None


def _named(parse: Callable[..., object], name: str) -> Callable[[object], object]:
    """`parse` that names its argument `name`, the inventory path, in its message."""
    return lambda value: parse(value, name=name)


# The hold given to each step of a pair asked about its percents' order: every hold is asked
# about on its own, and a bad one must not hide a percent out of order.
ORDER_ONLY_HOLD = 1


def mirror_ramp_step_problems(steps, variable):
    """One row {path, value, says} per value of `steps` (the ramp's steps, named `variable` in
    the inventory) that the ramp engine refuses: every bad percent and hold, each percent not
    above the one before, or the whole list when it is not a non-empty list."""
    # Imported here, not at the top: Ansible's worker for every task imports every filter file,
    # and mirrorramp.plan took about 0.2 s of each task's time (64 render tasks).
    from mirrorramp.plan import parse_percent, parse_steps

    if not isinstance(variable, str) or not variable:
        raise AnsibleFilterError(f"mirror_ramp_step_problems: the variable's name must be a string, got {variable!r}")
    if not isinstance(steps, Sequence) or isinstance(steps, str | bytes) or not steps:
        refused = _refusal(parse_steps, steps, "steps", variable, steps)
        return [refused] if refused else []
    rows: list[dict | None] = []
    percents: list[object] = []  # each step's percent where the engine reads it, else None
    for index, entry in enumerate(steps):
        where = f"{variable}[{index}]"
        if not isinstance(entry, Mapping):
            rows.append(_refusal(parse_steps, [entry], "steps[0]", where, entry))
            percents.append(None)
            continue
        percent, hold = entry.get("percent"), entry.get("hold")
        percent_path, hold_path = f"{where}.percent", f"{where}.hold"
        percent_row = _refusal(_named(parse_percent, percent_path), percent, percent_path, percent_path, percent)
        hold_row = _refusal(_named(parse_duration, hold_path), hold, hold_path, hold_path, hold)
        rows += [percent_row, hold_row]
        percents.append(None if percent_row else percent)
    # The order of the percents, by the engine's plan parser on each pair of neighbours whose
    # percents it reads: a bad percent is reported once, not again as out of order. Unknown keys
    # are left out: the unknown-key check reports them, with the near miss.
    for index in range(1, len(steps)):
        before, percent = percents[index - 1], percents[index]
        if before is None or percent is None:
            continue
        pair = [{"percent": before, "hold": ORDER_ONLY_HOLD}, {"percent": percent, "hold": ORDER_ONLY_HOLD}]
        row = _refusal(parse_steps, pair, "steps[1].percent", f"{variable}[{index}].percent", percent)
        if row:
            row["says"] = row["says"].replace("steps[0].", f"{variable}[{index - 1}].")
        rows.append(row)
    return [row for row in rows if row]


class FilterModule:
    def filters(self):
        return {"mirror_ramp_step_problems": mirror_ramp_step_problems}
