"""Faults around a running ramp: Prometheus killed, Prometheus too slow, clocks that disagree, the
Kubernetes API not answering, and PromQL only Prometheus can refuse.

The ramp runs as the action plugin runs it (validated arguments, RampRequest.from_arguments, the
engine's Runner or execute) against the real Prometheus scraping Istio-shaped metrics every
second. The target is in memory (tests/support/recording_target.py) except where the fault is the
driver's: there it is the istio driver against the Kubernetes API test double. Each test has its
own workloads, so what one feeds does not leak into another's gates.

Covered elsewhere, not repeated here: the API answering 409 or 500/503 and a run killed with
SIGKILL between or during writes (test_ramp_istio_races.py, test_crash_safety.py); Envoy refusing
a route file (test_envoy_driver.py); the gates alone with Prometheus stopped (test_gates_prometheus.py).
"""

from __future__ import annotations

import importlib
import itertools
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from mirrorramp.adapter import execute
from mirrorramp.arguments import RampRequest
from mirrorramp.drivers.kube import IstioDriver, KubeConnection, api_client, preload_namespaces
from mirrorramp.errors import ConfigError, DriverError
from mirrorramp.machine import Action
from mirrorramp.model import Verdict
from mirrorramp.runner import Runner, RunOutcome
from mirrorramp.state import RampState
from mirrorramp.wiring import build_prometheus
from mirrorsandbox.istio_metrics_source import IstioMetricsSource
from tests.fakes.kube_api import RESOURCE_TYPES, KubeApiServer
from tests.fakes.kube_fixtures import kube_api, kube_api_server  # noqa: F401
from tests.integration.test_ramp_istio_races import (
    NAMESPACE as KUBE_NAMESPACE,
)
from tests.integration.test_ramp_istio_races import (
    PERCENTS,
    SERVICE,
    VS_PATH,
    assert_consistent,
    live,
    patches,
    seed,
    steps_taken,
)
from tests.integration.test_ramp_istio_races import (
    request_for as kube_request,
)
from tests.support.prometheus_server import PrometheusServer, ScriptedPrometheus, poll_until, vector_reply
from tests.support.recording_target import RecordingTarget
from tests.support.slow_proxy import SlowProxy
from tests.support.task_arguments import validated

pytestmark = pytest.mark.slow

NAMESPACE = "shop"
STEPS = [{"percent": 1, "hold": "1s"}, {"percent": 5, "hold": "1s"}, {"percent": 10, "hold": "1s"}]
WINDOW = 5  # seconds: the scrape interval is 1 s
DAY = 86400.0


# -- servers and traffic ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def source() -> Iterator[IstioMetricsSource]:
    metrics = IstioMetricsSource(namespace=NAMESPACE, service="user-service").start()
    yield metrics
    metrics.stop()


# A rule that sets no label of its own, so an alert gate with any labels could match what it fires:
# the gate then queries ALERTS (it is inconclusive, without a query, when no loaded rule could fire).
NEVER_FIRING_RULE = """\
groups:
  - name: never
    rules:
      - alert: NeverFires
        expr: vector(1) < 0
"""


@pytest.fixture(scope="module")
def prometheus(source: IstioMetricsSource, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), targets=[source.target], rules={"never": NEVER_FIRING_RULE}
    )
    server.start()
    yield server
    server.stop()


class Traffic:
    """Serves requests on the mirror workloads in the background, every 200 ms, until stopped."""

    def __init__(self, source: IstioMetricsSource) -> None:
        self.source = source
        self._mix: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()

    def serve(self, workload: str, ok: int = 5, errors: int = 0) -> None:
        """From now on, every tick `workload` answers `ok` requests with 200 and `errors` with 503."""
        with self._lock:
            self._mix[workload] = (ok, errors)

    def _run(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                mix = dict(self._mix)
            for workload, (ok, errors) in mix.items():
                self.source.add(workload, n=ok, code=200, latency_ms=20)
                if errors:
                    self.source.add(workload, n=errors, code=503, latency_ms=20)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)


