"""The ramp engine against the Kubernetes API test double: races, API faults, a killed run.

The engine runs as the action plugin runs it (RampRequest.from_arguments, then execute), talking
HTTP to the double; Prometheus is the scripted stand-in answering 0 to every query, so every gate
passes at once (no traffic minimum) and only the Kubernetes side is under test.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirrorramp.adapter import execute
from mirrorramp.arguments import RampRequest
from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.errors import ConflictError, DriverError
from mirrorramp.state import RampState
from mirrorramp.virtualservice import STATE_ANNOTATION, TARGETS_ANNOTATION, read_mirror_percent, with_mirror_percent
from mirrorramp.wiring import build_driver
from tests.fakes.kube_api import KubeApiServer
from tests.fakes.kube_fixtures import kube_api, kube_api_server  # noqa: F401
from tests.support.ansible_run import REPO_ROOT
from tests.support.prometheus_server import ScriptedPrometheus, poll_until, vector_reply
from tests.support.ramp_states import ramping_state
from tests.support.task_arguments import double_arguments

pytestmark = pytest.mark.slow

NAMESPACE = "shop-dev"
SERVICE = "user-service"
ISTIO = "networking.istio.io"
VS_PATH = rf"/virtualservices/{SERVICE}$"
PERCENTS = (1.0, 5.0, 10.0, 20.0)
HOLD = 1.0
STEPS = [{"percent": p, "hold": f"{HOLD:g}s"} for p in PERCENTS]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[ScriptedPrometheus]:
    scripted = ScriptedPrometheus()
    scripted.default = vector_reply("0")  # 0 requests (no minimum), 0 errors: every gate passes
    scripted.start()
    yield scripted
    scripted.stop()


def ramp_arguments(kube: KubeApiServer, prometheus: ScriptedPrometheus, **overrides: Any) -> dict[str, Any]:
    """The mirror_ramp arguments as the action plugin passes them on: every default filled in."""
    return double_arguments(
        kube.url, kube.token, prometheus.url, **{"steps": STEPS, "poll_interval": "200ms", **overrides}
    )


def request_for(kube: KubeApiServer, prometheus: ScriptedPrometheus, **overrides: Any) -> RampRequest:
    return RampRequest.from_arguments(ramp_arguments(kube, prometheus, **overrides), check_mode=False, diff=False)


def seed(kube: KubeApiServer, step_index: int | None, *, held_for: float = 60.0) -> dict[str, Any]:
    """The rendered VirtualService, ramping at `step_index` for `held_for` seconds (None: never ramped)."""
    vs = {
        "apiVersion": f"{ISTIO}/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "annotations": {TARGETS_ANNOTATION: json.dumps([{"host": SERVICE, "port": 8080, "subset": "candidate"}])},
        },
        "spec": {
            "hosts": [SERVICE],
            "http": [
                {
                    "name": "mirror",
                    "match": [{"headers": {"x-user-type": {"exact": "beta-tester"}}}],
                    "route": [{"destination": {"host": SERVICE, "port": {"number": 8080}, "subset": "stable"}}],
                },
                {
                    "name": "primary",
                    "route": [{"destination": {"host": SERVICE, "port": {"number": 8080}, "subset": "stable"}}],
                },
            ],
        },
    }
    if step_index is not None:
        state = ramping_state(PERCENTS, step_index, held_for)
        vs = with_mirror_percent(vs, PERCENTS[step_index])
        vs["metadata"]["annotations"][STATE_ANNOTATION] = state.to_json()
    kube.ensure_namespace(NAMESPACE)
    return kube.put_object(vs)


def live(kube: KubeApiServer) -> dict[str, Any]:
    vs = kube.get_object(ISTIO, "v1", "VirtualService", NAMESPACE, SERVICE)
    assert vs is not None
    return vs


def live_state(kube: KubeApiServer) -> RampState:
    return RampState.from_json(live(kube)["metadata"]["annotations"][STATE_ANNOTATION])


def ramp_step(kube: KubeApiServer) -> int:
    """The 0-based step of the stored state; -1 before the ramp's first write."""
    annotations = live(kube)["metadata"].get("annotations") or {}
    if STATE_ANNOTATION not in annotations:
        return -1
    step = RampState.from_json(annotations[STATE_ANNOTATION]).step_index
    return -1 if step is None else step


