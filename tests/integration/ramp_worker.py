"""One mirror_ramp run in a process of its own, for the tests that kill a ramp with SIGKILL.

    python -m tests.integration.ramp_worker ARGUMENTS.json

ARGUMENTS.json holds the task arguments of mirror_ramp with every default filled in (what the
action plugin hands to the engine after validate_argument_spec). Progress lines go to stdout as
they happen; the task result is the last line, prefixed with "RESULT ".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mirrorramp.adapter import RampRequest, execute


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.integration.ramp_worker ARGUMENTS.json", file=sys.stderr)
        return 2
    arguments = json.loads(Path(argv[1]).read_text())
    request = RampRequest.from_arguments(arguments, check_mode=False, diff=False)
    result = execute(request, progress=lambda message: print(message, flush=True))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
