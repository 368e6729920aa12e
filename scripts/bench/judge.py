"""Benchmark: the statistical judge against today's gates and a Kayenta-style judge, simulated.

Harness (no Prometheus, no sandbox: the counts a Prometheus would return, drawn directly):

- Load: the sandbox's 100 requests/s at the primary (inventories/local sandbox.yml, load.rps);
  the candidate and its baseline shadow are mirrored at --shares (1 % and 5 %) and receive the
  same requests (Envoy draws once for all `mirrors`): per minute N ~ Poisson(100 x share x 60)
  at each. The primary gets its own Poisson(6000) a minute with the baseline's behaviour
  (today's comparison gates use it).
- Behaviour (mirrorsandbox.backend's model): latency log-normal with median 20 ms and log-sd 0.5 at
  the baseline, errors Bernoulli(0.5 %) independent of latency; each scenario changes the
  candidate's median or error probability. Latencies are binned into Istio's buckets (a
  multinomial draw over the log-normal's bucket probabilities: the same as drawing and binning).
- A step: prod's 1-day hold, looked at every minute (a watch loop's poll). Each look judges the
  cumulative counts since the step started, as runner._evaluate does (machine.judge_window_seconds: the
  step so far in whole minutes, and the looks fall on whole minutes). The step fails at its
  first FAIL; it passes at the first look at or after the hold's end where both judges pass;
  still inconclusive at the hold's end, it is looked at for up to one more hold (the runner
  holds on), and counted in the "inconclusive at hold end" table.
- Exact verdicts, cheaply. latency FAIL <=> theta(limit) - 1/2 > z sd, PASS <=> theta(limit) -
  1/2 + z sd <= 0 and min_samples a side, both with both sides resolved (_Histogram.resolved:
  3 occupied buckets), theta = judge.theta_of_shift(...)(limit), z and sd as judge_latency
  computes them (judge_latency inverts the same monotone theta at +-z sd). theta_of_shift costs
  0.9 ms a look in pure Python, 21 CPU-minutes for the default run's 1.4 million looks, so
  `theta_at_limit` computes the same model with numpy for a block of looks at once, and the
  engine's theta_of_shift decides every look where that copy is within THETA_BAND of either
  boundary. A random --theta-checks share of the looks compares the two (the largest
  difference is reported; a verdict that differs outside the band is a mismatch). error ratio
  FAIL <=> ratio_score(limit) > z and Newcombe lower > min_difference; PASS <=>
  (ratio_score(limit) <= -z or Newcombe upper <= min_difference) and min_samples, with the
  engine's functions (a FAIL needs p_c - p_b > min_difference: the others are not called).
  Every decisive look (a FAIL or the PASS) and a random --verify share of the others are judged
  in full by judge_latency and judge_error_ratio; a different verdict is a mismatch, reported
  (JSON and table: must be 0). A full judge_latency takes 50 ms: --verify 0.01 adds 12
  CPU-minutes to the default run, hence its default of 0.001.
- Today's gates on the same data (inventories/prod, each look over the 10-minute window, and
  over the whole step at the hold's end as runner._evaluate does): thresholds mirror 5xx ratio
  < 0.05 and p99 < 1000 ms, the comparisons mirror minus primary 5xx ratio <= 0.02 and mirror
  p99 / primary p99 <= 2.0, p99 by Prometheus' histogram_quantile interpolation; a window with
  fewer than 100 candidate requests is inconclusive (min_requests). They end at the hold's end.
- Kayenta-style, at the same looks: the window's per-minute candidate and baseline values (p99
  by histogram_quantile, 5xx ratio), the Hodges-Lehmann shift with the distribution-free 98 %
  interval (normal approximation of the Mann-Whitney critical value); a metric is High when
  the interval's lower end is above 0.25 x |estimate| and the candidate's mean is above the
  baseline's; both metrics critical, so any High fails the look; not significant passes.
- Floor: the fixed-sample size per side (one-sided alpha 0.01, power 0.95) of the hypothesis
  the judge tests, against its margin: latency on exact log-latencies (normal theory, the true
  log-sd), H0: shift <= 1 + tolerance; errors, the larger of the ratio test (H0: p_c <= 1.25
  p_b) and the difference test (H0: p_c - p_b <= min_difference), each with the null variance
  at the restricted maximum-likelihood proportions (Farrington and Manning, 1990). The grid
  floor: the candidate requests at the first look whose cumulative candidate count reaches the
  floor (a procedure that looks once a minute decides at a look).

Trials: --aa A/A steps and --trials steps per regression, per share, on a pool of --processes
workers. Run from the repository root with the venv (numpy, scipy.special for the vectorised
normal functions; `make bench` runs every benchmark):

    python -m scripts.bench.judge                 # the full run, under 10 minutes on 2 cores
    python -m scripts.bench.judge --quick         # smoke run, build/bench/judge.quick.json
    python -m scripts.bench.judge --write-doc     # and rewrite its section of docs/benchmarks.md
    python -m scripts.bench.judge --from-json --write-doc

Prints progress and a table, writes build/bench/judge.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # python scripts/bench/judge.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import contextlib
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import requests
from scipy import special

from mirrorramp import gates, judge
from mirrorramp.machine import judge_window_seconds
from mirrorramp.model import Verdict
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.promql import QueryContext
from mirrorsandbox.backend import ISTIO_DURATION_BUCKETS_MS
from mirrorsandbox.harness import free_ports, stop_pid
from scripts.bench import results

SCRIPT = "scripts/bench/judge.py"
SECTION = "judge"

Z_95 = NormalDist().inv_cdf(0.975)  # the rates' two-sided 95 % intervals
PRIMARY_RATE = 100.0  # requests/s at the primary: the sandbox's load (inventories/local, sandbox.yml)
HOLD_MIN = 1440  # prod's 1-day hold, in looks (one a minute)
MAX_LOOKS = 2 * HOLD_MIN  # inconclusive at the hold's end: looked at for up to one more hold
WINDOW_MIN = 10  # prod's gate window (today's gates, Kayenta-style)
BASE_MEDIAN_MS = 20.0
BASE_SPREAD = 0.5
BASE_ERRORS = 0.005
# inventories/prod: thresholds (PASS when value < limit), comparisons (PASS when value <= limit).
THRESHOLD_ERRORS, THRESHOLD_P99_MS = 0.05, 1000.0
MAX_ERROR_DELTA, MAX_P99_RATIO = 0.02, 2.0
MIN_REQUESTS = 100
KAYENTA_CONFIDENCE, KAYENTA_TOLERANCE = 0.98, 0.25
FLOOR_ALPHA, FLOOR_POWER = 0.01, 0.95
# The judge gates as the inventories configure them: every setting at its per-metric default.
LATENCY = judge.Settings(tolerance=judge.DEFAULT_TOLERANCES["latency"])
ERRORS = judge.Settings(tolerance=judge.DEFAULT_TOLERANCES["error_ratio"])
BOUNDS = (*map(float, ISTIO_DURATION_BUCKETS_MS), math.inf)
JUDGES = ("judge", "thresholds", "comparisons", "kayenta")
# A look whose numpy theta is this close to a boundary is decided by the engine's theta_of_shift
# (the two agree to ~1e-15; the band is wide so that a slip in the replica cannot decide a look).
THETA_BAND = 1e-3
LOOK_BLOCK = 240  # looks evaluated at once: a failing step stops early, an A/A step needs few blocks
_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Scenario:
    name: str
    median_factor: float = 1.0
    errors: float = BASE_ERRORS

    @property
    def regression(self) -> bool:
        return self.median_factor != 1.0 or self.errors != BASE_ERRORS


SCENARIOS = (
    Scenario("A/A"),
    Scenario("latency +25%", 1.25),
    Scenario("latency +50%", 1.5),
    Scenario("latency x2", 2.0),
    Scenario("errors 0.5->1%", errors=0.01),
    Scenario("errors 0.5->2%", errors=0.02),
    Scenario("errors 0.5->5%", errors=0.05),
)


# -- data --------------------------------------------------------------------------------------


def bucket_probabilities(median_ms: float, spread: float) -> np.ndarray:
    """P(latency in each Istio bucket) for a log-normal of this median and log-sd."""
    cdf = [_NORMAL.cdf((math.log(b) - math.log(median_ms)) / spread) for b in BOUNDS[:-1]]
    edges = np.array([0.0, *cdf, 1.0])
    return np.clip(np.diff(edges), 0.0, None)


def draw_side(
    rng: np.random.Generator, n: np.ndarray, median_ms: float, errors: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per minute: (bucket counts [minutes x buckets], 5xx counts) for request counts `n`."""
    buckets = rng.multinomial(n, bucket_probabilities(median_ms, BASE_SPREAD))
    return buckets.astype(float), rng.binomial(n, errors).astype(float)


