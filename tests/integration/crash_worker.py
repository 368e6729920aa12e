"""One mirror_ramp run that kills itself with SIGKILL at a chosen write boundary.

    python -m tests.integration.crash_worker ARGUMENTS.json BOUNDARY

ARGUMENTS.json: the task arguments of mirror_ramp with every default filled in (as ramp_worker).
BOUNDARY is where the process dies, counted on the driver's calls (a test hook: the engine has
none of this):
    write:N           right after the driver's N-th write returned (1-based)
    inside-write:N    inside the N-th write, once the proxy was changed and before the state file
                      was written (drivers whose state and mirror are two writes)
Prints "ARMED" first; the test reads the target after the process is gone.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from mirrorramp.adapter import RampRequest, build_driver, execute
from mirrorramp.drivers import nginx


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def armed(driver, boundary: str):
    kind, _, number = boundary.partition(":")
    target = int(number)
    calls = {"write": 0}
    original_write = driver.write

    def write(*args, **kwargs):
        calls["write"] += 1
        if kind == "inside-write" and calls["write"] == target:
            if not isinstance(driver, nginx.NginxDriver):
                raise SystemExit(f"inside-write needs a two-write driver, not {driver.description}")
            original_apply = driver._apply

            def apply_then_die(*a, **k):
                original_apply(*a, **k)
                die()

            driver._apply = apply_then_die
        written = original_write(*args, **kwargs)
        if kind == "write" and calls["write"] == target:
            die()
        return written

    driver.write = write
    return driver


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m tests.integration.crash_worker ARGUMENTS.json BOUNDARY", file=sys.stderr)
        return 2
    arguments = json.loads(Path(argv[1]).read_text())
    request = RampRequest.from_arguments(arguments, check_mode=False, diff=False)
    driver = armed(build_driver(request), argv[2])
    print("ARMED", flush=True)
    result = execute(request, driver=driver, progress=lambda message: print(message, flush=True))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