@pytest.fixture
def traffic(source: IstioMetricsSource) -> Iterator[Traffic]:
    feeder = Traffic(source)
    yield feeder
    feeder.stop()


# -- the ramp ----------------------------------------------------------------------------------


def ramp_request(prometheus_url: str, name: str, prometheus_options: dict | None = None, **given: Any) -> RampRequest:
    """The task of workloads <name>-v1 (primary) and <name>-v2 (mirror), as the action plugin gets it."""
    task = {
        "service": "user-service",
        "namespace": NAMESPACE,
        "environment": "local",
        "steps": STEPS,
        "gates": {
            "thresholds": [{"name": "mirror-5xx-ratio", "metric": "error_ratio", "operator": "<", "value": 0.05}]
        },
        "min_requests": 5,
        "window": f"{WINDOW}s",
        "workloads": {"primary": f"{name}-v1", "mirror": [f"{name}-v2"]},
        "prometheus": {"url": prometheus_url, "timeout": "1s", "retries": 0, **(prometheus_options or {})},
        **given,
    }
    return RampRequest.from_arguments(validated(task), check_mode=False, diff=False)


def runner(request: RampRequest, target: RecordingTarget, **options: Any) -> Runner:
    """The engine's runner as adapter.execute builds it (execute hides on_pass, clock and sleep)."""
    return Runner(request.config, target, build_prometheus(request), request.notifier, **options)


def ramping(step_index: int, started: float) -> RampState:
    percent = float(STEPS[step_index]["percent"])
    return replace(
        RampState.initial(), status="ramping", step_index=step_index, percent=percent, step_started_at=started
    )


def verdicts(outcome: RunOutcome) -> set[Verdict]:
    return {gate.verdict for gate in outcome.gates}


def one_pass_until(request: RampRequest, target: RecordingTarget, done, what: str, timeout: float = 20) -> RunOutcome:
    """Scheduled runs, one every 0.5 s, until `done(outcome)`: waits for Prometheus to have the data."""

    def attempt() -> RunOutcome | None:
        outcome = runner(request, target).run()
        return outcome if done(outcome) else None

    return poll_until(attempt, timeout=timeout, interval=0.5, what=what)


@dataclass(frozen=True)
class Pass:
    ended: float  # time.monotonic()
    action: Action
    reason: str
    verdicts: frozenset[Verdict]
    step_index: int | None
    percent: float


class PassLog:
    """The runner's on_pass: what each pass of a watch-mode run decided."""

    def __init__(self) -> None:
        self.passes: list[Pass] = []
        self._lock = threading.Lock()

    def record(self, outcome: RunOutcome) -> None:
        decision = outcome.last
        assert decision is not None
        seen = Pass(
            time.monotonic(),
            decision.action,
            decision.reason,
            frozenset(verdicts(outcome)),
            outcome.after.state.step_index,
            outcome.after.percent,
        )
        with self._lock:
            self.passes.append(seen)

    def started_between(self, start: float, end: float = float("inf")) -> list[Pass]:
        """The passes that began after `start` (the one before had ended) and ended before `end`."""
        with self._lock:
            passes = list(self.passes)
        return [now for before, now in itertools.pairwise(passes) if before.ended >= start and now.ended <= end]


class _Stopped(Exception):
    pass


class Watch:
    """A watch-mode run in a thread; leaving the block stops it at its next sleep."""

    def __init__(self, request: RampRequest, target: RecordingTarget, passes: PassLog) -> None:
        assert request.config.mode == "watch"
        self._stopping = threading.Event()
        self._runner = runner(request, target, on_pass=passes.record, sleep=self._sleep)
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)
        self.outcome: RunOutcome | None = None
        self.error: BaseException | None = None

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stopped

    def _run(self) -> None:
        try:
            self.outcome = self._runner.run()
        except _Stopped:
            pass
        except BaseException as e:  # reported by the test
            self.error = e

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=15)

    def join(self, timeout: float) -> RunOutcome:
        self._thread.join(timeout=timeout)
        assert not self._thread.is_alive(), f"the watch run did not end within {timeout:g}s"
        assert self.error is None, f"the watch run failed: {self.error!r}"
        assert self.outcome is not None
        return self.outcome


