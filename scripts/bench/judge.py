"""Benchmark: the statistical judge against today's gates and a Kayenta-style judge, simulated.

Harness (no Prometheus, no sandbox: the counts a Prometheus would return, drawn directly):

- Load: 100 requests/s at the primary; the candidate and its baseline shadow are mirrored at
  --shares (1 % and 5 %) and receive the same requests (Envoy draws once for all `mirrors`):
  per minute N ~ Poisson(100 x share x 60) requests at each. The primary gets its own
  Poisson(6000) per minute with the baseline's behaviour (today's comparison gates use it).
- Behaviour (sandbox_backend's model): latency log-normal with median 20 ms and log-sd 0.5 at
  the baseline, errors Bernoulli(0.5 %) independent of latency; each scenario changes the
  candidate's median or error probability. Latencies are binned into Istio's buckets (a
  multinomial draw over the log-normal's bucket probabilities: the same as drawing and binning).
- A step: the prod plan's 1-day hold, looked at every 5 minutes (288 looks), the gate window
  10 minutes (inventories/prod). Each look feeds the window's cumulative counts to the
  engine's own functions exactly as gates._judge and runner._evaluate do: judge.spend with a
  Look (step start 0, hold 1 d, share 1, or 1/2 for the two looks of the pass at the hold's end)
  carrying each gate's record, then judge_latency / judge_error_ratio at the spent alpha; at the
  hold's end, when the window look did not fail, the whole step is judged with the same Look.
  A step fails at its first FAIL (window or whole step); it passes when the whole-step look
  passes both judges; otherwise it is inconclusive at the hold's end (the runner holds on).
- Shortcut, checked: a window look's latency FAIL needs lower > 1 + tolerance, i.e. (the
  engine's monotone theta) theta(1 + tolerance) - 1/2 > z x sd. The script evaluates that with
  the engine's theta_of_shift and u_null_variance and calls judge_latency in full only where it
  is within 0.5 sd of failing, at every look at the hold's end, and at a random --verify share
  of the other looks, where it checks the full call does not FAIL (JSON: verify_calls,
  verify_mismatches; any mismatch aborts the run).
- Today's gates on the same data (inventories/prod, each look over the window, and over the
  whole step at the hold's end): thresholds mirror 5xx ratio < 0.05 and p99 < 1000 ms, the
  comparisons mirror minus primary 5xx ratio <= 0.02 and mirror p99 / primary p99 <= 2.0, p99
  by Prometheus' histogram_quantile interpolation; a window with fewer than 100 candidate
  requests is inconclusive (min_requests).
- Kayenta-style: per look, the window's per-minute candidate and baseline values (p99 by
  histogram_quantile, 5xx ratio), the Hodges-Lehmann shift with the distribution-free 98 %
  interval (normal approximation of the Mann-Whitney critical value); a metric is High when
  the interval's lower end is above 0.25 x |estimate| and the candidate's mean is above the
  baseline's; both metrics critical, so any High fails the look; not significant passes.
- Floor: the fixed-sample size per side (one-sided alpha 0.01, power 0.95) of the plain
  superiority test: two proportions (pooled-variance normal approximation) for errors, a
  normal approximation on log-latency (2 (z_a + z_b)^2 sigma^2 / log(effect)^2) for latency.

Trials: --aa A/A steps and --trials steps per regression, per share. Run from the repository
root with the venv (numpy only; `make bench` runs every benchmark):

    python scripts/bench/judge.py                 # the full run: 668 s on 2 cores at load 4.5
    python scripts/bench/judge.py --quick         # smoke run, build/bench/judge.quick.json
    python scripts/bench/judge.py --write-doc     # and rewrite its section of docs/benchmarks.md
    python scripts/bench/judge.py --from-json --write-doc

Prints a table, writes build/bench/judge.json.
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
import time
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import requests

from mirrorramp import gates, judge
from mirrorramp.model import Verdict
from mirrorramp.prometheus import PrometheusClient
from mirrorramp.promql import QueryContext
from mirrorramp.sandbox_backend import ISTIO_DURATION_BUCKETS_MS
from scripts.bench import results
from scripts.bench.sandbox import free_ports

SCRIPT = "scripts/bench/judge.py"
SECTION = "judge"

Z_95 = NormalDist().inv_cdf(0.975)  # the rates' two-sided 95 % intervals
PRIMARY_RATE = 100.0  # requests/s at the primary
HOLD_S = 86400.0
LOOK_EVERY_MIN = 5
WINDOW_MIN = 10
BASE_MEDIAN_MS = 20.0
BASE_SPREAD = 0.5
BASE_ERRORS = 0.005
# inventories/prod: thresholds (PASS when value < limit), comparisons (PASS when value <= limit).
THRESHOLD_ERRORS, THRESHOLD_P99_MS = 0.05, 1000.0
MAX_ERROR_DELTA, MAX_P99_RATIO = 0.02, 2.0
MIN_REQUESTS = 100
KAYENTA_CONFIDENCE, KAYENTA_TOLERANCE = 0.98, 0.25
FLOOR_ALPHA, FLOOR_POWER = 0.01, 0.95
SETTINGS = judge.Settings()
BOUNDS = (*map(float, ISTIO_DURATION_BUCKETS_MS), math.inf)
JUDGES = ("judge", "thresholds", "comparisons", "kayenta")
_NORMAL = NormalDist()


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
    return buckets, rng.binomial(n, errors)


def histogram_quantile(q: float, counts: np.ndarray) -> float:
    """Prometheus' histogram_quantile over per-bucket counts (NaN without requests)."""
    total = float(counts.sum())
    if total <= 0:
        return math.nan
    cumulative = np.cumsum(counts)
    rank = q * total
    i = int(np.searchsorted(cumulative, rank, side="left"))
    if i >= len(BOUNDS) - 1:  # the +Inf bucket: the highest finite bound
        return BOUNDS[-2]
    lower = 0.0 if i == 0 else BOUNDS[i - 1]
    before = 0.0 if i == 0 else float(cumulative[i - 1])
    inside = float(counts[i])
    return lower + (BOUNDS[i] - lower) * ((rank - before) / inside if inside else 1.0)


