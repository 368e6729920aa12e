"""The judge gates against a real Prometheus scraping Istio-shaped histograms every second.

Each test has its own workloads. The candidate's latencies are the baseline's, or the same
draws times two; the waits are deadline polls that keep feeding traffic while they wait.
"""

from __future__ import annotations

import math
import random
import time

import pytest

from mirrorramp.batch import BatchedPrometheus
from mirrorramp.gates import check_queries, evaluate, parse_gates
from mirrorramp.model import Verdict
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.promql import QueryContext
from mirrorsandbox.istio_metrics_source import IstioMetricsSource
from tests.support.prometheus_server import PrometheusServer, poll_until

pytestmark = pytest.mark.slow

NAMESPACE = "shop"
WINDOW = 60
GATES = parse_gates({"min_requests": 10, "judges": [{"name": "judge-latency", "metric": "latency"}]})


@pytest.fixture(scope="module")
def source():
    metrics = IstioMetricsSource(namespace=NAMESPACE, service="user-service").start()
    yield metrics
    metrics.stop()


@pytest.fixture(scope="module")
def prometheus(source, tmp_path_factory):
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets=[source.target])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(prometheus):
    gate_client = PrometheusClient(prometheus.url, timeout=2.0, retries=1, backoff=0.05)
    yield gate_client
    gate_client.close()


def context(name: str) -> QueryContext:
    return QueryContext("user-service", NAMESPACE, "local", f"{name}-v1", (f"{name}-v2",))


def feeder(source: IstioMetricsSource, name: str, factor: float, seed: int):
    """Serve 150 requests at each side: log-normal latencies (median 40 ms), the candidate's the
    same draws times `factor`."""
    rng = random.Random(seed)

    def feed() -> None:
        for _ in range(150):
            latency = rng.lognormvariate(math.log(40), 0.8)
            source.add(f"{name}-v1", latency_ms=latency)
            source.add(f"{name}-v2", latency_ms=latency * factor)

    return feed


def judge_result(client, name: str, at: float | None = None, judge_window: float | None = None):
    results = evaluate(GATES, client, context(name), WINDOW, at=at, judge_window_seconds=judge_window)
    (result,) = [r for r in results if r.kind == "judge"]
    return result


def test_the_judge_query_is_accepted_by_prometheus(client):
    assert check_queries(GATES, client, context("accepted")) == []


def test_a_candidate_twice_as_slow_fails(source, client):
    feed = feeder(source, "slow", 2.0, seed=1)

    def failed():
        feed()
        result = judge_result(client, "slow")
        return result if result.verdict is Verdict.FAIL else None

    result = poll_until(failed, timeout=60, interval=1.0, what="the judge fails the slow candidate")
    assert result.extra["lower"] > 1.1
    assert result.value == pytest.approx(2.0, rel=0.25)
    assert result.extra["summary"].startswith("latency shift ")
    # The grouped query of a run gives the same judgement as the service's own query, over the
    # run's window and over a judge window of the service's own (its step so far).
    at = time.time()
    for judge_window in (None, 2 * WINDOW):
        alone = judge_result(client, "slow", at, judge_window)
        batched = BatchedPrometheus(client, GATES, [context("slow"), context("other")], WINDOW)
        together = judge_result(batched, "slow", at, judge_window)
        assert (together.value, together.extra["n_candidate"]) == (alone.value, alone.extra["n_candidate"])
        assert together.extra["window"] == f"{judge_window or WINDOW}s"


def test_an_identical_candidate_is_not_failed_and_passes_with_enough_requests(source, client):
    feed = feeder(source, "same", 1.0, seed=2)
    seen: list[Verdict] = []

    def passed():
        feed()
        result = judge_result(client, "same")
        seen.append(result.verdict)
        return result if result.verdict is Verdict.PASS else None

    result = poll_until(passed, timeout=60, interval=1.0, what="the judge passes the identical candidate")
    assert Verdict.FAIL not in seen
    assert result.value == pytest.approx(1.0, abs=0.05)
    assert min(result.extra["n_candidate"], result.extra["n_baseline"]) >= 200