def assert_consistent(kube: KubeApiServer) -> RampState:
    """The mirror percent of the VirtualService is the one of the state's step."""
    vs = live(kube)
    state = RampState.from_json(vs["metadata"]["annotations"][STATE_ANNOTATION])
    assert state.step_index is not None
    assert state.percent == PERCENTS[state.step_index]
    assert read_mirror_percent(vs) == state.percent
    return state


def steps_taken(state: RampState) -> list[tuple[str, int]]:
    return [(event["event"], event["step"]) for event in state.history]


def patches(kube: KubeApiServer) -> list[int]:
    return [r.status for r in kube.requests_matching("PATCH", VS_PATH)]


# -- two runs at once ------------------------------------------------------------------------


class ReadTogether:
    """A driver whose first read waits for the other run's first read: both decide on the same version."""

    def __init__(self, inner: Any, barrier: threading.Barrier) -> None:
        self.inner = inner
        self.barrier = barrier
        self.description = inner.description
        self.atomic = inner.atomic
        self._first = True

    def read(self) -> TargetSnapshot:
        snapshot = self.inner.read()
        if self._first:
            self._first = False
            self.barrier.wait(timeout=10)
        return snapshot

    def write(self, current: TargetSnapshot, state: RampState, percent: float, *, dry_run: bool) -> TargetSnapshot:
        return self.inner.write(current, state, percent, dry_run=dry_run)


def test_two_runs_at_once_advance_exactly_one_step(kube_api: KubeApiServer, prometheus: ScriptedPrometheus) -> None:  # noqa: F811
    seed(kube_api, 0)
    kube_api.clear_requests()
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def one_run() -> None:
        try:
            request = request_for(kube_api, prometheus)
            results.append(execute(request, driver=ReadTogether(build_driver(request), barrier)))
        except BaseException as e:  # reported below, with the other run's result
            errors.append(e)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    winner, loser = sorted(results, key=lambda result: not result["changed"])
    assert (winner["changed"], winner["action"], winner["conflicts"], winner["step"]) == (True, "advance", 0, 2)
    assert (loser["changed"], loser["conflicts"]) == (False, 1)
    assert loser["action"] == "hold"  # it re-read: step 2 has just started
    assert loser["step"] == 2 and loser["percent"] == 5.0
    assert "1 conflict(s) with another run" in loser["msg"]
    assert patches(kube_api).count(409) == 1
    state = assert_consistent(kube_api)
    assert state.step_index == 1
    assert steps_taken(state) == [("start", 0), ("advance", 1)]


# -- faults of the API server ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("conflicts", "advances"),
    [(1, True), (3, True), (4, False)],
    ids=["one-409", "three-409-the-retry-limit", "four-409-gives-up"],
)
def test_conflicts_on_patch_are_retried_a_bounded_number_of_times(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
    conflicts: int,
    advances: bool,
) -> None:
    seeded = seed(kube_api, 0)
    kube_api.clear_requests()
    kube_api.inject("PATCH", VS_PATH, status=409, times=conflicts)
    request = request_for(kube_api, prometheus)
    if advances:
        result = execute(request)
        assert (result["changed"], result["action"], result["conflicts"], result["step"]) == (
            True,
            "advance",
            conflicts,
            2,
        )
        assert patches(kube_api) == [409] * conflicts + [200]
        state = assert_consistent(kube_api)
        assert steps_taken(state) == [("start", 0), ("advance", 1)]
    else:
        with pytest.raises(ConflictError, match=r"kept changing under this run \(4 conflicts\); nothing changed"):
            execute(request)
        assert patches(kube_api) == [409] * conflicts
        assert live(kube_api) == seeded


