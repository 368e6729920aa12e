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