# -- (a) Prometheus killed mid-ramp -------------------------------------------------------------

KILL_HOLD = 3.0
KILL_STEPS = [{"percent": 1, "hold": "1s"}, {"percent": 5, "hold": f"{KILL_HOLD:g}s"}, {"percent": 10, "hold": "1s"}]


def test_prometheus_killed_mid_ramp_holds_the_step_until_it_is_back(
    prometheus: PrometheusServer, traffic: Traffic
) -> None:
    traffic.serve("killed-v2")
    request = ramp_request(
        prometheus.url, "killed", steps=KILL_STEPS, mode="watch", poll_interval="500ms", deadline="60s"
    )
    target, passes = RecordingTarget(), PassLog()
    with Watch(request, target, passes) as watch:
        poll_until(lambda: target.now()[0].step_index == 1, timeout=30, interval=0.05, what="step 2, Prometheus up")
        prometheus.stop(kill=True)
        killed = time.monotonic()
        at_kill, percent_at_kill = target.now()
        hold_over = killed + (at_kill.step_started_at + KILL_HOLD - time.time())
        try:
            # Down until step 2's hold is over and three more passes have looked.
            poll_until(
                lambda: len(passes.started_between(max(killed, hold_over))) >= 3,
                timeout=20,
                interval=0.1,
                what="three passes with Prometheus down after the hold",
            )
        finally:
            restarted, restarted_at = time.monotonic(), time.time()
            prometheus.start()
        outcome = watch.join(timeout=30)

    down = passes.started_between(killed, restarted)
    assert len(down) >= 3
    for seen in down:
        assert (seen.action, seen.step_index, seen.percent) == (Action.HOLD, 1, 5.0), seen
        assert seen.verdicts == {Verdict.INCONCLUSIVE}, seen
        assert "Prometheus unreachable" in seen.reason and "Connection refused" in seen.reason, seen.reason
    assert any("hold done, waiting for passing gates" in seen.reason for seen in down), [p.reason for p in down]
    # What was written meanwhile is bookkeeping: same step, same start, same percent.
    for write in target.accesses("write", since=killed, until=restarted):
        assert write.percent == percent_at_kill == 5.0
        assert (write.state.status, write.state.step_index, write.state.step_started_at) == (
            "ramping",
            1,
            at_kill.step_started_at,
        )

    # Back up: the ramp moves on from where it held.
    assert outcome.after.state.status == "completed" and target.percent == 10.0
    history = [event for event in target.state.history if event["event"] in ("start", "advance", "complete")]
    assert [(event["event"], event["step"]) for event in history] == [
        ("start", 0),
        ("advance", 1),
        ("advance", 2),
        ("complete", 2),
    ]
    assert history[2]["at"] > restarted_at, "step 3 began only once Prometheus was back"


# -- (b) Prometheus slower than the timeout -------------------------------------------------


@pytest.fixture
def slow_proxy(prometheus: PrometheusServer) -> Iterator[SlowProxy]:
    proxy = SlowProxy(prometheus.url, delay=2.0).start()
    yield proxy
    proxy.stop()


SLOW = {"timeout": "500ms", "retries": 1}


def test_prometheus_slower_than_the_timeout_never_starts_a_ramp(slow_proxy: SlowProxy) -> None:
    request = ramp_request(slow_proxy.url, "slow-start", prometheus_options=SLOW)
    target = RecordingTarget()
    started = time.monotonic()
    outcome = runner(request, target).run()
    elapsed = time.monotonic() - started
    decision = outcome.last
    assert (decision.action, outcome.changed, target.writes, target.percent) == (Action.HOLD, False, 0, 0.0)
    assert decision.reason.startswith("not started: cannot check the gate queries: "), decision.reason
    assert "no answer after 2 attempt(s); last error: timed out after 0.5s" in decision.reason
    assert slow_proxy.url in decision.reason
    # Two attempts of 0.5 s and one backoff (at most 0.5 s): bounded, not the proxy's 2 s per answer.
    assert elapsed < 2.5


