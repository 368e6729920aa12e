"""The ramp state: what one (environment, service) ramp has done, stored with the target.

It is stored as compact JSON with sorted keys (an annotation on the VirtualService, or a
state file for Envoy), so the same state always gives the same bytes and a write that
changes nothing looks like nothing changed. Loading it checks everything: a hand-edited or
truncated state must stop the ramp with a message saying what is wrong, never be guessed at.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from mirrorramp.errors import MirrorRampError
from mirrorramp.model import MIRROR_ON, Status

SCHEMA_VERSION = 2
# Version 1 had no `plan` and no `unconfirmed`: it is read with both empty (see from_dict).
READABLE_VERSIONS = (1, SCHEMA_VERSION)
HISTORY_LIMIT = 50
ROLLBACK_KEYS = ("reason", "gate", "value", "threshold", "at")
STOP_KEYS = ("reason", "at", "by")
EVENT_KEYS = ("at", "event", "step", "percent", "detail")
# What a raise that is not confirmed yet came from (see RampState.unconfirmed).
UNCONFIRMED_KEYS = ("at", "status", "step_index", "percent", "step_started_at")
# Fields a schema-2 state may still carry but no longer means anything: read and dropped.
# judge_spending held the judge's alpha spent per step; the judge's confidence sequence
# (judge.sequence_z) needs no record.
RETIRED_FIELDS = ("judge_spending",)


class StateError(MirrorRampError):
    """The stored state is corrupt or from an unknown schema version; nothing was changed."""


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities spelt as Prometheus spells them ("NaN", "+Inf", "-Inf").

    Gate values can be NaN or +Inf (that is why they were inconclusive), and bare NaN is not
    JSON: other readers of the annotation would choke on it.
    """
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


