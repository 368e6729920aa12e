"""Types shared by the gates, the state machine and the drivers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# The reason of a gate that was not queried because the traffic check did not pass.
NOT_CHECKED = "not checked: "


class Verdict(enum.StrEnum):
    """The outcome of one gate check. Missing evidence is INCONCLUSIVE, never PASS."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Status(enum.StrEnum):
    """Where a ramp is (machine.py draws the transitions)."""

    PENDING = "pending"
    RAMPING = "ramping"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"


# At a step of the plan, the mirror on: every pass looks at the gates of these.
MIRROR_ON = frozenset({Status.RAMPING, Status.PAUSED, Status.COMPLETED})
# Nothing more to do until someone acts: a watch run ends here.
TERMINAL = frozenset({Status.COMPLETED, Status.ROLLED_BACK, Status.STOPPED})
# The mirror off until an explicit restart, which acts on these only.
RESTARTABLE = frozenset({Status.ROLLED_BACK, Status.STOPPED})


@dataclass(frozen=True)
class Step:
    """One ramp step: mirror `percent` of the traffic, then hold it for `hold_seconds`."""

    percent: float
    hold_seconds: float


@dataclass(frozen=True)
class GateResult:
    """What one gate saw: its rendered query, the value, the threshold and the verdict."""

    name: str
    kind: str  # "traffic" | "threshold" | "alert" | "comparison" | "judge"
    query: str
    verdict: Verdict
    value: float | None = None
    threshold: float | None = None
    operator: str | None = None
    severity: str | None = None
    reason: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "query": self.query,
            "verdict": str(self.verdict),
            "value": self.value,
            "threshold": self.threshold,
            "operator": self.operator,
            "severity": self.severity,
            "reason": self.reason,
            **({"extra": self.extra} if self.extra else {}),
        }
