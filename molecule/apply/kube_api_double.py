"""Start and stop the Kubernetes API test double (tests/fakes/kube_api.py) for the apply scenario.

    PYTHONPATH=<project> python kube_api_double.py start STATE_FILE [--namespace NS ...]
    PYTHONPATH=<project> python kube_api_double.py stop STATE_FILE

`start` runs the double as a daemon of its own (detached from the Ansible task that starts it),
waits until it serves, and writes STATE_FILE (mode 0600): its PID, its URL and the connection
options of kubernetes.core as `mirror_kube` (token included: this is a throw-away test server).
It is a no-op when STATE_FILE names a running double. `stop` ends that PID (SIGTERM, then
SIGKILL) and removes STATE_FILE; a missing STATE_FILE is nothing to stop. The double never
outlives --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

MARKER = "kube_api_double.py"


def _running(pid: int) -> bool:
    """True if `pid` is alive and is one of these doubles (not a recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return MARKER.encode() in cmdline


def _serve(state_file: Path, namespaces: list[str], max_seconds: float) -> None:
    from tests.fakes.kube_api import KubeApiServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = KubeApiServer(state_file.parent / "kube-api").start()
    try:
        for namespace in namespaces:
            server.ensure_namespace(namespace)
        state = {
            "pid": os.getpid(),
            "url": server.url,
            "mirror_kube": {
                "kubeconfig": None,
                "context": None,
                "host": server.url,
                "api_key": server.token,
                "validate_certs": False,
                "ca_cert": None,
            },
        }
        partial = state_file.with_suffix(".partial")
        partial.touch(mode=0o600)
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(state_file)
        stop.wait(max_seconds)
    finally:
        server.stop()


def start(state_file: Path, namespaces: list[str], max_seconds: float, timeout: float = 30.0) -> int:
    if state_file.exists() and _running(json.loads(state_file.read_text())["pid"]):
        print(f"already running: {state_file}")
        return 0
    state_file.unlink(missing_ok=True)
    log = state_file.parent / "kube-api-double.log"
    if os.fork() == 0:
        # Detach twice: the server is nobody's child and holds none of the caller's pipes.
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        with open(os.devnull, "rb") as devnull, open(log, "ab") as out:
            os.dup2(devnull.fileno(), 0)
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
        try:
            _serve(state_file, namespaces, max_seconds)
        finally:
            os._exit(0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_file.exists():
            print(f"started: {json.loads(state_file.read_text())['url']}")
            return 0
        time.sleep(0.1)
    print(f"the double did not start within {timeout:g}s; see {log}", file=sys.stderr)
    return 1


def stop(state_file: Path, timeout: float = 10.0) -> int:
    if not state_file.exists():
        print("not running")
        return 0
    pid = json.loads(state_file.read_text())["pid"]
    if _running(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    print(f"stopped: {pid}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("state_file", type=Path)
    parser.add_argument("--namespace", action="append", default=[], help="a namespace to create (repeatable)")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    state_file = args.state_file.resolve()
    if args.action == "start":
        state_file.parent.mkdir(parents=True, exist_ok=True)
        return start(state_file, args.namespace, args.max_seconds)
    return stop(state_file)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
