"""One mirror_ramp run in a process of its own, for the tests that kill a ramp with SIGKILL.

    python -m tests.integration.ramp_worker ARGUMENTS.json [BOUNDARY]

ARGUMENTS.json holds the task arguments of mirror_ramp with every default filled in (what the
action plugin hands to the engine after validate_argument_spec). Progress lines go to stdout as
they happen; the task result is the last line, prefixed with "RESULT ".

BOUNDARY makes the process kill itself with SIGKILL at a write boundary, counted on the
driver's calls (a test hook: the engine has none of this):
    write:N           right after the driver's N-th write returned (1-based)
    inside-write:N    inside the N-th write, between its two halves: once the first of the proxy
                      (the driver's `_apply`) and the state file (`state_file.store`) is written,
                      before the other (drivers whose state and mirror are two writes). Whichever
                      comes first: a driver writing its state first is caught in that order too.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from mirrorramp.adapter import execute
from mirrorramp.arguments import RampRequest
from mirrorramp.drivers.base import Driver
from mirrorramp.wiring import build_driver


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def armed(driver: Driver, boundary: str) -> Driver:
    """`driver`, made to kill this process at `boundary`."""
    kind, _, number = boundary.partition(":")
    if kind not in ("write", "inside-write") or not number.isdigit():
        raise SystemExit(f"boundary {boundary!r}: expected write:N or inside-write:N")
    target = int(number)
    calls = {"write": 0}
    original_write = driver.write

    def write(*args, **kwargs):
        calls["write"] += 1
        if kind == "inside-write" and calls["write"] == target:
            if driver.atomic:
                raise SystemExit(f"inside-write needs a driver whose state and mirror are two writes, not {driver}")
            _die_after_first_half(driver)
        written = original_write(*args, **kwargs)
        if kind == "write" and calls["write"] == target:
            die()
        return written

    driver.write = write
    return driver


def _die_after_first_half(driver: Driver) -> None:
    """Make `driver` kill this process as soon as the first half of its write (proxy or state file) returns."""
    for owner, name in ((driver, "_apply"), (driver.state_file, "store")):
        original = getattr(owner, name)

        def then_die(*args, _original=original, **kwargs):
            _original(*args, **kwargs)
            die()

        setattr(owner, name, then_die)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m tests.integration.ramp_worker ARGUMENTS.json [BOUNDARY]", file=sys.stderr)
        return 2
    arguments = json.loads(Path(argv[1]).read_text())
    request = RampRequest.from_arguments(arguments, check_mode=False, diff=False)
    driver = armed(build_driver(request), argv[2]) if len(argv) == 3 else None
    result = execute(request, driver=driver, progress=lambda message: print(message, flush=True))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
