"""An in-memory ramp target that logs every read and write, safe to share with a runner thread.

It is tests/unit/test_runner.py's MemoryTarget (the Driver protocol with a version token), plus
a log the test can inspect while a watch-mode runner works in another thread:

    target = RecordingTarget(state, percent=5)
    ... run the ramp ...
    assert [a for a in target.log if a.kind == "write"] == []
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.state import RampState
from tests.unit.test_runner import MemoryTarget


@dataclass(frozen=True)
class Access:
    """One read or write: when (time.monotonic()), and the state and percent read or written."""

    kind: str  # "read" or "write"
    at: float
    state: RampState
    percent: float


class RecordingTarget(MemoryTarget):
    description = "recording target"

    def __init__(self, state: RampState | None = None, percent: float = 0.0) -> None:
        super().__init__(state, percent)
        self._lock = threading.Lock()
        self.log: list[Access] = []

    def read(self) -> TargetSnapshot:
        with self._lock:
            snapshot = super().read()
            self.log.append(Access("read", time.monotonic(), snapshot.state, snapshot.percent))
            return snapshot

    def write(self, current, state, percent, *, dry_run):
        with self._lock:
            written = super().write(current, state, percent, dry_run=dry_run)
            if not dry_run:
                self.log.append(Access("write", time.monotonic(), state, percent))
            return written

    def now(self) -> tuple[RampState, float]:
        """The stored state and the live percent, read together (no log entry)."""
        with self._lock:
            return self.state, self.percent

    def accesses(self, kind: str, since: float = float("-inf"), until: float = float("inf")) -> list[Access]:
        with self._lock:
            return [a for a in self.log if a.kind == kind and since <= a.at <= until]
