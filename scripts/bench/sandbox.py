"""A throw-away local sandbox for the benchmarks: playbooks/sandbox.yml on free ports, in a tmp build dir.

    with running_sandbox(load_seconds=300, rps=100, render_rules=True) as sandbox:
        sandbox.set_percent(20)
        sandbox.control("candidate", error_ratio=1.0)

The approach of tests/integration/test_sandbox.py (start_sandbox, stop_sandbox), kept here rather
than imported: that module is a pytest module (it fails through pytest.fail, its fixtures and
helpers change with the tests), and a benchmark is a script that `make bench` runs without
pytest. The playbook itself runs through tests.support.ansible_run, the one helper that runs
ansible-playbook the way a user does (this venv's tools, this checkout's ansible.cfg).

Never the fixed ports of inventories/local (another sandbox may run there): every port is
picked free on 127.0.0.1, everything the sandbox writes is under the tmp build dir, and the
stop (the role's `stopped` state) ends only the processes this sandbox recorded, by PID.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2.nativetypes import NativeEnvironment

from mirrorramp.drivers.nginx import NginxDriver
from mirrorramp.state import RampState
from tests.support.ansible_run import REPO_ROOT, run_playbook

PLAYBOOK = "playbooks/sandbox.yml"
LOCAL_INVENTORY = REPO_ROOT / "inventories" / "local"
PORT_NAMES = (
    "proxy",
    "relay",
    "primary",
    "primary_admin",
    "candidate",
    "candidate_admin",
    "prometheus",
    "alertmanager",
)
PLAYBOOK_TIMEOUT = 180.0


class SandboxError(RuntimeError):
    """The sandbox did not start or stop as asked; the message has the playbook's last output."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def http_json(url: str, data: dict | None = None, timeout: float = 5) -> Any:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