def draw_step(rng: np.random.Generator, scenario: Scenario, share: float) -> dict[str, np.ndarray]:
    """The per-minute counts of one step: cb/ce the candidate's buckets and 5xx, bb/be the
    baseline's (MAX_LOOKS minutes, the same request counts), pb/pe the primary's (the hold)."""
    n = rng.poisson(PRIMARY_RATE * share * 60, MAX_LOOKS)
    cand_b, cand_e = draw_side(rng, n, BASE_MEDIAN_MS * scenario.median_factor, scenario.errors)
    base_b, base_e = draw_side(rng, n, BASE_MEDIAN_MS, BASE_ERRORS)
    prim_b, prim_e = draw_side(rng, rng.poisson(PRIMARY_RATE * 60, HOLD_MIN), BASE_MEDIAN_MS, BASE_ERRORS)
    return {"cb": cand_b, "ce": cand_e, "bb": base_b, "be": base_e, "pb": prim_b, "pe": prim_e}


def cumulative(sides: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Counter values at each minute boundary (row 0: the step's start, all zero)."""
    return {k: np.concatenate([np.zeros((1, *v.shape[1:])), np.cumsum(v, axis=0)]) for k, v in sides.items()}


def histogram_quantile(q: float, counts: np.ndarray) -> np.ndarray:
    """Prometheus' histogram_quantile over rows of per-bucket counts (NaN without requests)."""
    counts = np.atleast_2d(counts)
    total = counts.sum(axis=1)
    below = np.cumsum(counts, axis=1)
    rank = q * total
    index = np.minimum((below < rank[:, None]).sum(axis=1), len(BOUNDS) - 1)  # the first bucket reaching rank
    bounds = np.array(BOUNDS)
    lower = np.where(index == 0, 0.0, bounds[np.maximum(index - 1, 0)])
    before = np.where(index == 0, 0.0, np.take_along_axis(below, np.maximum(index - 1, 0)[:, None], 1)[:, 0])
    inside = np.take_along_axis(counts, index[:, None], 1)[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        within = np.where(inside > 0, (rank - before) / inside, 1.0)
        value = lower + (bounds[np.minimum(index, len(BOUNDS) - 2)] - lower) * within
    value = np.where(index >= len(BOUNDS) - 1, BOUNDS[-2], value)  # the +Inf bucket: the highest finite bound
    return np.where(total > 0, value, np.nan)


# -- the judge's latency model, for many looks at once -------------------------------------------

_FINITE = [b for b in BOUNDS if math.isfinite(b)]
# judge._Histogram's log scale: the floor one bucket width below the first bound, then each bound.
LOGS = np.array([math.log(_FINITE[0]) - math.log(_FINITE[1] / _FINITE[0]), *map(math.log, _FINITE)])
_WITHIN = (np.arange(judge.SLICES) + 0.5) / judge.SLICES


def _phi(x: np.ndarray) -> np.ndarray:
    return 0.5 * special.erfc(-x / _SQRT2)


@dataclass
class _Sides:
    """judge._Histogram of one side at each of T looks: shares [T, 20], the normal quantile line
    of each finite bucket [T, 19] (a0, a1) and whether it shapes the bucket (cut, p0, p1)."""

    shares: np.ndarray
    mass: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    cut: np.ndarray
    p0: np.ndarray
    p1: np.ndarray

    @classmethod
    def of(cls, counts: np.ndarray) -> _Sides:
        """judge._Histogram.of, row by row (counts [T, 20], +Inf's last)."""
        looks, buckets = counts.shape[0], len(LOGS) - 1
        total = counts.sum(axis=1)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            running = np.minimum(1.0, np.cumsum(counts[:, :-1], axis=1) / total)
        shares = np.concatenate([np.zeros((looks, 1)), running], axis=1)
        inside = (shares > 0.0) & (shares < 1.0)
        quantiles = np.where(inside, special.ndtri(np.where(inside, shares, 0.5)), np.nan)
        a0, a1 = quantiles[:, :-1].copy(), quantiles[:, 1:].copy()
        lined = inside[:, :-1] & inside[:, 1:]
        mass = shares[:, 1:] - shares[:, :-1]
        for k in range(buckets):  # the edge buckets continue the line of a shaped neighbour, as the engine's
            open_rows = ~lined[:, k] & (mass[:, k] > 0)
            for neighbour, anchor in ((k + 1, k + 1), (k - 1, k)):
                if not (0 <= neighbour < buckets and open_rows.any()):
                    continue
                take = open_rows & lined[:, neighbour]
                slope = (a1[take, neighbour] - a0[take, neighbour]) / (LOGS[neighbour + 1] - LOGS[neighbour])
                q = quantiles[take, anchor]
                a0[take, k] = q + slope * (LOGS[k] - LOGS[anchor])
                a1[take, k] = q + slope * (LOGS[k + 1] - LOGS[anchor])
                lined[take, k] = True
                open_rows &= ~take
        p0, p1 = _phi(np.where(lined, a0, 0.0)), _phi(np.where(lined, a1, 0.0))
        cut = lined & ~(p1 - p0 < 1e-12)
        return cls(shares, mass, a0, a1, cut, p0, p1)

    @property
    def resolved(self) -> np.ndarray:
        """_Histogram.resolved per look: a bucket with requests below and above it."""
        return ((self.shares[:, :-1] > 0.0) & (self.shares[:, 1:] < 1.0) & (self.mass > 0.0)).any(axis=1)

    def slices(self) -> tuple[np.ndarray, np.ndarray]:
        """_Histogram.slices: (log latency, share) of the quadrature nodes, [T, 19 x SLICES]."""
        cut = self.cut[:, :, None]
        p0, p1 = self.p0[:, :, None], self.p1[:, :, None]
        a0, a1 = self.a0[:, :, None], self.a1[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            shaped = (special.ndtri(np.where(cut, p0 + _WITHIN * (p1 - p0), 0.5)) - a0) / (a1 - a0)
        fraction = np.where(cut, shaped, _WITHIN)
        widths = (LOGS[1:] - LOGS[:-1])[None, :, None]
        nodes = LOGS[:-1][None, :, None] + fraction * widths
        occupied = self.mass[:, :, None] > 0
        weights = np.where(occupied, self.mass[:, :, None] / judge.SLICES, 0.0)
        looks = len(self.shares)
        return np.where(occupied, nodes, 0.0).reshape(looks, -1), np.broadcast_to(weights, nodes.shape).reshape(
            looks, -1
        )

    def at(self, y: np.ndarray) -> np.ndarray:
        """_Histogram.at: the share at or below each log latency of y [T, nodes]."""
        k = np.clip(np.searchsorted(LOGS, y, side="right") - 1, 0, len(LOGS) - 2)

        def row(values: np.ndarray) -> np.ndarray:
            return np.take_along_axis(values, k, axis=1)

        start, mass = row(self.shares[:, :-1]), row(self.mass)
        fraction = (y - LOGS[k]) / (LOGS[k + 1] - LOGS[k])
        cut, p0, p1, a0, a1 = row(self.cut), row(self.p0), row(self.p1), row(self.a0), row(self.a1)
        with np.errstate(invalid="ignore", divide="ignore"):
            shaped = start + mass * (_phi(a0 + fraction * (a1 - a0)) - p0) / (p1 - p0)
        value = np.where(cut, shaped, start + fraction * mass)
        value = np.where(y >= LOGS[-1], self.shares[:, -1:], value)
        return np.where(y <= LOGS[0], 0.0, value)


def theta_at_limit(candidate: np.ndarray, baseline: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """(judge.theta_of_shift(BOUNDS, c, b)(limit), both sides resolved) for each row of the two
    cumulative bucket-count arrays [T, 20], computed as the engine does."""
    c_side, b_side = _Sides.of(candidate), _Sides.of(baseline)
    nodes, weights = c_side.slices()
    c_inf, b_finite = 1.0 - c_side.shares[:, -1], b_side.shares[:, -1]
    fixed = c_inf * (b_finite + (1.0 - b_finite) / 2)
    theta = fixed + (weights * b_side.at(nodes - math.log(limit))).sum(axis=1)
    return theta, c_side.resolved & b_side.resolved


# -- the judge at every look of a step ----------------------------------------------------------


@dataclass
class Checks:
    """What the cheap verdicts were checked against: the engine's theta and the full judges."""

    looks: int = 0
    engine_theta: int = 0  # looks near a boundary decided by the engine's theta_of_shift
    theta_checks: int = 0
    theta_max_difference: float = 0.0
    full_checks: int = 0
    mismatches: list[str] = field(default_factory=list)


def latency_verdict(theta: float, resolved: bool, n_c: float, n_b: float) -> Verdict:
    """judge_latency's verdict from theta(1 + tolerance), as it decides (see the module doc)."""
    if n_c <= 0 or n_b <= 0 or not resolved:
        return Verdict.INCONCLUSIVE
    sd, z = _latency_sd(n_c, n_b), _z(n_c, n_b)
    if (theta - 0.5) - z * sd > 0:
        return Verdict.FAIL
    if (theta - 0.5) + z * sd <= 0 and min(n_c, n_b) >= LATENCY.min_samples:
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


def _latency_sd(n_c: float, n_b: float) -> float:
    """judge_latency's sd: the untied null standard deviation of U / (n_c n_b)."""
    return math.sqrt(n_c * n_b / 12.0 * ((n_c + n_b + 1) - 0.0)) / (n_c * n_b)


def _z(n_c: float, n_b: float) -> float:
    return judge.sequence_z(judge.effective_samples(n_c, n_b), LATENCY.alpha, judge.SEQUENCE_TUNED_FOR["latency"])


def error_verdict(xc: float, nc: float, xb: float, nb: float, *, fail_only: bool = False) -> Verdict:
    """judge_error_ratio's verdict from the score at the limit and Newcombe's interval; with
    fail_only, FAIL or INCONCLUSIVE (before the hold's end a pass decides nothing)."""
    if nc <= 0 or nb <= 0:
        return Verdict.INCONCLUSIVE
    limit = 1.0 + ERRORS.tolerance
    z = judge.sequence_z(judge.effective_samples(nc, nb), ERRORS.alpha, judge.SEQUENCE_TUNED_FOR["error_ratio"])
    # Newcombe's lower end is at most the difference, and the score's numerator must be positive.
    could_fail = xc / nc - xb / nb > ERRORS.min_difference and xc / nc - limit * xb / nb > 0
    score = judge.ratio_score(xc, nc, xb, nb, limit) if could_fail or not fail_only else 0.0
    if could_fail and score > z and judge.newcombe_difference(xc, nc, xb, nb, z)[0] > ERRORS.min_difference:
        return Verdict.FAIL
    if fail_only or min(nc, nb) < ERRORS.min_samples:
        return Verdict.INCONCLUSIVE
    if score <= -z or judge.newcombe_difference(xc, nc, xb, nb, z)[1] <= ERRORS.min_difference:
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


def _engine_theta(c: np.ndarray, b: np.ndarray) -> float:
    return judge.theta_of_shift(BOUNDS, tuple(map(float, c)), tuple(map(float, b)))(1.0 + LATENCY.tolerance)


def _full_check(
    look: int,
    c: np.ndarray,
    b: np.ndarray,
    errors: tuple[float, float, float, float],
    cheap: tuple[Verdict, Verdict],
    checks: Checks,
) -> None:
    """The full judges at this look must give the cheap verdicts (latency, errors)."""
    checks.full_checks += 1
    full = (
        judge.judge_latency(BOUNDS, tuple(map(float, c)), tuple(map(float, b)), LATENCY).verdict,
        judge.judge_error_ratio(*errors, ERRORS).verdict,
    )
    if full != cheap:
        checks.mismatches.append(f"look {look}: full {full[0]}/{full[1]}, cheap {cheap[0]}/{cheap[1]}")


@dataclass
class JudgeEnd:
    """How the judge ended a step: the outcome, at which look, and its verdicts at the hold's end."""

    outcome: str  # fail, pass, inconclusive (after a second hold)
    look: int
    at_hold_end: tuple[str, str] | None = None  # (latency, errors) when the hold ended undecided


def judge_step(
    cum: dict[str, np.ndarray], rng: np.random.Generator, theta_checks: float, verify: float
) -> tuple[JudgeEnd, Checks]:
    """Look at every minute of the step, judging its cumulative counts, until the judge decides.

    A block of looks is screened at once: a look goes through the verdicts one by one only when
    it could decide (a latency FAIL by the numpy theta, an error FAIL not ruled out, a look from
    the hold's end on), when its theta is near a boundary, or when it is drawn for a check. The
    others can only be INCONCLUSIVE, or a PASS before the hold's end, which decides nothing.
    """
    checks = Checks()
    limit = 1.0 + LATENCY.tolerance
    error_limit = 1.0 + ERRORS.tolerance
    at_hold_end = None
    for first in range(1, MAX_LOOKS + 1, LOOK_BLOCK):
        looks = np.arange(first, min(first + LOOK_BLOCK, MAX_LOOKS + 1))
        c, b = cum["cb"][looks], cum["bb"][looks]
        n_c, n_b = c.sum(axis=1), b.sum(axis=1)
        thetas, resolved = theta_at_limit(c, b, limit)
        z = np.array([_z(x, y) for x, y in zip(n_c.tolist(), n_b.tolist(), strict=True)])
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = z * np.sqrt(n_c * n_b / 12.0 * ((n_c + n_b + 1) - 0.0)) / (n_c * n_b)  # z sd, as judge_latency
            ratio_c, ratio_b = cum["ce"][looks] / n_c, cum["be"][looks] / n_b
        usable = resolved & (n_c > 0) & (n_b > 0)
        distance = thetas - 0.5
        near = usable & ((np.abs(distance - spread) < THETA_BAND) | (np.abs(distance + spread) < THETA_BAND))
        checked = rng.random(len(looks)) < verify
        sampled = rng.random(len(looks)) < theta_checks
        # error_verdict's own test: a FAIL needs both a difference and a score numerator above 0.
        errors_could_fail = (ratio_c - ratio_b > ERRORS.min_difference) & (ratio_c - error_limit * ratio_b > 0)
        screened = (
            near | checked | sampled | errors_could_fail | (usable & (distance - spread > 0)) | (looks >= HOLD_MIN)
        )
        for i in np.flatnonzero(screened).tolist():
            look = int(looks[i])
            nc, nb = float(n_c[i]), float(n_b[i])
            errors = (float(cum["ce"][look]), nc, float(cum["be"][look]), nb)
            theta = float(thetas[i])
            if usable[i] and (near[i] or checked[i] or sampled[i]):
                engine = _engine_theta(c[i], b[i])
                checks.theta_checks += 1
                checks.theta_max_difference = max(checks.theta_max_difference, abs(engine - theta))
                if near[i]:
                    checks.engine_theta += 1
                elif latency_verdict(engine, True, nc, nb) != latency_verdict(theta, True, nc, nb):
                    checks.mismatches.append(f"look {look}: numpy theta {theta!r}, engine {engine!r}")
                theta = engine
            decides_pass = look >= HOLD_MIN
            latency = latency_verdict(theta, bool(resolved[i]), nc, nb)
            verdicts = (latency, error_verdict(*errors, fail_only=not (decides_pass or checked[i])))
            failed = Verdict.FAIL in verdicts
            passed = decides_pass and verdicts == (Verdict.PASS, Verdict.PASS)
            if checked[i] or failed or passed:
                _full_check(look, c[i], b[i], errors, (latency, error_verdict(*errors)), checks)
            if failed or passed:
                checks.looks += look - first + 1
                return JudgeEnd("fail" if failed else "pass", look, at_hold_end), checks
            if look == HOLD_MIN:
                at_hold_end = (str(latency), str(error_verdict(*errors)))
        checks.looks += len(looks)
    return JudgeEnd("inconclusive", MAX_LOOKS, at_hold_end), checks


# -- today's gates and Kayenta-style, at the same looks -----------------------------------------


def today_first_fails(cum: dict[str, np.ndarray]) -> tuple[int | None, int | None]:
    """(the first look the threshold gates fail, the comparisons'), each over the window, and
    over the whole step at the hold's end; None when they pass the hold."""
    looks = np.arange(1, HOLD_MIN + 1)
    starts = np.maximum(0, looks - WINDOW_MIN)
    windows = {k: cum[k][looks] - cum[k][starts] for k in ("cb", "ce", "pb", "pe")}
    whole = {k: cum[k][HOLD_MIN][None] for k in windows}
    windows = {k: np.concatenate([v, whole[k]]) for k, v in windows.items()}  # the hold's end, whole step
    looks = np.append(looks, HOLD_MIN)
    n_c, n_p = windows["cb"].sum(axis=1), windows["pb"].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_c, ratio_p = windows["ce"] / n_c, windows["pe"] / n_p
        p99_c, p99_p = histogram_quantile(0.99, windows["cb"]), histogram_quantile(0.99, windows["pb"])
        enough = n_c >= MIN_REQUESTS
        thresholds = enough & (~(ratio_c < THRESHOLD_ERRORS) | ~(p99_c < THRESHOLD_P99_MS))
        comparisons = (
            enough
            & (n_p > 0)
            & ((ratio_c - ratio_p > MAX_ERROR_DELTA) | ((p99_p > 0) & (p99_c / p99_p > MAX_P99_RATIO)))
        )

    def first(failed: np.ndarray) -> int | None:
        return int(looks[np.argmax(failed)]) if failed.any() else None

    return first(thresholds), first(comparisons)


def kayenta_high(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Kayenta's Mann-Whitney classifier on rows of per-interval values (no NaN): High when the
    98 % Hodges-Lehmann interval's lower end is above 0.25 x |HL| and the candidate's mean is
    above the baseline's."""
    m, n = candidate.shape[1], baseline.shape[1]
    if m < 2 or n < 2:
        return np.zeros(len(candidate), dtype=bool)
    z = _NORMAL.inv_cdf(1 - (1 - KAYENTA_CONFIDENCE) / 2)
    k = math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))
    if k < 0:
        return np.zeros(len(candidate), dtype=bool)
    differences = np.sort((candidate[:, :, None] - baseline[:, None, :]).reshape(len(candidate), -1), axis=1)
    lower, estimate = differences[:, k], np.median(differences, axis=1)
    return (lower > KAYENTA_TOLERANCE * np.abs(estimate)) & (candidate.mean(axis=1) > baseline.mean(axis=1))


def kayenta_first_fail(sides: dict[str, np.ndarray]) -> int | None:
    """The first look a Kayenta-style judge of the window's per-minute values fails, in the hold."""
    n_c, n_b = sides["cb"][:HOLD_MIN].sum(axis=1), sides["bb"][:HOLD_MIN].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        series = {
            "p99": (histogram_quantile(0.99, sides["cb"][:HOLD_MIN]), histogram_quantile(0.99, sides["bb"][:HOLD_MIN])),
            "5xx": (sides["ce"][:HOLD_MIN] / n_c, sides["be"][:HOLD_MIN] / n_b),
        }
    high = np.zeros(HOLD_MIN + 1, dtype=bool)  # by look
    for candidate, baseline in series.values():
        if not (np.isnan(candidate).any() or np.isnan(baseline).any()):
            windows = np.lib.stride_tricks.sliding_window_view
            high[WINDOW_MIN:] |= kayenta_high(windows(candidate, WINDOW_MIN), windows(baseline, WINDOW_MIN))
            short = range(1, WINDOW_MIN)
        else:
            short = range(1, HOLD_MIN + 1)  # a minute without requests: each window on its own
        for look in short:
            start = max(0, look - WINDOW_MIN)
            c, b = candidate[start:look], baseline[start:look]
            high[look] |= bool(kayenta_high(c[~np.isnan(c)][None], b[~np.isnan(b)][None])[0])
    return int(np.argmax(high)) if high.any() else None


# -- one step ------------------------------------------------------------------------------------


def run_step(job: tuple[Scenario, float, int, float, float]) -> dict[str, Any]:
    """One step of one scenario: when each judge first fails (candidate requests), the judge's
    end, the step's grid floor and the checks of the cheap verdicts."""
    scenario, share, seed, theta_checks, verify = job
    rng = np.random.default_rng(seed)
    sides = draw_step(rng, scenario, share)
    cum = cumulative(sides)
    requests_at = cum["cb"].sum(axis=1)  # candidate requests at each look
    end, checks = judge_step(cum, rng, theta_checks, verify)
    first = dict(zip(("thresholds", "comparisons"), today_first_fails(cum), strict=True))
    first["kayenta"] = kayenta_first_fail(sides)
    first["judge"] = end.look if end.outcome == "fail" else None
    floor = floor_requests(scenario)
    grid_floor = None
    if floor is not None and requests_at[-1] >= floor:
        grid_floor = float(requests_at[int(np.argmax(requests_at >= floor))])
    return {
        "scenario": scenario.name,
        "share": share,
        "first_fail": {name: None if look is None else float(requests_at[look]) for name, look in first.items()},
        "outcome": end.outcome,
        "outcome_look": end.look,
        "outcome_requests": float(requests_at[end.look]),
        "at_hold_end": end.at_hold_end,
        "grid_floor": grid_floor,
        "looks": checks.looks,
        "engine_theta": checks.engine_theta,
        "theta_checks": checks.theta_checks,
        "theta_max_difference": checks.theta_max_difference,
        "full_checks": checks.full_checks,
        "mismatches": checks.mismatches,
    }


# -- the floor ----------------------------------------------------------------------------------


def _restricted_mle(p_c: float, p_b: float, candidate_of: Callable[[float], float], slope: float, top: float) -> float:
    """The baseline proportion maximising the likelihood of (p_c, p_b), equal sample sizes,
    under the null's boundary p_c' = candidate_of(p_b') (linear, of this slope), by bisection
    on the score (decreasing: the log-likelihood is concave)."""

    def score(p: float) -> float:
        q = candidate_of(p)
        return p_c * slope / q - (1 - p_c) * slope / (1 - q) + p_b / p - (1 - p_b) / (1 - p)

    lo, hi = 1e-12, top - 1e-12
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if score(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def _proportions_n(p_c: float, p_b: float, slope: float, offset: float, top: float) -> float:
    """Per side, the n of the one-sided score test of H0: p_c <= slope p_b + offset."""
    z_a, z_b = _NORMAL.inv_cdf(1 - FLOOR_ALPHA), _NORMAL.inv_cdf(FLOOR_POWER)
    null_b = _restricted_mle(p_c, p_b, lambda p: slope * p + offset, slope, top)
    null_c = slope * null_b + offset
    v0 = null_c * (1 - null_c) + slope**2 * null_b * (1 - null_b)
    v1 = p_c * (1 - p_c) + slope**2 * p_b * (1 - p_b)
    return (z_a * math.sqrt(v0) + z_b * math.sqrt(v1)) ** 2 / (p_c - slope * p_b - offset) ** 2


def floor_requests(scenario: Scenario) -> float | None:
    """Fixed-sample candidate requests (per side) of the judge's own hypothesis, against its
    margin: one-sided alpha 0.01, power 0.95."""
    if scenario.median_factor != 1.0:
        z_a, z_b = _NORMAL.inv_cdf(1 - FLOOR_ALPHA), _NORMAL.inv_cdf(FLOOR_POWER)
        margin = math.log(scenario.median_factor) - math.log(1.0 + LATENCY.tolerance)
        return 2 * (z_a + z_b) ** 2 * BASE_SPREAD**2 / margin**2
    if scenario.errors != BASE_ERRORS:
        ratio = 1.0 + ERRORS.tolerance
        by_ratio = _proportions_n(scenario.errors, BASE_ERRORS, ratio, 0.0, 1.0 / ratio)
        by_difference = _proportions_n(
            scenario.errors, BASE_ERRORS, 1.0, ERRORS.min_difference, 1.0 - ERRORS.min_difference
        )
        return max(by_ratio, by_difference)
    return None


# -- summary ------------------------------------------------------------------------------------


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a rate: the engine's own (judge.wilson_interval)."""
    return judge.wilson_interval(successes, trials, Z_95)


def summarise(scenario: Scenario, share: float, steps: list[dict]) -> list[dict]:
    floor = floor_requests(scenario)
    grid_floors = [s["grid_floor"] for s in steps if s["grid_floor"] is not None]
    rows = []
    for name in JUDGES:
        fails = [s["first_fail"][name] for s in steps if s["first_fail"][name] is not None]
        row: dict[str, Any] = {
            "scenario": scenario.name,
            "share": share,
            "judge": name,
            "trials": len(steps),
            "fails": len(fails),
            "rate": len(fails) / len(steps),
            "rate_interval": wilson(len(fails), len(steps)),
            "median_requests": statistics.median(fails) if fails else None,
            "floor": floor,
            "grid_floor": statistics.median(grid_floors) if grid_floors else None,
        }
        if floor is not None:
            within_floor = sum(1 for f in fails if f <= 2 * floor)
            within_grid = sum(
                1
                for s in steps
                if s["first_fail"][name] is not None
                and s["grid_floor"] is not None
                and s["first_fail"][name] <= 2 * s["grid_floor"]
            )
            row["within_floor_rate"] = within_floor / len(steps)
            row["within_floor_interval"] = wilson(within_floor, len(steps))
            row["within_grid_rate"] = within_grid / len(steps)
            row["within_grid_interval"] = wilson(within_grid, len(steps))
            row["ratio_to_floor"] = row["median_requests"] / floor if fails else None
            row["target_met_floor"] = row["within_floor_rate"] >= 0.95
            row["target_met"] = row["within_grid_rate"] >= 0.95
        else:
            row["target_met"] = row["rate"] <= 0.01
        if name == "judge":
            passes = [s["outcome_requests"] for s in steps if s["outcome"] == "pass"]
            late = [s for s in steps if s["at_hold_end"] is not None]
            row["passes"] = len(passes)
            row["passes_at_hold_end"] = sum(
                1 for s in steps if s["outcome"] == "pass" and s["outcome_look"] == HOLD_MIN
            )
            row["inconclusive_at_hold_end"] = len(late)
            row["inconclusive_latency"] = sum(1 for s in late if s["at_hold_end"][0] == "inconclusive")
            row["inconclusive_errors"] = sum(1 for s in late if s["at_hold_end"][1] == "inconclusive")
            row["late_passes"] = sum(1 for s in late if s["outcome"] == "pass")
            row["late_fails"] = sum(1 for s in late if s["outcome"] == "fail")
            row["inconclusive_after_two_holds"] = sum(1 for s in steps if s["outcome"] == "inconclusive")
            row["min_requests_at_pass"] = min(passes) if passes else None
            row["median_requests_at_pass"] = statistics.median(passes) if passes else None
            if not scenario.regression:
                row["target_met"] = row["rate"] <= 0.01 and (not passes or min(passes) >= LATENCY.min_samples)
        rows.append(row)
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    jobs = []
    for share in args.shares:
        for index, scenario in enumerate(SCENARIOS):
            count = args.aa if not scenario.regression else args.trials
            for trial in range(count):
                seed = args.seed * 1_000_003 + int(share * 1000) * 10_007 + index * 100_003 + trial
                jobs.append((scenario, share, seed, args.theta_checks, args.verify))
    # The A/A steps are the long ones (every look of a day or two): first, so that no worker idles at the end.
    jobs.sort(key=lambda job: job[0].regression)
    live: list[dict] = []
    live_thread = None
    steps: list[dict] = []
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        if not args.no_live:  # beside the pool (mostly waiting on Prometheus), started after its fork
            live_thread = threading.Thread(target=lambda: live.extend(measure_live(args)), name="live")
            live_thread.start()
        for step in pool.imap_unordered(run_step, jobs, chunksize=2):
            steps.append(step)
            if len(steps) % max(1, len(jobs) // 20) == 0 or len(steps) == len(jobs):
                print(
                    f"judge bench: {len(steps)}/{len(jobs)} steps, {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    if live_thread is not None:
        live_thread.join()
    grouped: dict[tuple[str, float], list[dict]] = {}
    for step in steps:
        grouped.setdefault((step["scenario"], step["share"]), []).append(step)
    rows = []
    for share in args.shares:
        for scenario in SCENARIOS:
            rows += summarise(scenario, share, grouped[(scenario.name, share)])
    mismatches = [m for s in steps for m in s["mismatches"]]
    return {
        "benchmark": SECTION,
        "seconds": time.monotonic() - started,
        "live": live,
        "settings": {
            "primary_rate": PRIMARY_RATE,
            "shares": args.shares,
            "hold_looks": HOLD_MIN,
            "max_looks": MAX_LOOKS,
            "look_every_s": 60,
            "window_min": WINDOW_MIN,
            "baseline": {"median_ms": BASE_MEDIAN_MS, "spread": BASE_SPREAD, "errors": BASE_ERRORS},
            "judge": {
                "latency_tolerance": LATENCY.tolerance,
                "error_ratio_tolerance": ERRORS.tolerance,
                "min_difference": ERRORS.min_difference,
                "confidence": LATENCY.confidence,
                "min_samples": LATENCY.min_samples,
            },
            "aa_trials": args.aa,
            "trials": args.trials,
            "seed": args.seed,
            "processes": args.processes,
            "theta_checks": args.theta_checks,
            "verify": args.verify,
        },
        "looks": sum(s["looks"] for s in steps),
        "engine_theta": sum(s["engine_theta"] for s in steps),
        "theta_checks": sum(s["theta_checks"] for s in steps),
        "theta_max_difference": max(s["theta_max_difference"] for s in steps),
        "full_checks": sum(s["full_checks"] for s in steps),
        "mismatches": len(mismatches),
        "mismatch_examples": mismatches[:10],
        "rows": rows,
    }


# -- live: the judge gates' real queries against a backfilled Prometheus --------------------------

LIVE_NAMESPACE, LIVE_CANDIDATE, LIVE_BASELINE = "bench", "demo-v2", "demo-baseline"
LIVE_SCENARIOS = ("A/A", "latency x2")


def openmetrics(cum: dict[str, np.ndarray], start: float) -> str:
    """The candidate's and the baseline's counters, one sample a minute from `start`, as the
    OpenMetrics text promtool backfills (Istio's names and labels, reporter="destination")."""
    lines = ["# TYPE istio_requests counter"]
    for workload, buckets, errors in ((LIVE_CANDIDATE, "cb", "ce"), (LIVE_BASELINE, "bb", "be")):
        labels = f'reporter="destination",destination_workload_namespace="{LIVE_NAMESPACE}",destination_workload="{workload}"'
        total = cum[buckets].sum(axis=1)
        for code, values in (("200", total - cum[errors]), ("500", cum[errors])):
            lines += [
                f'istio_requests_total{{{labels},response_code="{code}"}} {v:.0f} {start + 60 * m:.0f}'
                for m, v in enumerate(values)
            ]
    lines.append("# TYPE istio_request_duration_milliseconds histogram")
    for workload, buckets in ((LIVE_CANDIDATE, "cb"), (LIVE_BASELINE, "bb")):
        labels = f'reporter="destination",destination_workload_namespace="{LIVE_NAMESPACE}",destination_workload="{workload}"'
        below = np.cumsum(cum[buckets], axis=1)
        for i, bound in enumerate(BOUNDS):
            le = "+Inf" if math.isinf(bound) else f"{bound:g}"
            lines += [
                f'istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}} {v:.0f} {start + 60 * m:.0f}'
                for m, v in enumerate(below[:, i])
            ]
        lines += [
            f"istio_request_duration_milliseconds_count{{{labels}}} {v:.0f} {start + 60 * m:.0f}"
            for m, v in enumerate(below[:, -1])
        ]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _wait_ready(url: str, process: subprocess.Popen, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode} before it was ready")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"prometheus at {url} not ready within {deadline_s:g} s")


def _judge_live(client: PrometheusClient, start: float) -> tuple[str, int, dict[str, str]]:
    """Look at the backfilled step every minute through gates.evaluate with the runner's judge
    window (the step so far), deciding as the runner does: (outcome, look, last verdicts)."""
    gateset = gates.parse_gates(
        {
            "judges": [
                {"name": "judge-latency", "metric": "latency"},
                {"name": "judge-5xx-ratio", "metric": "error_ratio"},
            ]
        }
    )
    context = QueryContext(
        service="demo",
        namespace=LIVE_NAMESPACE,
        environment="bench",
        primary_workload="demo-v1",
        mirror_workloads=(LIVE_CANDIDATE, LIVE_BASELINE),
        window_seconds=WINDOW_MIN * 60,
        baseline_workload=LIVE_BASELINE,
    )
    verdicts: dict[str, str] = {}
    for look in range(1, MAX_LOOKS + 1):
        at = start + 60 * look
        window = judge_window_seconds(start, at)
        shown = [
            r
            for r in gates.evaluate(gateset, client, context, WINDOW_MIN * 60, at=at, judge_window_seconds=window)
            if r.kind == "judge"
        ]
        verdicts = {r.name: str(r.verdict) for r in shown}
        if any(r.verdict is Verdict.FAIL for r in shown):
            return "fail", look, verdicts
        if look >= HOLD_MIN and all(r.verdict is Verdict.PASS for r in shown):
            return "pass", look, verdicts
    return "inconclusive", MAX_LOOKS, verdicts


def live_step(scenario: Scenario, share: float, seed: int, workdir: Path) -> dict[str, Any]:
    """One step backfilled into a fresh Prometheus on 127.0.0.1 (stopped by PID), judged look by
    look through gates.evaluate; beside it the simulation of the same counts (same seed)."""
    cum = cumulative(draw_step(np.random.default_rng(seed), scenario, share))
    cum = {k: v for k, v in cum.items() if k in ("cb", "ce", "bb", "be")}
    start = math.floor(time.time() / 3600) * 3600 - MAX_LOOKS * 60 - 3600  # whole hour; ended an hour ago
    data, tsdb = workdir / "step.om", workdir / "tsdb"
    data.write_text(openmetrics(cum, start))
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(data), str(tsdb)], check=True, capture_output=True
    )
    config = workdir / "prometheus.yml"
    config.write_text("global: {}\n")
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(url, process, 60)
        outcome, look, verdicts = _judge_live(PrometheusClient(url, timeout=30), start)
    finally:
        stop_pid(process, grace_s=30.0)  # a Prometheus with a backfilled TSDB may take a while
    simulated = run_step((scenario, share, seed, 0.0, 0.0))
    return {
        "scenario": scenario.name,
        "share": share,
        "seed": seed,
        "outcome": outcome,
        "look": look,
        "requests": float(cum["cb"][look].sum()),
        "last_verdicts": verdicts,
        "simulated_outcome": simulated["outcome"],
        "simulated_look": simulated["outcome_look"],
    }


def measure_live(args: argparse.Namespace) -> list[dict]:
    if not (shutil.which("promtool") and shutil.which("prometheus")):
        print("live: promtool or prometheus not found, skipped", file=sys.stderr)
        return []
    steps = []
    by_name = {s.name: s for s in SCENARIOS}
    for name in LIVE_SCENARIOS:
        with tempfile.TemporaryDirectory(prefix="bench-judge-") as workdir:
            steps.append(live_step(by_name[name], args.live_share, args.seed, Path(workdir)))
        print(f"judge bench: live {name} done", file=sys.stderr, flush=True)
    return steps


# -- output -------------------------------------------------------------------------------------

HEADER = [
    "scenario",
    "share",
    "judge",
    "trials",
    "fail rate [95% CI]",
    "median req at first fail",
    "floor",
    "grid floor",
    "x floor",
    "<=2x floor",
    "<=2x grid floor",
    "target",
]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _rate(rate: float, interval: tuple[float, float]) -> str:
    return f"{_pct(rate)} [{_pct(interval[0])}, {_pct(interval[1])}]"


def _count(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def _row(row: dict) -> list[str]:
    regression = row["floor"] is not None
    target = results.met(row["target_met"]) + (" (grid)" if regression else "")
    return [
        row["scenario"],
        f"{row['share'] * 100:g}%",
        row["judge"],
        str(row["trials"]),
        _rate(row["rate"], row["rate_interval"]),
        _count(row["median_requests"]),
        _count(row["floor"]),
        _count(row["grid_floor"]),
        f"{row['ratio_to_floor']:.1f}" if row.get("ratio_to_floor") is not None else "-",
        _rate(row["within_floor_rate"], row["within_floor_interval"]) if regression else "-",
        _rate(row["within_grid_rate"], row["within_grid_interval"]) if regression else "-",
        target,
    ]


ENDS_HEADER = [
    "scenario",
    "share",
    "passes (at hold end)",
    "inconclusive at hold end (latency, errors)",
    "of those: passed, failed, still inconclusive after 2 holds",
    "fails",
    "min candidate req at a pass",
]


def _judge_ends(document: dict) -> list[list[str]]:
    return [
        [
            r["scenario"],
            f"{r['share'] * 100:g}%",
            f"{r['passes']} ({r['passes_at_hold_end']})",
            f"{r['inconclusive_at_hold_end']} ({r['inconclusive_latency']}, {r['inconclusive_errors']})",
            f"{r['late_passes']}, {r['late_fails']}, {r['inconclusive_after_two_holds']}",
            str(r["fails"]),
            _count(r["min_requests_at_pass"]),
        ]
        for r in document["rows"]
        if r["judge"] == "judge"
    ]


def _checks(document: dict) -> list[list[str]]:
    return [
        ["looks judged", f"{document['looks']:,}"],
        ["looks whose theta the engine's theta_of_shift recomputed", f"{document['theta_checks']:,}"],
        ["largest difference from the numpy theta", f"{document['theta_max_difference']:.1e}"],
        [f"looks within {THETA_BAND:g} of a boundary, decided by the engine's theta", f"{document['engine_theta']:,}"],
        [
            f"looks judged in full by judge_latency + judge_error_ratio (every decisive look and "
            f"{document['settings']['verify'] * 100:g} % of the others)",
            f"{document['full_checks']:,}",
        ],
        ["mismatches", str(document["mismatches"])],
    ]


def _settings(document: dict) -> list[list[str]]:
    s = document["settings"]
    return [
        ["load at the primary req/s", f"{s['primary_rate']:g}"],
        ["mirrored to the candidate and its baseline shadow", ", ".join(f"{x * 100:g} %" for x in s["shares"])],
        ["baseline latency median ms (log-normal)", f"{s['baseline']['median_ms']:g}"],
        ["baseline latency log-sd", f"{s['baseline']['spread']:g}"],
        ["baseline 5xx", f"{s['baseline']['errors'] * 100:g} %"],
        ["hold, looks (one a minute over the step so far)", str(s["hold_looks"])],
        ["looks at most (inconclusive at the hold's end)", str(s["max_looks"])],
        ["A/A steps per share", str(s["aa_trials"])],
        ["steps per regression per share", str(s["trials"])],
        ["seed", str(s["seed"])],
        ["processes", str(s["processes"])],
    ]


LIVE_HEADER = [
    "live step",
    "share",
    "seed",
    "judge (real queries)",
    "at look (minute)",
    "candidate req",
    "simulated, same counts",
    "at look",
]


def _live_rows(document: dict) -> list[list[str]]:
    return [
        [
            s["scenario"],
            f"{s['share'] * 100:g}%",
            str(s["seed"]),
            s["outcome"],
            str(s["look"]),
            _count(s["requests"]),
            s["simulated_outcome"],
            str(s["simulated_look"]),
        ]
        for s in document.get("live", [])
    ]


CHECKS_HEADER = ["check of the cheap verdicts", "value"]


def table(document: dict) -> str:
    parts = [
        results.text_table(HEADER, [_row(r) for r in document["rows"]]),
        results.text_table(ENDS_HEADER, _judge_ends(document)),
        results.text_table(CHECKS_HEADER, _checks(document)),
    ]
    if document.get("live"):
        parts.append(results.text_table(LIVE_HEADER, _live_rows(document)))
    return "\n\n".join(parts)


def doc_section(document: dict) -> str:
    return "\n\n".join(
        [
            results.run_line(document),
            results.markdown_table(results.SETTING_HEADER, _settings(document)),
            results.markdown_table(HEADER, [_row(r) for r in document["rows"]]),
            results.markdown_table(ENDS_HEADER, _judge_ends(document)),
            results.markdown_table(CHECKS_HEADER, _checks(document)),
            *([results.markdown_table(LIVE_HEADER, _live_rows(document))] if document.get("live") else []),
        ]
    )


def _shares(text: str) -> list[float]:
    try:
        shares = [float(x) / 100 for x in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected percents separated by commas, like 1,5") from e
    if not shares or any(not 0 < x <= 1 for x in shares):
        raise argparse.ArgumentTypeError(f"{text!r}: each share is a percent above 0 and at most 100")
    return shares


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a share between 0 and 1") from e
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a share between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shares", type=_shares, default=[0.01, 0.05], help="mirrored percents (default 1,5)")
    parser.add_argument("--aa", type=_positive, default=400, help="A/A steps per share (default 400)")
    parser.add_argument("--trials", type=_positive, default=100, help="steps per regression and share (default 100)")
    parser.add_argument(
        "--theta-checks", type=_fraction, default=0.01, help="share of looks whose theta the engine recomputes (0.01)"
    )
    parser.add_argument(
        "--verify", type=_fraction, default=0.001, help="share of other looks judged in full, 50 ms each (0.001)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--processes", type=_positive, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)"
    )
    parser.add_argument(
        "--live-share", type=lambda t: _shares(t)[0], default=0.01, help="mirrored percent of the live steps (1)"
    )
    parser.add_argument("--no-live", action="store_true", help="no live steps (no Prometheus started)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 A/A and 5 steps per regression")
    results.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    if args.quick:
        args.aa, args.trials = 10, 5
    if args.write_doc and args.quick:
        parser.error("--write-doc needs a full run, not --quick")
    out = results.output_path(args, SECTION)
    return results.finish(
        args, argv, script=SCRIPT, section=SECTION, out=out, measure=measure, table=table, doc_section=doc_section
    )


if __name__ == "__main__":
    sys.exit(main())