# -- the judges ---------------------------------------------------------------------------------


class Verifier:
    def __init__(self, rng: np.random.Generator, share: float) -> None:
        self.rng, self.share, self.calls, self.full_calls, self.checks = rng, share, 0, 0, 0

    def latency(self, c: np.ndarray, b: np.ndarray, fail_alpha: float, *, always: bool) -> Verdict | None:
        """judge_latency's verdict, or None where the shortcut shows it cannot FAIL (not a pass)."""
        self.calls += 1
        cl, bl = tuple(map(float, c)), tuple(map(float, b))
        if not always:
            n_c, n_b = sum(cl), sum(bl)
            if fail_alpha <= 0 or n_c <= 0 or n_b <= 0:
                return None
            z = judge.z_one_sided(fail_alpha)
            sd = math.sqrt(judge.u_null_variance(cl, bl, ties=False)) / (n_c * n_b)
            margin = judge.theta_of_shift(BOUNDS, cl, bl)(1.0 + SETTINGS.tolerance) - 0.5 - z * sd
            if margin <= -0.5 * sd:
                if self.rng.random() >= self.share:
                    return None
                self.checks += 1
                verdict = judge.judge_latency(BOUNDS, cl, bl, SETTINGS, fail_alpha).verdict
                if verdict is Verdict.FAIL:
                    raise SystemExit(f"shortcut mismatch: judge_latency FAILs where theta margin {margin:g} <= -0.5 sd")
                return None
        self.full_calls += 1
        return judge.judge_latency(BOUNDS, cl, bl, SETTINGS, fail_alpha).verdict