# -- the local inventory, as data ----------------------------------------------------------------
def local_vars() -> dict[str, Any]:
    """inventories/local/group_vars/all/*.yml merged, Jinja left as written (see `resolve`)."""
    merged: dict[str, Any] = {}
    for path in sorted((LOCAL_INVENTORY / "group_vars" / "all").glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def resolve(value: Any, context: dict[str, Any]) -> Any:
    """`value` with its Jinja expressions rendered against `context`, native types kept
    ("{{ mirror_thresholds.error_ratio.critical }}" -> 0.05). An undefined name raises."""
    environment = NativeEnvironment(undefined=StrictUndefined)
    if isinstance(value, dict):
        return {key: resolve(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, context) for item in value]
    if isinstance(value, str) and "{{" in value:
        return environment.from_string(value).render(**context)
    return value


# -- the sandbox ---------------------------------------------------------------------------------
@dataclass
class Sandbox:
    build: Path
    extra_vars: dict
    info: dict = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    stopped: bool = False

    @property
    def ports(self) -> dict[str, int]:
        return self.extra_vars["mirror_sandbox"]["ports"]

    @property
    def proxy_url(self) -> str:
        return self.info["proxy_url"]

    def driver(self, **options: Any) -> NginxDriver:
        return NginxDriver.from_options(self.info["service"], {**self.info["nginx"], **options})

    def control(self, side: str, error_ratio: float = 0.0, latency_ms: float = 0.0) -> None:
        http_json(self.info[side]["control_url"], {"error_ratio": error_ratio, "latency_ms": latency_ms})

    def served(self, side: str, prefix: str = "/", limit: int = 0) -> dict:
        query = urllib.parse.urlencode({"prefix": prefix, "limit": limit})
        return http_json(f"{self.info[side]['requests_url']}?{query}")

    def set_percent(self, percent: float, state: RampState | None = None) -> None:
        """The live mirror percent (through the nginx driver: include, nginx -t, reload, verified),
        with `state` stored beside it (default: the stored state, unchanged)."""
        driver = self.driver()
        current = driver.read()
        driver.write(current, state if state is not None else current.state, percent, dry_run=False)
        live = http_json(self.info["mirror_config_url"])["percent"]
        if live != percent:
            raise SandboxError(f"mirror set to {percent}% but nginx serves {live}%")

    def prometheus_config(self) -> dict:
        """The sandbox Prometheus's configuration as the role rendered it."""
        return yaml.safe_load((self.build / "sandbox" / "prometheus" / "prometheus.yaml").read_text())

    def recorded_pids(self) -> dict[str, int]:
        pidfiles = {p.stem: p for p in (self.build / "sandbox" / "run").glob("*.pid")}
        pidfiles["nginx"] = self.build / "sandbox" / "nginx" / "nginx.pid"
        pidfiles["relay"] = self.build / "sandbox" / "relay" / "nginx.pid"
        return {name: int(path.read_text().split()[0]) for name, path in pidfiles.items() if path.exists()}

    def run(self, state: str) -> str:
        result = run_playbook(
            PLAYBOOK, extra_vars={**self.extra_vars, "sandbox_state": state}, timeout=PLAYBOOK_TIMEOUT
        )
        if result.returncode != 0:
            raise SandboxError(f"sandbox_state={state} failed:\n{result.output[-4000:]}")
        return result.output

    def forwarder_counts(self) -> str | None:
        """The forwarder's last words (its copies forwarded, dropped over the bound, failed, dropped
        by the kernel), which it writes to its log when it stops."""
        try:
            lines = (self.build / "sandbox" / "run" / "forwarder.log").read_text().splitlines()
        except OSError:
            return None
        return next((line for line in reversed(lines) if "stopped;" in line), None)

    def stop(self) -> None:
        """The role's `stopped` state (each process by its recorded PID), then check nothing is left."""
        if self.stopped:
            return
        self.run("stopped")
        self.stopped = True
        survivors = [name for name, pid in self.pids.items() if alive(pid)]
        still_open = [port for port in self.ports.values() if port_open(port)]
        if survivors or still_open:
            raise SandboxError(f"after the stop: processes {survivors} alive, ports {still_open} open")


def sandbox_vars(build: Path, *, load_seconds: float, rps: float, post_ratio: float) -> dict:
    """Extra vars for playbooks/sandbox.yml: free ports, everything under `build`."""
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    inventory = local_vars()["mirror_sandbox"]
    return {
        "mirror_build_dir": str(build),
        "mirror_sandbox": {
            "dir": str(build / "sandbox"),
            "rules_dir": str(build / "prometheus"),
            "ports": ports,
            "load": {"seconds": load_seconds, "rps": rps, "post_ratio": post_ratio},
            "nginx_binary": inventory["nginx_binary"],
            "prometheus_binary": inventory["prometheus_binary"],
            "alertmanager_binary": inventory["alertmanager_binary"],
        },
        # The project's Prometheus URL points at the sandbox's (render.yml reads it too).
        "mirror_prometheus": {"url": f"http://127.0.0.1:{ports['prometheus']}", "timeout": "5s"},
    }


@contextlib.contextmanager
def stopped_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the script through the `finally` blocks (the sandbox is stopped), like Ctrl-C."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running_sandbox(
    *, load_seconds: float = 0, rps: float = 100, post_ratio: float = 0.0, render_rules: bool = False
) -> Iterator[Sandbox]:
    """A started sandbox in a tmp build dir; always stopped on the way out.

    render_rules: render the environment first (playbooks/render.yml into the tmp build dir), so
    the sandbox Prometheus loads the alert rules, as `make demo` does.
    """
    with stopped_on_sigterm(), tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        build = Path(tmp) / "build"
        extra = sandbox_vars(build, load_seconds=load_seconds, rps=rps, post_ratio=post_ratio)
        if render_rules:
            started = time.monotonic()
            render = run_playbook(
                "playbooks/render.yml", extra_vars={"mirror_build_dir": str(build)}, timeout=PLAYBOOK_TIMEOUT
            )
            if render.returncode != 0:
                raise SandboxError(f"playbooks/render.yml failed:\n{render.output[-4000:]}")
            log(f"rendered the alert rules in {time.monotonic() - started:.1f}s")
        sandbox = Sandbox(build, extra)
        started = time.monotonic()
        try:
            sandbox.run("started")
            sandbox.info = json.loads((build / "sandbox.json").read_text())
            sandbox.pids = sandbox.recorded_pids()
            log(f"sandbox started in {time.monotonic() - started:.1f}s on ports {extra['mirror_sandbox']['ports']}")
            yield sandbox
        finally:
            started = time.monotonic()
            # A second Ctrl-C or SIGTERM must not cut the stop short (and leave servers behind).
            previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                sandbox.stop()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            log(f"sandbox stopped in {time.monotonic() - started:.1f}s: no process, no port left")
            if sandbox.stopped and (counts := sandbox.forwarder_counts()):
                log(counts)


def log(message: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