@pytest.mark.parametrize("status", [500, 503], ids=["internal-error", "unavailable"])
def test_server_error_on_patch_fails_clearly_and_changes_nothing(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
    status: int,
) -> None:
    seeded = seed(kube_api, 0)
    version = kube_api.resource_version
    kube_api.clear_requests()
    fault = kube_api.inject("PATCH", VS_PATH, status=status, times=5)
    with pytest.raises(DriverError) as failure:
        execute(request_for(kube_api, prometheus))
    message = str(failure.value)
    assert message.startswith(f"patching VirtualService {NAMESPACE}/{SERVICE} failed: HTTP {status} injected fault")
    assert kube_api.token not in message
    assert fault.served == 1, "a failed write is not blindly repeated"
    assert live(kube_api) == seeded
    assert kube_api.resource_version == version


# -- a run killed with SIGKILL ---------------------------------------------------------------


def start_worker(tmp_path: Path, arguments: dict[str, Any]) -> subprocess.Popen:
    path = tmp_path / "arguments.json"
    path.write_text(json.dumps(arguments))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.ramp_worker", str(path)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL


def finish(kube: KubeApiServer, prometheus: ScriptedPrometheus) -> dict[str, Any]:
    """Run the ramp again, watching it to the end."""
    return execute(request_for(kube, prometheus, mode="watch"))


def assert_every_step_once(kube: KubeApiServer, result: dict[str, Any]) -> None:
    assert (result["state"], result["step"], result["percent"]) == ("completed", len(PERCENTS), PERCENTS[-1])
    state = assert_consistent(kube)
    assert state.status == "completed"
    assert steps_taken(state) == [("start", 0), ("advance", 1), ("advance", 2), ("advance", 3), ("complete", 3)]
    moments = [event["at"] for event in state.history[1:]]
    for earlier, later in itertools.pairwise(moments):
        assert later - earlier >= HOLD, f"a step was held {later - earlier:.2f}s < {HOLD}s"


def test_ramp_killed_between_steps_continues_from_the_stored_state(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
    tmp_path: Path,
) -> None:
    seed(kube_api, None)
    worker = start_worker(tmp_path, ramp_arguments(kube_api, prometheus, mode="watch"))
    try:
        poll_until(lambda: ramp_step(kube_api) >= 1, timeout=30, interval=0.05, what="the ramp at step 2")
    finally:
        kill(worker)
    killed_at = assert_consistent(kube_api)
    assert killed_at.status == "ramping" and killed_at.step_index >= 1
    assert "RESULT" not in (worker.stdout.read() if worker.stdout else "")
    result = finish(kube_api, prometheus)
    assert result["conflicts"] == 0
    assert_every_step_once(kube_api, result)


@pytest.mark.parametrize(
    "server_answer",
    [None, 503],
    ids=["the-write-lands-after-the-kill", "the-write-is-lost-with-the-run"],
)
def test_ramp_killed_during_its_write_never_skips_or_repeats_a_step(
    kube_api: KubeApiServer,  # noqa: F811
    prometheus: ScriptedPrometheus,
    tmp_path: Path,
    server_answer: int | None,
) -> None:
    seed(kube_api, 1)  # step 2 held in full: the next write advances to step 3
    kube_api.clear_requests()
    # The advance is held up inside the API server; the run is killed while it waits.
    fault = kube_api.inject("PATCH", VS_PATH, status=server_answer, times=1, delay=1.0)
    worker = start_worker(tmp_path, ramp_arguments(kube_api, prometheus, mode="watch"))
    try:
        poll_until(lambda: fault.served == 1, timeout=30, interval=0.02, what="the advance reaching the server")
    finally:
        kill(worker)
    # The server finishes the request the dead run sent.
    poll_until(lambda: patches(kube_api), timeout=10, interval=0.05, what="the delayed PATCH answered")
    assert patches(kube_api) == [server_answer or 200]
    after_kill = assert_consistent(kube_api)
    assert after_kill.step_index == (2 if server_answer is None else 1)
    result = finish(kube_api, prometheus)
    assert_every_step_once(kube_api, result)