def kayenta_high(candidate: np.ndarray, baseline: np.ndarray) -> bool:
    """Kayenta's Mann-Whitney classifier: High when the 98 % HL interval's lower end is above
    0.25 x |HL| and the candidate's mean is above the baseline's."""
    candidate, baseline = candidate[~np.isnan(candidate)], baseline[~np.isnan(baseline)]
    m, n = len(candidate), len(baseline)
    if m < 2 or n < 2:
        return False
    differences = np.sort(np.subtract.outer(candidate, baseline).ravel())
    z = _NORMAL.inv_cdf(1 - (1 - KAYENTA_CONFIDENCE) / 2)
    k = math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))
    if k < 0:
        return False
    lower, estimate = differences[k], float(np.median(differences))
    return bool(lower > KAYENTA_TOLERANCE * abs(estimate) and candidate.mean() > baseline.mean())


def today_fails(cb: np.ndarray, ce: float, pb: np.ndarray, pe: float) -> tuple[bool, bool]:
    """(threshold gates fail, comparison gates fail) over one window's counts."""
    n_c, n_p = float(cb.sum()), float(pb.sum())
    if n_c < MIN_REQUESTS:
        return False, False
    ratio_c, p99_c = ce / n_c, histogram_quantile(0.99, cb)
    thresholds = not (ratio_c < THRESHOLD_ERRORS) or not (p99_c < THRESHOLD_P99_MS)
    comparisons = False
    if n_p > 0:
        p99_p = histogram_quantile(0.99, pb)
        comparisons = ratio_c - pe / n_p > MAX_ERROR_DELTA or (p99_p > 0 and p99_c / p99_p > MAX_P99_RATIO)
    return thresholds, comparisons