def test_prometheus_slower_than_the_timeout_holds_a_step_whose_hold_is_over(
    slow_proxy: SlowProxy, traffic: Traffic
) -> None:
    traffic.serve("slow-v2")
    request = ramp_request(slow_proxy.url, "slow", prometheus_options=SLOW)
    state = ramping(0, started=time.time() - 3600)
    target = RecordingTarget(state, percent=1.0)
    outcome = runner(request, target).run()
    decision = outcome.last
    assert (decision.action, outcome.changed) == (Action.HOLD, False)
    assert verdicts(outcome) == {Verdict.INCONCLUSIVE}
    assert "Prometheus unreachable" in decision.reason and "timed out after 0.5s" in decision.reason
    assert "hold done, waiting for passing gates" in decision.reason
    stored, percent = target.now()
    assert (stored.step_index, stored.step_started_at, percent) == (0, state.step_started_at, 1.0)
    assert all(write.percent == 1.0 for write in target.accesses("write"))

    # The same ramp with the answers on time advances: it was the delay, nothing else.
    slow_proxy.delay = 0
    one_pass_until(request, target, lambda o: o.changed, "an advance once Prometheus answers in time")
    assert (target.state.step_index, target.percent) == (1, 5.0)


# -- (c) clock skew between runs ----------------------------------------------------------------


def test_a_step_started_ahead_of_this_clock_is_held_in_full(prometheus: PrometheusServer, traffic: Traffic) -> None:
    """The run that started the step had a clock an hour ahead: this run counts the step as just
    started, on every pass, however good the evidence; the stored start is kept, not rewritten."""
    traffic.serve("ahead-v2")
    request = ramp_request(prometheus.url, "ahead")
    ahead = time.time() + 3600 + 30
    target = RecordingTarget(ramping(0, started=ahead), percent=1.0)
    one_pass_until(request, target, lambda o: verdicts(o) == {Verdict.PASS}, "the gates pass on real traffic")
    for _ in range(3):
        outcome = runner(request, target).run()
        decision = outcome.last
        assert verdicts(outcome) == {Verdict.PASS}
        assert (decision.action, decision.seconds_left) == (Action.HOLD, 1.0)
        assert "(clock skew: the step started 1h ahead of this clock; counted as just started)" in decision.reason
    stored, percent = target.now()
    assert (stored.step_index, stored.step_started_at, percent) == (0, ahead, 1.0)


def test_clock_skew_never_delays_a_rollback(prometheus: PrometheusServer, traffic: Traffic) -> None:
    """Far behind (30 days) and the mirror failing: the breach rolls back at once."""
    traffic.serve("skewed-breach-v2", ok=5, errors=5)
    request = ramp_request(prometheus.url, "skewed-breach")
    target = RecordingTarget(ramping(1, started=time.time() + 30 * DAY), percent=5.0)
    outcome = one_pass_until(request, target, lambda o: o.changed, "the rollback")
    assert outcome.last.action is Action.ROLLBACK
    assert (target.state.status, target.percent, target.state.rollback["gate"]) == (
        "rolled_back",
        0.0,
        "mirror-5xx-ratio",
    )


def test_a_step_started_behind_this_clock_advances_on_the_whole_claimed_step(
    prometheus: PrometheusServer, traffic: Traffic
) -> None:
    """Defined behaviour: the writer's clock was 30 days behind, so the step looks 30 days old.
    The engine cannot tell; the hold counts as over, and the whole-step look covers the 30 days
    claimed (all the data there is), so the step advances only on evidence over all of it."""
    traffic.serve("behind-v2")
    request = ramp_request(prometheus.url, "behind")
    target = RecordingTarget(ramping(0, started=time.time() - 30 * DAY), percent=1.0)
    client = build_prometheus(request)
    sent: list[str] = []
    ask = client.query
    client.query = lambda query, at=None: sent.append(query) or ask(query, at)
    poll_until(
        lambda: Runner(request.config, target, client, request.notifier).run().changed,
        timeout=20,
        interval=0.5,
        what="the advance",
    )
    assert (target.state.step_index, target.percent) == (1, 5.0)
    ranges = {int(seconds) for query in sent for seconds in re.findall(r"\[(\d+)s\]", query)}
    assert WINDOW in ranges and max(ranges) >= 30 * DAY, ranges


