#!/usr/bin/env python3
"""Start, inspect and stop the sandbox servers, each by the PID it recorded; prints one JSON line.

    sandbox_process.py start|status|stop --run-dir DIR --servers JSON [--ready-timeout 20]

JSON is a list, in start order, of {name, argv, ports, ready_url}. A server counts as running
only when the PID in its pid file DIR/<name>.pid is alive (not a zombie) and its command line is
the one recorded at its start: a PID reused by something else is never taken for ours, nor
signalled. `start` leaves a running server alone and launches the others in a new session,
output in DIR/<name>.log, so the recorded PID is the server's own; then waits (deadline) until
its ready_url answers 200. `stop` stops them in reverse order: TERM, then KILL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_GRACE_S = 0.5


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    if state in ("Z", "X"):
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def _recorded(pidfile: Path) -> tuple[int | None, list[str] | None]:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None, None
    try:
        argv = json.loads(Path(f"{pidfile}.json").read_text())["argv"]
    except (OSError, ValueError, KeyError, TypeError):
        argv = None
    return pid, argv


def running_pid(pidfile: Path) -> int | None:
    """The recorded PID when it is alive and still our server, else None."""
    pid, argv = _recorded(pidfile)
    if pid is None:
        return None
    cmdline = _cmdline(pid)
    if cmdline is None:
        return None
    return pid if argv is not None and cmdline == argv else None


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(url: str, deadline: float) -> str | None:
    """None once `url` answers 200, else the last error at the deadline."""
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return None
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        if time.monotonic() > deadline:
            return last
        time.sleep(0.1)


class Failed(Exception):
    pass


def _pidfile(server: dict, run_dir: Path) -> Path:
    return run_dir / f"{server['name']}.pid"


def start_one(server: dict, run_dir: Path, ready_timeout: float) -> dict:
    name = server["name"]
    pidfile, log = _pidfile(server, run_dir), run_dir / f"{server['name']}.log"
    pid = running_pid(pidfile)
    changed = pid is None
    if pid is None:
        taken = [port for port in server.get("ports", []) if _port_taken(int(port))]
        if taken:
            raise Failed(f"{name}: port(s) {taken} already in use on 127.0.0.1 (by something else than the sandbox)")
        argv = [str(arg) for arg in server["argv"]]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True
            )
        Path(f"{pidfile}.json").write_text(json.dumps({"pid": proc.pid, "argv": argv}) + "\n")
        pidfile.write_text(f"{proc.pid}\n")
        pid = proc.pid
    if server.get("ready_url"):
        deadline = time.monotonic() + ready_timeout
        error = _wait_ready(server["ready_url"], deadline)
        if error is not None:
            alive = running_pid(pidfile) is not None
            state = "runs but" if alive else "exited and"
            raise Failed(
                f"{name} {state} did not answer {server['ready_url']} in {ready_timeout:g}s ({error}): {_tail(log)}"
            )
    elif changed:
        time.sleep(START_GRACE_S)
        if running_pid(pidfile) is None:
            raise Failed(f"{name} did not stay up: {_tail(log)}")
    return {"changed": changed, "pid": pid}


def stop_one(server: dict, run_dir: Path, timeout: float) -> dict:
    name = server["name"]
    pidfile = _pidfile(server, run_dir)
    pid = running_pid(pidfile)
    if pid is None:
        for stale in (pidfile, Path(f"{pidfile}.json")):
            stale.unlink(missing_ok=True)
        return {"changed": False}
    chain = [signal.SIGTERM, signal.SIGKILL]
    escalated = False
    for number, sig in enumerate(chain):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if number == 0 else 5)
        while _cmdline(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if _cmdline(pid) is None:
            break
        escalated = True
    else:
        raise Failed(f"{name} (pid {pid}) survived SIGKILL")
    for stale in (pidfile, Path(f"{pidfile}.json")):
        stale.unlink(missing_ok=True)
    return {"changed": True, "pid": pid, "escalated": escalated}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "status", "stop"])
    parser.add_argument("--run-dir", required=True, help="pid files and logs (unless a server names its pid file)")
    parser.add_argument("--servers", required=True, help="JSON list of servers, in start order")
    parser.add_argument("--ready-timeout", type=float, default=20.0)
    parser.add_argument("--stop-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    servers = json.loads(args.servers)
    run_dir = Path(args.run_dir)
    result: dict = {"changed": False, "servers": {}}
    try:
        if args.command == "status":
            for server in servers:
                pid = running_pid(_pidfile(server, run_dir))
                result["servers"][server["name"]] = {"running": pid is not None, "pid": pid}
            result["running"] = {name: info["running"] for name, info in result["servers"].items()}
        elif args.command == "start":
            for server in servers:
                result["servers"][server["name"]] = outcome = start_one(server, run_dir, args.ready_timeout)
                result["changed"] |= outcome["changed"]
        else:
            for server in reversed(servers):
                result["servers"][server["name"]] = outcome = stop_one(server, run_dir, args.stop_timeout)
                result["changed"] |= outcome["changed"]
            ports = sorted({int(port) for server in servers for port in server.get("ports", [])})
            deadline = time.monotonic() + args.stop_timeout
            while (still := [port for port in ports if _port_taken(port)]) and time.monotonic() < deadline:
                time.sleep(0.1)
            if still:
                raise Failed(f"port(s) {still} still open on 127.0.0.1 after the stop")
            result["ports_closed"] = ports
    except Failed as e:
        result.update(failed=True, msg=str(e))
        print(json.dumps(result, sort_keys=True))
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
