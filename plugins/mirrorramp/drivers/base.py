"""What the runner needs from a driver: read the target, write it under optimistic concurrency."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mirrorramp.state import RampState


@dataclass(frozen=True)
class TargetSnapshot:
    """The target as read: the ramp state stored with it and the live mirror settings.

    `version` is the token of optimistic concurrency (a resourceVersion, a state file digest):
    a write carrying a version that is no longer current must fail with ConflictError.
    `mirror_drift` says how the live mirror differs from what the driver itself would write for
    `percent` (other targets, unequal percentages); "" when it does not.
    """

    state: RampState
    percent: float
    version: str
    mirror_settings: dict = field(default_factory=dict)
    mirror_drift: str = ""


class Driver(Protocol):
    """A place where the mirror percentage lives, and the ramp state with it."""

    description: str  # e.g. "VirtualService shop/user-service"; never holds a secret
    # True when the state and the mirror change in one write (a VirtualService and its
    # annotation). False when they are two (a proxy's file and a state file): the runner then
    # records a raise before making it, and write() must change the mirror before the state.
    atomic: bool

    def read(self) -> TargetSnapshot:
        """Read the state and the live mirror percent (DriverError when unreadable)."""
        ...

    def write(self, current: TargetSnapshot, state: RampState, percent: float, *, dry_run: bool) -> TargetSnapshot:
        """Set the mirror to `percent` (0 removes it) and store `state` (atomically, or the
        mirror first when `atomic` is False).

        ConflictError when `current.version` is stale. With dry_run nothing persists, and the
        returned snapshot is what the target would become.
        """
        ...
