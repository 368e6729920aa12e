"""The ramp state of a proxy driver, kept in a file beside the proxy's own configuration.

A proxy's file (an Envoy route file) has no place for the ramp state, so the
drivers of file-configured proxies keep it in `<state_dir>/<service>.json`:
{"version": N, "state": {RampState}}. N is the optimistic-concurrency token: a write checks it
and bumps it under an flock of `<state_dir>/<service>.lock`, and the file is written tmp + fsync
+ rename, so a reader sees the old state or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path

from mirrorramp.errors import ConflictError, DriverError
from mirrorramp.files import write_atomically
from mirrorramp.state import RampState


class StateFile:
    """The state file of `service` in `state_dir`; `owner` names the driver in its messages."""

    def __init__(self, state_dir: str | Path, service: str, owner: str, lock_timeout: float = 10.0) -> None:
        self.state_dir = Path(state_dir)
        self.service = service
        self.owner = owner
        self.lock_timeout = lock_timeout

    @property
    def path(self) -> Path:
        return self.state_dir / f"{self.service}.json"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / f"{self.service}.lock"

    def load(self) -> tuple[int, RampState]:
        """The stored version counter and state; (0, the initial state) before the first write."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0, RampState.initial()
        except OSError as e:
            raise DriverError(f"{self.owner}: cannot read {self.path}: {e}") from e
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DriverError(f"{self.owner}: {self.path} is not JSON ({e}); fix or remove it") from e
        counter = data.get("version") if isinstance(data, dict) else None
        if isinstance(counter, bool) or not isinstance(counter, int) or "state" not in data:
            raise DriverError(f"{self.owner}: {self.path} lacks an integer version and a state")
        return counter, RampState.from_dict(data["state"])

    def check_version(self, expected: str) -> int:
        """The stored counter; ConflictError when it is not `expected` (another run wrote first)."""
        counter, _ = self.load()
        if str(counter) != expected:
            raise ConflictError(
                f"{self.owner}: the state file {self.path} is at version {counter}, this run read "
                f"version {expected}: another run changed it first"
            )
        return counter

    def store(self, counter: int, state: RampState) -> None:
        """Write `state` at version `counter` (call it under `locked()`, after `check_version`)."""
        document = {"version": counter, "state": state.to_dict()}
        write_atomically(self.path, json.dumps(document, sort_keys=True, indent=1) + "\n")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the flock of the state file; ConflictError when another run holds it too long."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        with open(self.lock_path, "a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise DriverError(f"{self.owner}: cannot lock {self.lock_path}: {e}") from e
                    if time.monotonic() > deadline:
                        raise ConflictError(
                            f"{self.owner}: {self.lock_path} stayed locked for {self.lock_timeout:g}s: "
                            "another run is writing"
                        ) from e
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