@dataclass(frozen=True)
class RampState:
    """One ramp's state. Times are epoch seconds; `step_index` is 0-based (None before the start).

    `percent` is the mirror percent this state believes is live (0 = no mirror fields).
    `history` keeps the last HISTORY_LIMIT events, each {at, event, step, percent, detail},
    where `step` is a 0-based step index like `step_index`.
    `plan` is the fingerprint of the plan the ramp follows (plan.fingerprint), None before it
    started: a run with another plan re-maps the ramp onto its own (machine.reconcile).
    `unconfirmed` is set while a raise of the mirror is recorded but not yet read back from the
    proxy (drivers whose state and mirror are two writes record the intent first): it holds the
    position the raise came from, {at, status, step_index, percent, step_started_at}, so the
    next run can finish the change (the proxy has it) or revert the record (it has not).
    """

    status: str = "pending"
    step_index: int | None = None
    percent: float = 0.0
    step_started_at: float | None = None
    updated_at: float | None = None
    inconclusive_streak: int = 0
    last_gates: list[dict] = field(default_factory=list)
    rollback: dict | None = None
    stop: dict | None = None
    history: list[dict] = field(default_factory=list)
    plan: str | None = None
    unconfirmed: dict | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # JSON-safe copies: a state can never change under whoever holds it (it is frozen, its
        # lists and dicts would not be), the history bound holds whatever came in, and a state
        # equals itself after a round trip through JSON (NaN would not even equal itself).
        object.__setattr__(self, "last_gates", json_safe(list(self.last_gates)))
        object.__setattr__(self, "history", json_safe(list(self.history)[-HISTORY_LIMIT:]))
        if self.rollback is not None:
            object.__setattr__(self, "rollback", json_safe(self.rollback))
        if self.stop is not None:
            object.__setattr__(self, "stop", json_safe(self.stop))
        if self.unconfirmed is not None:
            object.__setattr__(self, "unconfirmed", json_safe(self.unconfirmed))

    @classmethod
    def initial(cls) -> RampState:
        """The state of a ramp that has never run: pending, no mirror."""
        return cls()

    # -- building new states -------------------------------------------------------------
    def evolve(self, **changes: Any) -> RampState:
        """A copy with `changes` (dataclasses.replace, named for readability at call sites)."""
        return replace(self, **changes)

    def with_event(self, at: float, event: str, detail: str = "", **changes: Any) -> RampState:
        """A copy with `changes` applied and `event` appended to the (bounded) history.

        The event records the step and percent of the new state: where the ramp is after it.
        """
        new = replace(self, **changes)
        entry = {"at": at, "event": event, "step": new.step_index, "percent": new.percent, "detail": detail}
        return replace(new, history=[*new.history, entry])

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (non-finite gate values spelt as strings)."""
        return json_safe({f.name: getattr(self, f.name) for f in fields(self)})

    def to_json(self) -> str:
        """Compact JSON with sorted keys: the same state always gives the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> RampState:
        """Load a stored state; StateError when it is not JSON or not a valid state."""
        if not isinstance(text, str | bytes | bytearray):
            raise StateError(f"ramp state: got a {type(text).__name__}, expected JSON text")
        try:
            data = json.loads(text)
        except ValueError as e:
            raise StateError(f"ramp state is not valid JSON ({e}); fix it, or remove it to start the ramp over") from e
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> RampState:
        """Validate and load a stored state; StateError names the first thing that is wrong."""
        if not isinstance(data, Mapping):
            raise StateError(f"ramp state: got {type(data).__name__}, expected a JSON object")
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise StateError(f"ramp state: schema_version is {version!r}, expected {SCHEMA_VERSION}")
        if version not in READABLE_VERSIONS:
            raise StateError(
                f"ramp state: schema_version {version} is not understood by this engine (it reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}); run the mirror_ramp version that wrote it"
            )
        if version == 1:
            data = {"plan": None, "unconfirmed": None, **data, "schema_version": SCHEMA_VERSION}
        data = {key: value for key, value in data.items() if key not in RETIRED_FIELDS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise StateError(f"ramp state: unknown field(s) {', '.join(unknown)}")
        missing = sorted(name for name in known if name not in data)
        if missing:
            raise StateError(f"ramp state: missing field(s) {', '.join(missing)}")

        status = data["status"]
        if status not in tuple(Status):
            raise StateError(f"ramp state: status is {status!r}, expected one of {', '.join(Status)}")
        step_index = data["step_index"]
        if step_index is not None and (_not_int(step_index) or step_index < 0):
            raise StateError(f"ramp state: step_index is {step_index!r}, expected null or an integer >= 0")
        percent = _number(data, "percent")
        if percent is None or percent < 0 or percent > 100:
            raise StateError(f"ramp state: percent is {data['percent']!r}, expected a number from 0 to 100")
        step_started_at = _number(data, "step_started_at", optional=True)
        updated_at = _number(data, "updated_at", optional=True)
        streak = data["inconclusive_streak"]
        if _not_int(streak) or streak < 0:
            raise StateError(f"ramp state: inconclusive_streak is {streak!r}, expected an integer >= 0")
        last_gates = _list_of_dicts(data, "last_gates")
        history = _list_of_dicts(data, "history")
        rollback = _record(data, "rollback", ROLLBACK_KEYS)
        stop = _record(data, "stop", STOP_KEYS)
        unconfirmed = _record(data, "unconfirmed", UNCONFIRMED_KEYS)
        plan = data["plan"]
        if plan is not None and (not isinstance(plan, str) or not plan):
            raise StateError(f"ramp state: plan is {plan!r:.80}, expected null or the plan's fingerprint")

        if status in MIRROR_ON and step_index is None:
            raise StateError(f"ramp state: status {status} needs a step_index")
        if status in ("ramping", "paused") and step_started_at is None:
            raise StateError(f"ramp state: status {status} needs step_started_at")
        if status == "rolled_back" and rollback is None:
            raise StateError("ramp state: status rolled_back needs the rollback record")
        if status == "stopped" and stop is None:
            raise StateError("ramp state: status stopped needs the stop record")
        if unconfirmed is not None and status not in MIRROR_ON:
            raise StateError(f"ramp state: status {status} cannot have an unconfirmed raise")
        return cls(
            status=status,
            step_index=step_index,
            percent=percent,
            step_started_at=step_started_at,
            updated_at=updated_at,
            inconclusive_streak=streak,
            last_gates=last_gates,
            rollback=rollback,
            stop=stop,
            history=history,
            plan=plan,
            unconfirmed=unconfirmed,
            schema_version=SCHEMA_VERSION,
        )


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _number(data: Mapping, key: str, *, optional: bool = False) -> float | None:
    value = data[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        expected = "null or a number" if optional else "a number"
        raise StateError(f"ramp state: {key} is {value!r}, expected {expected}")
    return float(value)


def _list_of_dicts(data: Mapping, key: str) -> list[dict]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise StateError(f"ramp state: {key} is {value!r:.80}, expected a list of objects")
    return value


def _record(data: Mapping, key: str, keys: tuple[str, ...]) -> dict | None:
    value = data[key]
    if value is None:
        return None
    if not isinstance(value, dict):
        raise StateError(f"ramp state: {key} is {value!r:.80}, expected null or an object")
    missing = [k for k in keys if k not in value]
    if missing:
        raise StateError(f"ramp state: {key} lacks {', '.join(missing)}")
    return value
