"""The sandbox backend: its request log (counts exact past the details it keeps), and the
behaviour set on /control (the drawn latencies and failures, tested without waiting)."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict

import pytest

from mirrorsandbox.backend import (
    MAX_LATENCY_MS,
    RECENT_LIMIT,
    Backend,
    Behaviour,
    behaviour_arguments,
    directories,
    parse_args,
)


def _backend() -> Backend:
    return Backend("v2", "demo-service-v2", "sandbox", "demo-service", "v2")


def _serve(backend: Backend, path: str) -> None:
    backend.record(200, 1.0, {"path": path, "method": "GET", "code": 200})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", ["/"]),
        ("/load/7", ["/", "/load/"]),
        ("/a/b/c", ["/", "/a/", "/a/b/"]),
        ("/load/", ["/", "/load/"]),
    ],
)
def test_directories(path: str, expected: list[str]) -> None:
    assert directories(path) == expected


def test_count_is_exact_beyond_the_recent_details() -> None:
    backend = _backend()
    for n in range(RECENT_LIMIT + 500):
        _serve(backend, f"/cell/{n}")
    _serve(backend, "/other/1")
    served = backend.served("/cell/", limit=3)
    assert served["count"] == RECENT_LIMIT + 500
    assert [e["path"] for e in served["recent"]] == [
        f"/cell/{n}" for n in range(RECENT_LIMIT + 497, RECENT_LIMIT + 500)
    ]
    assert backend.served("/", limit=0) == {"count": RECENT_LIMIT + 501, "recent": []}


def test_prefix_is_a_directory() -> None:
    backend = _backend()
    for path in ("/load/1", "/load/2?q=1", "/loadx/1", "/load", "/deep/load/1"):
        _serve(backend, path)
    # "/load" and "/load/" both mean under /load/: not /loadx/, not the bare /load, not /deep/load/.
    for prefix in ("/load", "/load/"):
        served = backend.served(prefix, limit=10)
        assert served["count"] == 2
        assert [e["path"] for e in served["recent"]] == ["/load/1", "/load/2?q=1"]
    assert backend.served("/deep/", limit=0)["count"] == 1
    assert backend.served("/nothing/", limit=5) == {"count": 0, "recent": []}


# --- the behaviour: latency distribution and error probability -------------------------------

SAMPLE = 20000


def _delays(behaviour: Behaviour, seed: int = 11, n: int = SAMPLE) -> list[float]:
    rng = random.Random(seed)
    return [behaviour.delay_ms(rng) for _ in range(n)]


@pytest.mark.parametrize(
    ("median", "spread"),
    [
        pytest.param(20.0, 0.5, id="median-20ms-spread-0.5"),
        pytest.param(5.0, 1.0, id="median-5ms-spread-1"),
        pytest.param(200.0, 0.1, id="median-200ms-spread-0.1"),
    ],
)
def test_drawn_latencies_have_the_median_and_log_sd_set(median: float, spread: float) -> None:
    logs = [math.log(d) for d in _delays(Behaviour(latency_median_ms=median, latency_spread=spread))]

    # Standard errors over 20,000 draws: the median's log about 1.25 spread/sqrt(n), the log-sd's
    # about spread/sqrt(2n); 5 of them each.
    assert statistics.median(logs) == pytest.approx(math.log(median), abs=5 * 1.26 * spread / math.sqrt(SAMPLE))
    assert statistics.stdev(logs) == pytest.approx(spread, abs=5 * spread / math.sqrt(2 * SAMPLE))


def test_spread_zero_is_the_median_every_time_and_latency_ms_adds_to_it() -> None:
    assert set(_delays(Behaviour(latency_median_ms=30.0), n=100)) == {30.0}
    assert set(_delays(Behaviour(latency_ms=7.0), n=100)) == {7.0}
    assert set(_delays(Behaviour(latency_ms=7.0, latency_median_ms=30.0), n=100)) == {37.0}
    assert set(_delays(Behaviour(), n=100)) == {0.0}


def test_a_draw_never_waits_past_the_cap() -> None:
    delays = _delays(Behaviour(latency_median_ms=50000.0, latency_spread=3.0), n=2000)
    assert max(delays) == MAX_LATENCY_MS
    assert min(delays) < 50000.0


@pytest.mark.parametrize("probability", [0.0, 0.005, 0.05, 0.5, 1.0])
def test_failures_follow_the_error_probability(probability: float) -> None:
    rng = random.Random(5)
    failures = sum(Behaviour(error_ratio=probability).fails(rng) for _ in range(SAMPLE))

    # Within 5 binomial standard deviations (exact at 0 and 1).
    bound = 5 * math.sqrt(SAMPLE * probability * (1 - probability))
    assert abs(failures - SAMPLE * probability) <= bound


def test_a_seed_repeats_the_draws_of_the_backend() -> None:
    backend = _backend()
    behaviour = Behaviour.validated({"error_ratio": 0.3, "latency_median_ms": 10, "latency_spread": 0.8, "seed": 42})
    backend.set_behaviour(behaviour)
    first = [backend.draw() for _ in range(50)]
    backend.set_behaviour(behaviour)
    again = [backend.draw() for _ in range(50)]
    backend.set_behaviour(Behaviour.validated({**asdict(behaviour), "seed": 43}))

    assert first == again
    assert [backend.draw() for _ in range(50)] != first
    assert len({delay for delay, _ in first}) == 50
    assert {failed for _, failed in first} == {True, False}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param({"latency_spread": -0.1}, "latency_spread is -0.1, expected 0..3", id="negative-spread"),
        pytest.param({"latency_spread": 4}, "latency_spread is 4, expected 0..3", id="spread-too-wide"),
        pytest.param(
            {"latency_median_ms": 60001}, "latency_median_ms is 60001, expected 0..60000", id="median-too-long"
        ),
        pytest.param({"latency_median_ms": "20"}, "latency_median_ms is '20', expected a number", id="median-a-string"),
        pytest.param({"error_ratio": 1.5}, "error_ratio is 1.5, expected 0..1", id="probability-above-1"),
        pytest.param({"seed": 1.5}, "seed is 1.5, expected a whole number or null", id="seed-not-whole"),
        pytest.param({"latency_median": 20}, "unknown key(s) latency_median; known: error_ratio", id="unknown-key"),
        pytest.param([1], "expected a JSON object", id="not-an-object"),
    ],
)
def test_a_bad_behaviour_is_refused_naming_the_key_and_what_it_takes(data: object, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        Behaviour.validated(data)
    assert says in str(caught.value)


def test_the_old_control_object_means_what_it_did() -> None:
    behaviour = Behaviour.validated({"error_ratio": 0.3, "latency_ms": 2000})

    assert asdict(behaviour) == {
        "error_ratio": 0.3,
        "latency_ms": 2000.0,
        "latency_median_ms": 0.0,
        "latency_spread": 0.0,
        "seed": None,
    }
    assert set(_delays(behaviour, n=10)) == {2000.0}


COMMAND_LINE = ["--name", "v2", "--port", "1", "--admin-port", "2"]


def test_the_command_line_sets_every_control_key() -> None:
    behaviour = ["--error-ratio", "0.01", "--latency-median-ms", "20", "--latency-spread", "0.5", "--seed", "9"]
    args = parse_args([*COMMAND_LINE, *behaviour, "--latency-ms", "1"])

    assert Behaviour.validated(behaviour_arguments(args)) == Behaviour(0.01, 1.0, 20.0, 0.5, 9)
    default = parse_args(COMMAND_LINE)
    assert Behaviour.validated(behaviour_arguments(default)) == Behaviour()