def draw_step(rng: np.random.Generator, scenario: Scenario, share: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(requests per minute at each mirror, the per-minute counts: cb/ce candidate buckets and
    5xx, bb/be the baseline's, pb/pe the primary's) of one step."""
    minutes = int(HOLD_S // 60)
    n = rng.poisson(PRIMARY_RATE * share * 60, minutes)
    cand_b, cand_e = draw_side(rng, n, BASE_MEDIAN_MS * scenario.median_factor, scenario.errors)
    base_b, base_e = draw_side(rng, n, BASE_MEDIAN_MS, BASE_ERRORS)
    prim_b, prim_e = draw_side(rng, rng.poisson(PRIMARY_RATE * 60, minutes), BASE_MEDIAN_MS, BASE_ERRORS)
    return n, {"cb": cand_b, "ce": cand_e, "bb": base_b, "be": base_e, "pb": prim_b, "pe": prim_e}


def cumulative(sides: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Counter values at each minute boundary (row 0: the step's start, all zero)."""
    return {k: np.concatenate([np.zeros((1, *v.shape[1:])), np.cumsum(v, axis=0)]) for k, v in sides.items()}


def run_step(scenario: Scenario, share: float, seed: int, verify: float) -> dict[str, Any]:
    """One step of one scenario: when each judge first fails (candidate requests), and the
    judge's end (pass, fail or inconclusive, with the candidate requests then)."""
    rng = np.random.default_rng(seed)
    minutes = int(HOLD_S // 60)
    n, sides = draw_step(rng, scenario, share)
    cand_b, cand_e, base_b, base_e = sides["cb"], sides["ce"], sides["bb"], sides["be"]
    cum = cumulative(sides)

    def window(key: str, start: int, end: int) -> np.ndarray:
        return cum[key][end] - cum[key][start]

    p99_c = np.array([histogram_quantile(0.99, row) for row in cand_b])
    p99_b = np.array([histogram_quantile(0.99, row) for row in base_b])
    with np.errstate(invalid="ignore", divide="ignore"):
        err_c, err_b = cand_e / n, base_e / n
    verifier = Verifier(rng, verify)
    first_fail: dict[str, float | None] = dict.fromkeys(JUDGES)
    spending: dict[str, dict] = {}
    outcome, outcome_n = "inconclusive", float(n.sum())
    end_verdicts: tuple[str, ...] = ()
    end_minute = minutes
    for end in range(LOOK_EVERY_MIN, minutes + 1, LOOK_EVERY_MIN):
        start = max(0, end - WINDOW_MIN)
        requests_now = float(cum["cb"][end].sum())
        last = end == minutes
        cb, bb, ce, be = (
            window("cb", start, end),
            window("bb", start, end),
            window("ce", start, end),
            window("be", start, end),
        )
        if first_fail["judge"] is None:
            look = judge.Look(0.0, HOLD_S, end * 60.0, spending, 0.5 if last else 1.0)
            looks = [(cb, bb, ce, be)]
            if last:
                looks.append((cum["cb"][end], cum["bb"][end], cum["ce"][end], cum["be"][end]))
            records, verdicts = {}, []
            for wc, wb, we_c, we_b in looks:
                alpha, records["judge-latency"] = judge.spend(look, "judge-latency", SETTINGS.alpha)
                latency = verifier.latency(wc, wb, alpha, always=last)
                alpha, records["judge-5xx-ratio"] = judge.spend(look, "judge-5xx-ratio", SETTINGS.alpha)
                errors = judge.judge_error_ratio(
                    float(we_c), float(wc.sum()), float(we_b), float(wb.sum()), SETTINGS, alpha
                ).verdict
                verdicts.append((latency, errors))
                if Verdict.FAIL in (latency, errors):
                    break
            spending = {**spending, **{g: r.as_dict() for g, r in records.items() if r is not None}}
            if any(Verdict.FAIL in v for v in verdicts):
                first_fail["judge"], outcome, outcome_n = requests_now, "fail", requests_now
                end_minute = end
            elif last and verdicts[-1] == (Verdict.PASS, Verdict.PASS):
                outcome, outcome_n = "pass", requests_now
            if last:
                end_verdicts = tuple(str(v) for v in verdicts[-1])
        thresholds, comparisons = today_fails(cb, float(ce), window("pb", start, end), float(window("pe", start, end)))
        if last:
            whole = today_fails(cum["cb"][end], float(cum["ce"][end]), cum["pb"][end], float(cum["pe"][end]))
            thresholds, comparisons = thresholds or whole[0], comparisons or whole[1]
        for name, failed in (("thresholds", thresholds), ("comparisons", comparisons)):
            if failed and first_fail[name] is None:
                first_fail[name] = requests_now
        if first_fail["kayenta"] is None and (
            kayenta_high(p99_c[start:end], p99_b[start:end]) or kayenta_high(err_c[start:end], err_b[start:end])
        ):
            first_fail["kayenta"] = requests_now
    return {
        "first_fail": first_fail,
        "outcome": outcome,
        "outcome_requests": outcome_n,
        "end_verdicts": end_verdicts,  # (latency, errors) of the last look that ran
        "end_minute": end_minute,  # the judge's first fail, else the hold's end
        "latency_calls": verifier.calls,
        "latency_full_calls": verifier.full_calls,
        "verify_calls": verifier.checks,
    }


# -- statistics ---------------------------------------------------------------------------------


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a rate: the engine's own (judge.wilson_interval)."""
    return judge.wilson_interval(successes, trials, Z_95)


def floor_requests(scenario: Scenario) -> float | None:
    """Fixed-sample requests per side: one-sided alpha 0.01, power 0.95."""
    z_a, z_b = _NORMAL.inv_cdf(1 - FLOOR_ALPHA), _NORMAL.inv_cdf(FLOOR_POWER)
    if scenario.median_factor != 1.0:
        return 2 * (z_a + z_b) ** 2 * BASE_SPREAD**2 / math.log(scenario.median_factor) ** 2
    if scenario.errors != BASE_ERRORS:
        p0, p1 = BASE_ERRORS, scenario.errors
        pooled = (p0 + p1) / 2
        root = z_a * math.sqrt(2 * pooled * (1 - pooled)) + z_b * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
        return root**2 / (p1 - p0) ** 2
    return None


def summarise(scenario: Scenario, share: float, steps: list[dict]) -> list[dict]:
    floor = floor_requests(scenario)
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
        }
        if floor is not None:
            within = sum(1 for f in fails if f <= 2 * floor)
            row["within_2x_floor"] = within
            row["within_rate"] = within / len(steps)
            row["within_interval"] = wilson(within, len(steps))
            row["ratio_to_floor"] = row["median_requests"] / floor if fails else None
            row["target_met"] = row["within_rate"] >= 0.95
        else:
            row["target_met"] = row["rate"] <= 0.01
        if name == "judge":
            passes = [s["outcome_requests"] for s in steps if s["outcome"] == "pass"]
            row["passes"] = len(passes)
            row["inconclusive"] = sum(1 for s in steps if s["outcome"] == "inconclusive")
            ends = [s["end_verdicts"] for s in steps if s["outcome"] == "inconclusive"]
            row["inconclusive_latency"] = sum(1 for e in ends if e[0] == "inconclusive")
            row["inconclusive_errors"] = sum(1 for e in ends if e[1] == "inconclusive")
            row["min_requests_at_pass"] = min(passes) if passes else None
            if not scenario.regression:
                row["target_met"] = row["rate"] <= 0.01 and (not passes or min(passes) >= SETTINGS.min_samples)
        rows.append(row)
    return rows


def _one(job: tuple[Scenario, float, int, float]) -> dict:
    return run_step(*job)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    jobs, keys = [], []
    for share in args.shares:
        for index, scenario in enumerate(SCENARIOS):
            count = args.aa if not scenario.regression else args.trials
            for trial in range(count):
                seed = args.seed * 1_000_003 + int(share * 1000) * 10_007 + index * 100_003 + trial
                jobs.append((scenario, share, seed, args.verify))
                keys.append((scenario.name, share))
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        steps = pool.map(_one, jobs, chunksize=4)
    grouped: dict[tuple[str, float], list[dict]] = {}
    for key, step in zip(keys, steps, strict=True):
        grouped.setdefault(key, []).append(step)
    rows = []
    for share in args.shares:
        for scenario in SCENARIOS:
            rows += summarise(scenario, share, grouped[(scenario.name, share)])
    live = [] if args.no_live else measure_live(args)
    return {
        "benchmark": SECTION,
        "seconds": time.monotonic() - started,
        "live": live,
        "settings": {
            "primary_rate": PRIMARY_RATE,
            "shares": args.shares,
            "hold_s": HOLD_S,
            "look_every_min": LOOK_EVERY_MIN,
            "window_min": WINDOW_MIN,
            "baseline": {"median_ms": BASE_MEDIAN_MS, "spread": BASE_SPREAD, "errors": BASE_ERRORS},
            "judge": {
                "tolerance": SETTINGS.tolerance,
                "confidence": SETTINGS.confidence,
                "min_samples": SETTINGS.min_samples,
            },
            "aa_trials": args.aa,
            "trials": args.trials,
            "seed": args.seed,
            "processes": args.processes,
        },
        "latency_calls": sum(s["latency_calls"] for s in steps),
        "latency_full_calls": sum(s["latency_full_calls"] for s in steps),
        "verify_calls": sum(s["verify_calls"] for s in steps),
        "verify_mismatches": 0,  # a mismatch stops the run (SystemExit)
        "rows": rows,
    }


# -- live: the judge gates' real queries against a backfilled Prometheus --------------------------

LIVE_NAMESPACE, LIVE_CANDIDATE, LIVE_BASELINE = "bench", "demo-v2", "demo-baseline"
LIVE_SCENARIOS = ("A/A", "latency x2")


def openmetrics(cum: dict[str, np.ndarray], start: float) -> str:
    """The candidate's and the baseline's counters, one sample a minute from `start`, as the
    OpenMetrics text promtool backfills (Istio's names and labels, reporter="destination")."""
    lines = []
    for family, series in (("istio_requests", "istio_requests_total"),):
        lines.append(f"# TYPE {family} counter")
        for workload, buckets, errors in ((LIVE_CANDIDATE, "cb", "ce"), (LIVE_BASELINE, "bb", "be")):
            labels = (
                f'reporter="destination",destination_workload_namespace="{LIVE_NAMESPACE}",'
                f'destination_workload="{workload}"'
            )
            total = cum[buckets].sum(axis=1)
            for code, values in (("200", total - cum[errors]), ("500", cum[errors])):
                lines += [
                    f'{series}{{{labels},response_code="{code}"}} {v:.0f} {start + 60 * m:.0f}'
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


def live_step(scenario: Scenario, share: float, seed: int, workdir: Path) -> dict[str, Any]:
    """One step backfilled into a fresh Prometheus on 127.0.0.1 (stopped by PID), judged look by
    look through gates.evaluate (the judge gates' grouped increase() queries, the Look and its
    spending as the runner passes them); beside it the simulation of the same counts."""
    rng = np.random.default_rng(seed)
    _, sides = draw_step(rng, scenario, share)
    cum = cumulative(sides)
    minutes = int(HOLD_S // 60)
    start = math.floor(time.time() / 3600) * 3600 - HOLD_S - 3600  # a whole hour, the step ended an hour ago
    data, tsdb = workdir / "step.om", workdir / "tsdb"
    data.write_text(openmetrics(cum, start))
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(data), str(tsdb)], check=True, capture_output=True
    )
    config = workdir / "prometheus.yml"
    config.write_text("global: {}\n")
    port = free_ports(1)[0]
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
        client = PrometheusClient(url, timeout=30)
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
        spending: dict[str, dict] = {}
        outcome, end_minute, verdicts = "inconclusive", minutes, {}
        for end in range(LOOK_EVERY_MIN, minutes + 1, LOOK_EVERY_MIN):
            at, last = start + 60 * end, end == minutes
            look = judge.Look(start, HOLD_S, at, spending, 0.5 if last else 1.0)
            shown = [
                r
                for r in gates.evaluate(gateset, client, context, WINDOW_MIN * 60, at=at, look=look)
                if r.kind == "judge"
            ]
            if last and all(r.verdict is not Verdict.FAIL for r in shown):
                shown += [
                    r for r in gates.evaluate(gateset, client, context, HOLD_S, at=at, look=look) if r.kind == "judge"
                ]
            spending = {**spending, **{r.extra["gate"]: r.extra["spending"] for r in shown if "spending" in r.extra}}
            verdicts = {r.name: str(r.verdict) for r in shown}
            if any(r.verdict is Verdict.FAIL for r in shown):
                outcome, end_minute = "fail", end
                break
            if last and all(r.verdict is Verdict.PASS for r in shown[-2:]):
                outcome = "pass"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    simulated = run_step(scenario, share, seed, 0.0)
    return {
        "scenario": scenario.name,
        "share": share,
        "seed": seed,
        "outcome": outcome,
        "end_minute": end_minute,
        "requests": float(cum["cb"][end_minute].sum()),
        "last_verdicts": verdicts,
        "simulated_outcome": simulated["outcome"],
        "simulated_end_minute": simulated["end_minute"],
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
    return steps


# -- output -------------------------------------------------------------------------------------

HEADER = [
    "scenario",
    "share",
    "judge",
    "trials",
    "fail rate [95% CI]",
    "median req",
    "floor",
    "x floor",
    "<=2x floor",
    "target",
]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _row(row: dict) -> list[str]:
    low, high = row["rate_interval"]
    median = row["median_requests"]
    within = "-"
    if "within_rate" in row:
        wl, wh = row["within_interval"]
        within = f"{_pct(row['within_rate'])} [{_pct(wl)}, {_pct(wh)}]"
    return [
        row["scenario"],
        f"{row['share'] * 100:g}%",
        row["judge"],
        str(row["trials"]),
        f"{_pct(row['rate'])} [{_pct(low)}, {_pct(high)}]",
        f"{median:,.0f}" if median is not None else "-",
        f"{row['floor']:,.0f}" if row["floor"] is not None else "-",
        f"{row['ratio_to_floor']:.1f}" if row.get("ratio_to_floor") is not None else "-",
        within,
        "met" if row["target_met"] else "NOT met",
    ]


def _judge_ends(document: dict) -> list[list[str]]:
    return [
        [
            r["scenario"],
            f"{r['share'] * 100:g}%",
            str(r["passes"]),
            f"{r['inconclusive']} ({r['inconclusive_latency']} latency, {r['inconclusive_errors']} errors)",
            str(r["fails"]),
            f"{r['min_requests_at_pass']:,.0f}" if r["min_requests_at_pass"] is not None else "-",
        ]
        for r in document["rows"]
        if r["judge"] == "judge"
    ]


ENDS_HEADER = ["scenario", "share", "judge passes", "inconclusive at hold end", "fails", "min candidate req at a pass"]


def _calls(document: dict) -> str:
    return (
        f"judge_latency: {document['latency_calls']:,} looks, {document['latency_full_calls']:,} full calls, "
        f"{document['verify_calls']:,} shortcut checks, {document['verify_mismatches']} mismatches"
    )


LIVE_HEADER = [
    "live step",
    "share",
    "seed",
    "judge (real queries)",
    "at minute",
    "candidate req",
    "simulated, same counts",
    "at minute",
]


def _live_rows(document: dict) -> list[list[str]]:
    return [
        [
            s["scenario"],
            f"{s['share'] * 100:g}%",
            str(s["seed"]),
            s["outcome"],
            str(s["end_minute"]),
            f"{s['requests']:,.0f}",
            s["simulated_outcome"],
            str(s["simulated_end_minute"]),
        ]
        for s in document.get("live", [])
    ]


def table(document: dict) -> str:
    parts = [
        results.text_table(HEADER, [_row(r) for r in document["rows"]]),
        results.text_table(ENDS_HEADER, _judge_ends(document)),
        _calls(document),
    ]
    if document.get("live"):
        parts.append(results.text_table(LIVE_HEADER, _live_rows(document)))
    return "\n\n".join(parts)


def doc_section(document: dict) -> str:
    s = document["settings"]
    return "\n\n".join(
        [
            results.run_line(document),
            f"Load {s['primary_rate']:g} req/s at the primary, mirrored at "
            f"{', '.join(f'{x * 100:g} %' for x in s['shares'])}; baseline log-normal median "
            f"{s['baseline']['median_ms']:g} ms, log-sd {s['baseline']['spread']:g}, 5xx {s['baseline']['errors'] * 100:g} %; "
            f"hold {s['hold_s'] / 3600:g} h looked at every {s['look_every_min']} min over a {s['window_min']}-min window; "
            f"{s['aa_trials']} A/A steps and {s['trials']} steps per regression per share (seed {s['seed']}).",
            results.markdown_table(HEADER, [_row(r) for r in document["rows"]]),
            results.markdown_table(ENDS_HEADER, _judge_ends(document)),
            _calls(document) + ".",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shares", type=_shares, default=[0.01, 0.05], help="mirrored percents (default 1,5)")
    parser.add_argument("--aa", type=_positive, default=500, help="A/A steps per share (default 500)")
    parser.add_argument("--trials", type=_positive, default=150, help="steps per regression and share (default 150)")
    parser.add_argument("--verify", type=float, default=0.01, help="share of shortcut looks checked in full (0.01)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--processes", type=_positive, default=os.cpu_count() or 1, help="worker processes")
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