def test_a_breach_early_in_a_step_that_looks_older_still_rolls_back(
    prometheus: PrometheusServer, traffic: Traffic
) -> None:
    """The same 30-day-old looking step, with 5xx earlier in the step and a clean recent window:
    the whole-step look sees them, so the step is rolled back, not advanced."""
    errors = 'sum(increase(istio_requests_total{destination_workload="early-breach-v2",response_code="503"}[1h]))'
    recent = (
        f'sum(rate(istio_requests_total{{destination_workload="early-breach-v2",response_code="503"}}[{WINDOW}s])) == 0'
    )
    traffic.serve("early-breach-v2", ok=5, errors=5)
    poll_until(
        lambda: prometheus.query(errors) and float(prometheus.query(errors)[0]["value"][1]) >= 20,
        timeout=20,
        interval=0.2,
        what="5xx recorded",
    )
    traffic.serve("early-breach-v2", ok=5, errors=0)
    poll_until(lambda: prometheus.query(recent), timeout=20, interval=0.2, what="a recent window without 5xx")

    request = ramp_request(prometheus.url, "early-breach")
    target = RecordingTarget(ramping(0, started=time.time() - 30 * DAY), percent=1.0)
    outcome = runner(request, target).run()
    shown = {gate.name: gate.verdict for gate in outcome.gates}
    assert shown["mirror-5xx-ratio"] is Verdict.PASS, "the recent window is clean"
    assert shown["mirror-5xx-ratio (whole step)"] is Verdict.FAIL
    assert outcome.last.action is Action.ROLLBACK
    assert "gate failed: mirror-5xx-ratio (whole step)" in outcome.last.reason
    assert (target.state.status, target.percent) == ("rolled_back", 0.0)


# -- (d) the Kubernetes API not answering -------------------------------------------------------

API_TIMEOUT = 0.5
API_DELAY = 1.5
LONG_HOLD_STEPS = [{"percent": p, "hold": "30s"} for p in PERCENTS]


@pytest.fixture(scope="module", autouse=True)
def virtual_service_schema() -> Iterator[threading.Thread]:
    """The API double validates a VirtualService with a model whose first import takes 10-20 s:
    import it in the background while the Prometheus tests mostly wait."""
    (path,) = [rt.model_path("v1") for rt in RESOURCE_TYPES if rt.kind == "VirtualService"]
    loader = threading.Thread(target=importlib.import_module, args=(path.split(":")[0],), daemon=True)
    loader.start()
    yield loader
    loader.join(timeout=60)


@pytest.fixture
def kube(kube_api: KubeApiServer, virtual_service_schema: threading.Thread) -> KubeApiServer:  # noqa: F811
    virtual_service_schema.join(timeout=60)
    return kube_api


@pytest.fixture(scope="module")
def scripted_prometheus() -> Iterator[ScriptedPrometheus]:
    scripted = ScriptedPrometheus()
    scripted.default = vector_reply("0")  # no traffic minimum below, no errors: every gate passes
    scripted.start()
    yield scripted
    scripted.stop()


def impatient_driver(kube: KubeApiServer) -> IstioDriver:
    """The istio driver as build_driver makes it, but waiting 0.5 s per request, not 30 s (no
    task argument sets it)."""
    connection = KubeConnection(host=kube.url, api_key=kube.token, validate_certs=False)
    return IstioDriver(api_client(connection), KUBE_NAMESPACE, SERVICE, timeout=API_TIMEOUT)


def test_kubernetes_api_not_answering_a_read_fails_clearly_and_changes_nothing(
    kube: KubeApiServer,
    scripted_prometheus: ScriptedPrometheus,
) -> None:
    seeded = seed(kube, 0)  # step 1 held 60 s: a run that could read would advance
    kube.clear_requests()
    asked = len(scripted_prometheus.requests)
    fault = kube.inject("GET", VS_PATH, delay=API_DELAY, times=10)
    started = time.monotonic()
    with pytest.raises(DriverError) as failure:
        execute(kube_request(kube, scripted_prometheus, steps=LONG_HOLD_STEPS), driver=impatient_driver(kube))
    elapsed = time.monotonic() - started
    message = str(failure.value)
    assert message.startswith(f"reading VirtualService {KUBE_NAMESPACE}/{SERVICE} failed: "), message
    assert "Read timed out" in message
    assert kube.token not in message
    # One retry of a GET that timed out (api_client sets it; urllib3's default would be three):
    # bounded, 2 x the timeout, not one wait per gate or per step.
    assert fault.served == 2 and elapsed < 2 * API_TIMEOUT + 1.5
    assert len(scripted_prometheus.requests) == asked, "no gate was checked without the state"
    poll_until(
        lambda: len(kube.requests_matching("GET", VS_PATH)) == fault.served, timeout=10, what="the reads answered"
    )
    assert patches(kube) == []
    assert live(kube) == seeded


LIST_PATH = r"/virtualservices$"


def test_a_list_without_answer_fails_the_reads_at_once_a_refused_list_falls_back_to_gets(kube: KubeApiServer) -> None:
    """The LIST of a pass (several services of one namespace) finds the API server hung: every
    read of the pass fails at once with that, instead of one timed-out GET after another. A
    LIST the server refuses (RBAC may allow get, not list) leaves each read to its GET."""
    seed(kube, 0)
    drivers = [impatient_driver(kube) for _ in range(3)]
    kube.clear_requests()
    hung = kube.inject("GET", LIST_PATH, delay=API_DELAY, times=2)
    started = time.monotonic()
    preload_namespaces(drivers)
    for driver in drivers:
        with pytest.raises(DriverError, match="not tried, the LIST before it failed: listing VirtualService") as e:
            driver.read()
        assert "Read timed out" in str(e.value) and kube.token not in str(e.value)
    assert time.monotonic() - started < 2 * API_TIMEOUT + 1.5  # one LIST and its retry, no GET after it
    assert hung.served == 2 and kube.requests_matching("GET", VS_PATH) == []
    # Only the next read: the one after it asks again.
    assert drivers[0].read().state.status == "ramping"

    refused = kube.inject("GET", LIST_PATH, status=403, times=1)
    kube.clear_requests()
    preload_namespaces(drivers)
    assert [driver.read().state.status for driver in drivers] == ["ramping"] * 3
    assert refused.served == 1 and len(kube.requests_matching("GET", VS_PATH)) == 3


@pytest.mark.parametrize(
    ("server_answer", "next_action"),
    [(None, "hold"), (503, "advance")],
    ids=["the-patch-lands-after-the-timeout", "the-patch-fails-after-the-timeout"],
)
def test_kubernetes_api_not_answering_a_write_fails_clearly_and_the_next_run_neither_skips_nor_repeats(
    kube: KubeApiServer,
    scripted_prometheus: ScriptedPrometheus,
    server_answer: int | None,
    next_action: str,
) -> None:
    seed(kube, 0)
    kube.clear_requests()
    fault = kube.inject("PATCH", VS_PATH, status=server_answer, delay=API_DELAY, times=1)
    request = kube_request(kube, scripted_prometheus, steps=LONG_HOLD_STEPS)
    with pytest.raises(DriverError) as failure:
        execute(request, driver=impatient_driver(kube))
    message = str(failure.value)
    assert message.startswith(f"patching VirtualService {KUBE_NAMESPACE}/{SERVICE} failed: "), message
    assert "Read timed out" in message and "the write may have landed: the next run reads it back" in message
    assert fault.served == 1, "a write that timed out is not sent again"

    # The server finishes the request the run gave up on: the mirror and the state moved
    # together (one patch), or not at all.
    poll_until(lambda: patches(kube), timeout=10, interval=0.05, what="the delayed PATCH answered")
    assert patches(kube) == [server_answer or 200]
    assert assert_consistent(kube).step_index == (1 if server_answer is None else 0)

    result = execute(kube_request(kube, scripted_prometheus, steps=LONG_HOLD_STEPS))
    assert (result["action"], result["step"], result["percent"]) == (next_action, 2, 5.0)
    assert steps_taken(assert_consistent(kube)) == [("start", 0), ("advance", 1)]


# -- PromQL that only Prometheus can refuse ---------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        'sum(rate(istio_requests_total{destination_workload=~"${mirror_workload}"[${window}]))',
        "sum(rate(istio_requests_total{{ mirror_selector }}[${window}]))",
    ],
    ids=["unbalanced-brace", "jinja-left-over"],
)
def test_a_query_prometheus_refuses_fails_the_start_before_any_write(prometheus: PrometheusServer, query: str) -> None:
    gates = {"thresholds": [{"name": "custom", "query": query, "operator": "<", "value": 1}]}
    request = ramp_request(prometheus.url, "syntax", gates=gates)
    target = RecordingTarget()
    with pytest.raises(ConfigError, match=r"gate 'custom': Prometheus rejected its query: .*parse error"):
        execute(request, driver=target)
    assert (target.writes, target.percent) == (0, 0.0)


@pytest.mark.parametrize(
    ("inconclusive_action", "percent_after", "words"),
    [
        pytest.param("hold", 1.0, "the mirror stays at 1%", id="mirror-stays"),
        pytest.param("rollback", 0.0, "mirror removed (inconclusive_action=rollback)", id="rollback-on-errors"),
    ],
)
def test_a_query_prometheus_refuses_mid_ramp_fails_the_run_naming_the_gate(
    prometheus: PrometheusServer, traffic: Traffic, inconclusive_action: str, percent_after: float, words: str
) -> None:
    """The gates changed under a running ramp: a rejected query is a configuration error, not
    missing evidence (which would hold the step for ever). The run fails naming the gate and
    Prometheus' words; the mirror stays, or goes if the operator asked for rollback on errors."""
    name = f"syntax-mid-{inconclusive_action}"
    traffic.serve(f"{name}-v2")
    query = 'sum(rate(istio_requests_total{destination_workload=~"${mirror_workload}"[${window}]))'
    gates = {"thresholds": [{"name": "custom", "query": query, "operator": "<", "value": 1}]}
    request = ramp_request(prometheus.url, name, gates=gates, inconclusive_action=inconclusive_action)
    state = ramping(0, started=time.time() - 3600)
    target = RecordingTarget(state, percent=1.0)

    def attempt() -> ConfigError | None:
        try:
            runner(request, target).run()  # holds while the traffic gate lacks requests
        except ConfigError as e:
            return e
        return None

    error = poll_until(attempt, timeout=20, interval=0.5, what="the custom gate's query sent")
    assert "gate 'custom'" in str(error) and "parse error" in str(error) and words in str(error), str(error)
    assert target.percent == percent_after
    assert target.state.step_index == 0


def test_label_values_with_promql_metacharacters_reach_prometheus_as_one_string(prometheus: PrometheusServer) -> None:
    """An alert matcher trying `"} or vector(1) #`: the real parser takes the query, and the
    injected `vector(1)` never fires the gate (it stayed inside the string)."""
    gates = {"alerts": [{"name": "injected", "matchers": {"severity": 'critical"} or vector(1) #', "path": 'a\\b"\n'}}]}
    request = ramp_request(prometheus.url, "escaped", gates=gates, min_requests=0)
    target = RecordingTarget()
    assert execute(request, driver=target)["action"] == "start"
    outcome = runner(request, target).run()
    alert = next(gate for gate in outcome.gates if gate.name == "injected")
    # "not firing" is the answer of the query itself (NeverFires could fire these labels).
    assert (alert.verdict, alert.reason) == (Verdict.PASS, f"not firing in the last {WINDOW}s")
