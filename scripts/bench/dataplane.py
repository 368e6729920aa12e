"""Benchmark 2, data-plane cost on Envoy: the primary's p50/p99 mirroring 100% to a healthy, a slow,
a failing and a down candidate, against mirroring off; and the copies Envoy delivers.

The data plane of mirrorsandbox.harness (no Ansible): the two sandbox backends, Envoy configured
by `sidecar_config` from the local inventory's VirtualService and DestinationRule (whose candidate
subset has its own outlier detection on gateway errors: a down candidate is ejected, the primary
never), the mirror set through the `envoy` driver. Then in one run:

  1. capacity: the project's load generator (mirrorsandbox.loadgen.run, bounded) flat out against
     Envoy for a few seconds, with the mirror off and mirroring 100% to a healthy candidate;
  2. --rounds (4) rounds at --load-fraction (0.25) of the lower capacity; each round runs every
     condition once, one cell of --cell-seconds (2), in an order drawn for the round (seeded):
     mirroring off; 100% to a healthy, a slow (2 s), a failing (500) and a down (stopped:
     connection refused) candidate; mirroring off again (the A/A control). A slow candidate's
     cell is measured after a warm-up of its latency (its open copies at their steady level) and
     the next cell starts once they are answered; a down candidate is stopped by its PID before
     its cell and started again after it, and every cell starts once Envoy's outlier detection
     holds the candidate's host ejected no more (the cells after a down or failing one get their
     copies). GET only (the sandbox mirrors GET and HEAD), from mirrorsandbox.paced_client
     (one thread, open loop);
  3. delivery at the sandbox's load (the inventory's mirror_sandbox.load.rps, 100 requests/s,
     GET): --share-seconds at 100% to a healthy candidate (every copy must arrive) and at 1, 5,
     10 and 20%, each observed share judged against its Wilson interval at 98.75%: four looks,
     Bonferroni-corrected so that the four together hold at 95% (each at 95% alone, a correct data
     plane failed one of the four in about 1 run in 5).

Judging: each condition's p50 and p99, pooled over its rounds, over those of both off cells of
every round pooled, with a 95% interval from a bootstrap over rounds (a round's cells resampled
together, so the drift they share cancels). The A/A control (the second off cells over the
first) gives the band the run cannot tell from noise: 1 +- the farthest end of its interval from
1. A condition is **within** when both its p50/off and p99/off are at or below the band's upper
end for the same statistic, **above** otherwise.

Why a quarter of the capacity, why rounds and why its own client: docs/benchmarks.md, section 2.
The candidate runs on a core of its own (every thread) and the client, Envoy and
the primary on the others, as in a cluster where the candidate has its own pods; --shared-cores
leaves every process on every core.

Run from the repository root with the venv (`make bench` runs every benchmark):

    python scripts/bench/dataplane.py                 # 4 rounds, about 3.5 minutes
    python scripts/bench/dataplane.py --rounds 20     # narrower intervals, about 9 minutes
    python scripts/bench/dataplane.py --quick         # smoke run: 2 rounds of 1 s cells, dataplane.quick.json
    python scripts/bench/dataplane.py --write-doc     # and rewrite its section of docs/benchmarks.md
    python scripts/bench/dataplane.py --from-json --write-doc   # the doc from the last build/bench/dataplane.json
    python scripts/bench/dataplane.py --no-outlier-detection --only down-100 --rounds 12 --write-doc

(`python -m scripts.bench.dataplane` works too.) Prints tables, writes build/bench/dataplane.json. A
--no-outlier-detection run writes build/bench/dataplane-no-outlier.json and, with --write-doc, only
its own block of the doc (`<!-- bench:dataplane-no-outlier -->`), which adds the down candidate of
the last run with outlier detection beside its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # python scripts/bench/dataplane.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import contextlib
import copy
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from mirrorramp.judge import wilson_interval
from mirrorsandbox import loadgen, paced_client
from mirrorsandbox.envoy_process import admin_get
from mirrorsandbox.harness import Harness, Resources, local_inventory_vars, local_resources, running_harness
from scripts.bench import results
from scripts.bench.results import log

SCRIPT = "scripts/bench/dataplane.py"
SECTION = "dataplane"
# A --no-outlier-detection run: its own JSON and its own block of the doc, shown beside the main run.
NO_OUTLIER_SECTION = "dataplane-no-outlier"
# The candidate cluster's counters (Envoy /stats) kept per cell: what a down candidate costs Envoy.
CANDIDATE_COUNTERS = {
    "upstream_cx_total": "connects",
    "upstream_cx_connect_fail": "refused",
    "upstream_cx_none_healthy": "no healthy upstream",
    "upstream_rq_retry": "retries",
    "upstream_rq_pending_overflow": "pool overflow",
    "outlier_detection.ejections_enforced_total": "ejections",
}
# candidate -> its /control behaviour; None: stopped (connection refused)
CANDIDATES: dict[str, dict[str, float] | None] = {
    "healthy": {"error_ratio": 0.0, "latency_ms": 0.0},
    "slow": {"error_ratio": 0.0, "latency_ms": 2000.0},
    "failing": {"error_ratio": 1.0, "latency_ms": 0.0},
    "down": None,
}
HEALTHY = CANDIDATES["healthy"]
OFF = ("-", 0)
# Mirroring off a second time in every round, judged against the first like any condition: the
# A/A control, whose interval is the band these rounds cannot tell from the machine's noise.
OFF_AGAIN = ("- (A/A)", 0)
MIRRORED = [(candidate, 100) for candidate in CANDIDATES]
STATISTICS = {"p50": 0.50, "p99": 0.99}
SHARE_PERCENTS = (1, 5, 10, 20)
CONFIDENCE = 0.95
# The delivery check looks at len(SHARE_PERCENTS) shares: each interval at 1 - 0.05/4 (Bonferroni),
# so that a correct data plane passes all four together at least 95% of the time.
SHARE_CONFIDENCE = 1 - (1 - CONFIDENCE) / len(SHARE_PERCENTS)
Z_SHARE = NormalDist().inv_cdf(1 - (1 - SHARE_CONFIDENCE) / 2)
RESAMPLES = 2000
SEED = 7  # the bootstrap's draws and the rounds' orders: the same data gives the same result
CONCURRENCY = 16  # client connections opened before a cell; more open only if every one waits (a stall)
REQUEST_TIMEOUT_S = 5.0
MAX_RATE = 800.0
EJECTION_WAIT_S = 60.0  # the longest a cell waits for the candidate's host to be let back in


def section_of(args: argparse.Namespace) -> str:
    """The doc block and JSON name of a run: a --no-outlier-detection run never writes the main one."""
    return NO_OUTLIER_SECTION if args.no_outlier_detection else SECTION


def key(candidate: str, percent: int) -> str:
    """A condition's name, and the path its requests go under: off, off-again, healthy-100, ..."""
    if percent == 0:
        return "off" if (candidate, percent) == OFF else "off-again"
    return f"{candidate}-{percent}"


def conditions_of(mirrored: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The table's order: mirroring off twice, then the mirrored conditions."""
    return [OFF, OFF_AGAIN, *mirrored]


def round_order(index: int, order: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Every condition once, in an order drawn for this round (seeded: the same for every run).
    One order turned round by round gave each condition the same predecessor every time, and a
    cell's aftermath always fell on the same condition (docs/benchmarks.md, section 2)."""
    permutation = np.random.default_rng((SEED, index)).permutation(len(order))
    return [order[i] for i in permutation]


def parse_only(text: str) -> list[tuple[str, int]]:
    """--only slow-100,down-100: the mirrored conditions to run (mirroring off always runs, twice)."""
    names = {key(*condition): condition for condition in MIRRORED}
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {', '.join(unknown) or 'nothing'} is not a condition; allowed: {', '.join(names)}"
        )
    return [condition for condition in MIRRORED if key(*condition) in chosen]


def reference_of(name: str) -> tuple[str, ...]:
    """What a condition is judged against: both off cells of each round, pooled; the A/A control,
    the first off cells alone (it is the second)."""
    return ("off",) if name == "off-again" else ("off", "off-again")


def quantile(values: np.ndarray, q: float) -> float:
    """The same rank as loadgen.Summary.percentile(q)."""
    rank = min(len(values) - 1, int(q * len(values)))
    return float(np.partition(values, rank)[rank])


def pooled_quantile(latencies: dict[str, list[np.ndarray]], names: tuple[str, ...], picked, q: float) -> float:
    """The q-quantile of the named conditions' cells in the rounds `picked`, pooled."""
    return quantile(np.concatenate([latencies[name][i] for i in picked for name in names]), q)


@dataclass
class CellRun:
    """One condition in one round."""

    round: int
    candidate: str  # "-" for mirroring off
    percent: int
    sent: int
    errors: int  # no answer, or not 200
    error_kinds: dict[str, int]  # "no answer" (no connection free, closed, past the timeout) or the status
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    mirrored: int  # requests of this cell the candidate served
    ejection_wait_s: float  # how long the cell waited for the candidate's host to be let back in
    candidate_counters: dict[str, int]  # CANDIDATE_COUNTERS over the cell (its measured part)


@dataclass
class Condition:
    """One condition, all its rounds pooled."""

    candidate: str
    percent: int
    cells: int
    sent: int
    errors: int
    throughput_rps: float  # mean over its cells
    p50_ms: float
    p99_ms: float
    mirrored: int  # requests of this condition the candidate served
    mirrored_share: float
    p50_vs_off: float | None = None
    p50_interval: tuple[float, float] | None = None
    p99_vs_off: float | None = None
    p99_interval: tuple[float, float] | None = None
    verdict: str = "-"  # within / ABOVE: both ratios against the upper ends of the A/A band


def candidate_host_ejected(harness: Harness) -> bool:
    """Envoy's outlier detection holds the candidate's host out of its cluster now (/clusters)."""
    assert harness.envoy is not None
    clusters = json.loads(admin_get(harness.envoy.admin_url, "/clusters?format=json"))["cluster_statuses"]
    candidate = harness.resources.destination_rule["spec"]["subsets"][1]["name"]
    for cluster in clusters:
        if cluster["name"].split("|")[2:3] == [candidate]:
            return any(
                host.get("health_status", {}).get("failed_outlier_check", False)
                for host in cluster.get("host_statuses", [])
            )
    raise RuntimeError(f"Envoy has no cluster of the subset {candidate!r}")


def candidate_counters(harness: Harness) -> dict[str, int]:
    """CANDIDATE_COUNTERS of the candidate subset's clusters (every port), from Envoy's /stats."""
    assert harness.envoy is not None
    candidate = harness.resources.destination_rule["spec"]["subsets"][1]["name"]
    prefix = rf"^cluster\.outbound\|\d+\|{re.escape(candidate)}\|[^.]+(?:\.[^.]+)*?\."
    stats = json.loads(admin_get(harness.envoy.admin_url, "/stats?format=json&usedonly"))["stats"]
    totals = dict.fromkeys(CANDIDATE_COUNTERS, 0)
    for stat in stats:
        match = re.match(prefix + "(" + "|".join(re.escape(c) for c in CANDIDATE_COUNTERS) + ")$", stat.get("name", ""))
        if match and isinstance(stat.get("value"), int):
            totals[match.group(1)] += stat["value"]
    return totals


def without_subset_policy(resources: Resources, subset: str) -> Resources:
    """The resources with no trafficPolicy of the DestinationRule subset `subset` (the cost its
    outlier detection removes)."""
    destination_rule = copy.deepcopy(resources.destination_rule)
    for entry in destination_rule["spec"]["subsets"]:
        if entry["name"] == subset:
            entry.pop("trafficPolicy", None)
    return replace(resources, destination_rule=destination_rule)


def wait_until_let_back(harness: Harness) -> float:
    """Seconds until the candidate's host is ejected no more (0 when it was not)."""
    started = time.monotonic()
    while candidate_host_ejected(harness):
        if time.monotonic() - started > EJECTION_WAIT_S:
            raise RuntimeError(f"the candidate's host still ejected after {EJECTION_WAIT_S:g} s")
        time.sleep(0.05)
    return time.monotonic() - started


def measure_capacity(harness: Harness, percent: int, seconds: float) -> float:
    """Requests/s answered 200 through Envoy flat out (the client on the same cores), with the
    mirror at `percent` to a healthy candidate."""
    harness.control("candidate", **HEALTHY)
    harness.set_percent(percent)
    # loadgen's duration bounds its schedule: behind schedule (flat out) it would go on until
    # max_requests. The stop event bounds the wall time.
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        summary = loadgen.run(
            f"{harness.proxy_url}capacity-{percent}",
            rps=loadgen.MAX_RPS,
            duration=seconds,
            max_requests=int(loadgen.MAX_RPS * seconds),
            post_ratio=0.0,
            concurrency=CONCURRENCY,
            timeout=REQUEST_TIMEOUT_S,
            stop=stop,
        )
    finally:
        timer.cancel()
    return summary.statuses.get(200, 0) / summary.elapsed_s


def settle(harness: Harness, prefix: str, quiet_s: float, timeout_s: float = 15.0) -> int:
    """The candidate's count of `prefix` once it has not grown for `quiet_s` (copies arrive
    asynchronously; a slow candidate counts a request when it answers)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while True:
        count = harness.served("candidate", prefix)["count"]
        now = time.monotonic()
        if count != last:
            last, since = count, now
        elif now - since >= quiet_s or now > deadline:
            return count
        time.sleep(0.1)


def paced(harness: Harness, path: str, rate: float, seconds: float) -> paced_client.Summary:
    return paced_client.run(
        f"{harness.proxy_url}{path}", rate, seconds, connections=CONCURRENCY, timeout=REQUEST_TIMEOUT_S
    )


def run_cell(
    harness: Harness, index: int, candidate: str, percent: int, rate: float, seconds: float
) -> tuple[CellRun, list[float]]:
    behaviour = CANDIDATES.get(candidate, HEALTHY)
    candidate_backend = harness.backends["candidate"]
    if behaviour is None:
        candidate_backend.stop()  # by its PID; its port now refuses connections
    else:
        harness.control("candidate", **behaviour)
    harness.set_percent(percent)
    ejection_wait = wait_until_let_back(harness) if behaviour is not None else 0.0
    path = f"{key(candidate, percent)}/r{index:02d}"
    # A slow candidate holds each copy for its latency: the cell is measured once the copies open
    # at its start are answered (the open count at its steady level), and the next cell starts
    # once those of this cell are (none of them falls on another condition).
    held_s = (behaviour or HEALTHY)["latency_ms"] / 1000 if percent else 0.0
    try:
        if held_s:
            paced(harness, f"warmup/{path}", rate, held_s)
        counters_before = candidate_counters(harness)
        summary = paced(harness, path, rate, seconds)
        counters_after = candidate_counters(harness)
        # Counted now: a down cell later in the round restarts the candidate, and its counts with it.
        mirrored = settle(harness, f"/{path}/", quiet_s=held_s + 0.3) if behaviour is not None else 0
    finally:
        if behaviour is None:
            candidate_backend.start()
            harness.control("candidate", **HEALTHY)
    ok = summary.statuses.get(200, 0)
    return CellRun(
        round=index,
        candidate=candidate,
        percent=percent,
        sent=summary.sent,
        errors=summary.sent - ok,
        error_kinds={
            **({"no answer": summary.errors} if summary.errors else {}),
            **{str(status): count for status, count in sorted(summary.statuses.items()) if status != 200},
        },
        throughput_rps=round(ok / summary.elapsed_s, 1),
        p50_ms=summary.percentile(0.50) or 0.0,
        p99_ms=summary.percentile(0.99) or 0.0,
        mirrored=mirrored,
        ejection_wait_s=round(ejection_wait, 2),
        candidate_counters={name: counters_after[name] - counters_before[name] for name in CANDIDATE_COUNTERS},
    ), summary.latencies_ms


def intervals(latencies: dict[str, list[np.ndarray]], rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    """Each condition's p50/off and p99/off: CONFIDENCE intervals from a bootstrap over rounds. A
    draw takes `rounds` rounds with replacement, the same ones for the condition and for off, so
    what a round's cells share (the machine's drift) stays paired."""
    rng = np.random.default_rng(SEED)
    names = [name for name in latencies if name != "off"]
    ratios: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STATISTICS} for name in names}
    for _ in range(RESAMPLES):
        picked = rng.integers(0, rounds, rounds)
        for statistic, q in STATISTICS.items():
            off = {ref: pooled_quantile(latencies, ref, picked, q) for ref in {reference_of(name) for name in names}}
            for name in names:
                ratios[name][statistic].append(pooled_quantile(latencies, (name,), picked, q) / off[reference_of(name)])
    tail = (1 - CONFIDENCE) / 2
    return {
        name: {
            statistic: (round(float(np.quantile(values, tail)), 3), round(float(np.quantile(values, 1 - tail)), 3))
            for statistic, values in by_statistic.items()
        }
        for name, by_statistic in ratios.items()
    }


def pooled(
    runs: list[CellRun],
    latencies: dict[str, list[np.ndarray]],
    rounds: int,
    chosen: list[tuple[str, int]],
) -> list[Condition]:
    """The conditions, each pooled over its rounds and judged against off and the A/A band."""
    bounds = intervals(latencies, rounds)
    conditions = []
    for candidate, percent in chosen:
        name = key(candidate, percent)
        mine = [run for run in runs if (run.candidate, run.percent) == (candidate, percent)]
        values = np.concatenate(latencies[name])
        sent = sum(run.sent for run in mine)
        mirrored = sum(run.mirrored for run in mine)
        condition = Condition(
            candidate=candidate,
            percent=percent,
            cells=len(mine),
            sent=sent,
            errors=sum(run.errors for run in mine),
            throughput_rps=round(sum(run.throughput_rps for run in mine) / len(mine), 1),
            p50_ms=round(quantile(values, 0.50), 3),
            p99_ms=round(quantile(values, 0.99), 3),
            mirrored=mirrored,
            mirrored_share=round(mirrored / sent, 4) if sent else 0.0,
        )
        if name != "off":
            reference = reference_of(name)
            everything = range(rounds)
            condition.p50_vs_off = round(
                quantile(values, 0.50) / pooled_quantile(latencies, reference, everything, 0.50), 3
            )
            condition.p99_vs_off = round(
                quantile(values, 0.99) / pooled_quantile(latencies, reference, everything, 0.99), 3
            )
            condition.p50_interval = bounds[name]["p50"]
            condition.p99_interval = bounds[name]["p99"]
        conditions.append(condition)
    band = band_of(conditions)
    for condition in conditions:
        if condition.percent:
            within = within_band(condition.p50_vs_off, condition.p99_vs_off, band)
            condition.verdict = "within" if within else "ABOVE"
    return conditions


def band_of(conditions: list[Condition]) -> dict[str, tuple[float, float]]:
    """The band of p50/off and p99/off the run cannot tell from noise: 1 +- the farthest end of the
    A/A control's interval from 1. Two identical conditions read that far apart in this run, in
    either direction (the second off cells read 0.92x the first in one run: its interval alone,
    0.84-0.98x, would call a condition equal to off a cost)."""
    control = next(c for c in conditions if (c.candidate, c.percent) == OFF_AGAIN)
    band = {}
    for statistic, (low, high) in (("p50", control.p50_interval), ("p99", control.p99_interval)):
        reach = max(1 - low, high - 1, 0.0)
        band[statistic] = (round(max(0.0, 1 - reach), 3), round(1 + reach, 3))
    return band


@dataclass
class Share:
    """The copies the candidate received at one mirror percent, at the sandbox's load."""

    percent: float
    sent: int  # GETs answered 200 through Envoy
    mirrored: int
    observed: float  # mirrored / sent
    interval: tuple[float, float]  # Wilson interval of the observed share at SHARE_CONFIDENCE
    inside: bool  # the configured share lies in it (at 100%: every copy arrived)


def measure_shares(harness: Harness, rps: float, seconds: float) -> list[Share]:
    """Mirror at 100%, 1, 5, 10, 20% to a healthy candidate, GETs at `rps` for `seconds` each."""
    harness.control("candidate", **HEALTHY)
    shares = []
    for percent in (100, *SHARE_PERCENTS):
        harness.set_percent(percent)
        wait_until_let_back(harness)
        prefix = f"share-{percent}"
        summary = paced(harness, prefix, rps, seconds)
        sent = summary.statuses.get(200, 0)
        mirrored = settle(harness, f"/{prefix}/", quiet_s=0.5)
        share = judge_share(percent, sent, mirrored)
        shares.append(share)
        log(
            f"share at {percent}%: {mirrored} of {sent} ({share.observed:.2%}), "
            f"{SHARE_CONFIDENCE:.2%} {share.interval[0]:.2%}-{share.interval[1]:.2%}"
        )
    return shares


def judge_share(percent: float, sent: int, mirrored: int) -> Share:
    """At 100%: every copy arrived. Below: the configured share lies in the Wilson interval of
    `mirrored` of `sent` at SHARE_CONFIDENCE. The tables judge a run's JSON again with it, so a
    document always reads by the rule of the script that prints it."""
    low, high = wilson_interval(mirrored, sent, Z_SHARE)
    inside = mirrored == sent if percent == 100 else low <= percent / 100 <= high
    observed = round(mirrored / sent, 5) if sent else 0.0
    return Share(percent, sent, mirrored, observed, (round(low, 5), round(high, 5)), inside)


# The processes of the candidate's side: its own core; the rest (Envoy, the primary) the others.
CANDIDATE_SIDE = ("candidate",)


def _pin(thread: int, cores: set[int]) -> None:
    """Pin one thread; one that ended meanwhile (a request's thread) needs nothing."""
    with contextlib.suppress(ProcessLookupError):
        os.sched_setaffinity(thread, cores)


def _threads(pid: int) -> list[int]:
    """Every thread of `pid`: sched_setaffinity(pid) moves only the main one, and a thread started
    before it (the backends' server threads, Envoy's workers) would go on running on every core."""
    try:
        return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return [pid]


def pin_cores(harness: Harness) -> dict[str, list[int]] | None:
    """The candidate's side on the last core, the primary path (and this process: the client) on
    the others; None (nothing pinned) with fewer than 2 cores. Every thread is moved; threads
    started later inherit their parent's cores. A candidate started again (after a down cell) is
    pinned again by `pin_candidate`."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    own, rest = {cores[-1]}, set(cores[:-1])
    pinned = {}
    for name, pid in harness.pids().items():
        target = own if name in CANDIDATE_SIDE else rest
        for thread in _threads(pid):
            _pin(thread, target)
        pinned[name] = sorted(target)
    os.sched_setaffinity(0, rest)
    pinned["client"] = sorted(rest)
    return pinned


def pin_candidate(harness: Harness, cores: dict[str, list[int]] | None) -> None:
    if cores and (process := harness.backends["candidate"].process) is not None:
        for thread in _threads(process.pid):
            _pin(thread, set(cores["candidate"]))


def measure(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    runs: list[CellRun] = []
    chosen = conditions_of(args.only or MIRRORED)
    latencies: dict[str, list[np.ndarray]] = {key(*condition): [] for condition in chosen}
    all_cores = os.sched_getaffinity(0)
    load_rps = float(local_inventory_vars()["mirror_sandbox"]["load"]["rps"])
    resources = local_resources()
    candidate_subset = resources.destination_rule["spec"]["subsets"][1]["name"]
    if args.no_outlier_detection:
        resources = without_subset_policy(resources, candidate_subset)
    with (
        results.stopped_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-dataplane-") as tmp,
        running_harness(Path(tmp), resources) as harness,
    ):
        log(f"data plane started: Envoy at {harness.proxy_url}, processes {harness.pids()}")
        try:
            cores = None if args.shared_cores else pin_cores(harness)
            log(f"cores: {cores or 'every process on every core'}")
            capacity = {percent: measure_capacity(harness, percent, args.capacity_seconds) for percent in (0, 100)}
            rate = min(MAX_RATE, max(10.0, round(args.load_fraction * min(capacity.values()))))
            log(
                f"capacity {capacity[0]:.0f} requests/s with the mirror off, {capacity[100]:.0f} mirroring 100% "
                f"to a healthy candidate; {args.rounds} rounds of {len(chosen)} cells at {rate:.0f} requests/s"
            )
            for index in range(args.rounds):
                for candidate, percent in round_order(index, chosen):
                    run, values = run_cell(harness, index, candidate, percent, rate, args.cell_seconds)
                    if CANDIDATES.get(candidate, HEALTHY) is None:
                        pin_candidate(harness, cores)
                    runs.append(run)
                    latencies[key(candidate, percent)].append(np.array(values))
                this = [run for run in runs if run.round == index]
                log(
                    f"round {index + 1}/{args.rounds}: p50/p99 ms "
                    + ", ".join(f"{key(r.candidate, r.percent)} {r.p50_ms:.2f}/{r.p99_ms:.2f}" for r in this)
                    + f"; {sum(r.errors for r in this)} errors"
                )
            shares = measure_shares(harness, load_rps, args.share_seconds)
        finally:
            os.sched_setaffinity(0, all_cores)
    conditions = pooled(runs, latencies, args.rounds, chosen)
    mirrored_conditions = [c for c in conditions if c.percent]
    band = band_of(conditions)
    return {
        "benchmark": section_of(args),
        "quick": args.quick,
        "setup": {
            "capacity_rps": {"mirror_off": round(capacity[0], 1), "mirror_100_healthy": round(capacity[100], 1)},
            "load_fraction": args.load_fraction,
            "rate_rps": rate,
            "rounds": args.rounds,
            "only": [key(*condition) for condition in args.only] if args.only else None,
            "no_outlier_detection": args.no_outlier_detection,
            "cell_seconds": args.cell_seconds,
            "concurrency": CONCURRENCY,
            "cores": cores,
            "method": "GET",
            "candidates": CANDIDATES,
            "candidate_subset": candidate_subset,
            "destination_rule_traffic_policy": resources.destination_rule["spec"].get("trafficPolicy", {}),
            "destination_rule_subset_traffic_policies": resources.subset_traffic_policies,
            "bootstrap": {"resamples": RESAMPLES, "confidence": CONFIDENCE, "seed": SEED},
            "share_rps": load_rps,
            "share_seconds": args.share_seconds,
        },
        "conditions": [asdict(c) for c in conditions],
        "cells": [asdict(r) for r in runs],
        "shares": [asdict(s) for s in shares],
        "summary": {
            "target": "mirroring 100%: p50/off and p99/off within the A/A band (1 +- the A/A interval's reach)",
            "band": band,
            "within": sum(1 for c in mirrored_conditions if c.verdict == "within"),
            "judged": len(mirrored_conditions),
            "target_met": all(c.verdict == "within" for c in mirrored_conditions),
            "errors": sum(c.errors for c in conditions),
            "error_kinds": {
                kind: sum(r.error_kinds.get(kind, 0) for r in runs)
                for kind in sorted({kind for r in runs for kind in r.error_kinds})
            },
            "shares_inside": all(s.inside for s in shares),
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def _ratio(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None or interval is None:
        return "-"
    return f"{value:.2f}x ({interval[0]:.2f}-{interval[1]:.2f})"


HEADER = [
    "candidate",
    "mirror",
    "req/s",
    "p50 ms",
    "p99 ms",
    f"p50/off ({CONFIDENCE:.0%})",
    f"p99/off ({CONFIDENCE:.0%})",
]
HEADER += ["errors", "mirrored", "verdict"]
SHARE_HEADER = ["mirror", "GETs", "copies", "observed", f"Wilson interval ({SHARE_CONFIDENCE:.2%})", "inside"]


def rows(document: dict) -> list[list[str]]:
    return [
        [
            c["candidate"],
            "off" if c["percent"] == 0 else f"{c['percent']}%",
            f"{c['throughput_rps']:.1f}",
            f"{c['p50_ms']:.3f}",
            f"{c['p99_ms']:.3f}",
            _ratio(c["p50_vs_off"], c["p50_interval"]),
            _ratio(c["p99_vs_off"], c["p99_interval"]),
            str(c["errors"]),
            f"{c['mirrored_share']:.1%}",
            c["verdict"],
        ]
        for c in document["conditions"]
    ]


def judged_shares(document: dict) -> list[Share]:
    return [judge_share(s["percent"], s["sent"], s["mirrored"]) for s in document["shares"]]


def share_rows(document: dict) -> list[list[str]]:
    return [
        [
            f"{s.percent:g}%",
            str(s.sent),
            str(s.mirrored),
            f"{s.observed:.2%}",
            "every copy" if s.percent == 100 else f"{s.interval[0]:.2%}-{s.interval[1]:.2%}",
            "yes" if s.inside else "NO",
        ]
        for s in judged_shares(document)
    ]


def within_band(p50_vs_off: float, p99_vs_off: float, band: dict[str, tuple[float, float]]) -> bool:
    """A mirrored condition is within when both its ratios are at or below the upper ends of the
    A/A band: a cost the run cannot tell from noise (a condition faster than off is no cost)."""
    return p50_vs_off <= band["p50"][1] and p99_vs_off <= band["p99"][1]


def _fields(value: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    """A nested mapping as (dotted path, value) pairs: outlierDetection.interval, 1s."""
    pairs: list[tuple[str, str]] = []
    for field, item in value.items():
        dotted = f"{path}.{field}" if path else field
        pairs += _fields(item, dotted) if isinstance(item, dict) and item else [(dotted, str(item))]
    return pairs


def _policy_rows(label: str, policy: dict[str, Any]) -> list[list[str]]:
    """A trafficPolicy as one row per field ("<label> outlierDetection.interval" | "1s"), "none" when empty."""
    return [[f"{label} {dotted}", value] for dotted, value in _fields(policy)] or [[label, "none"]]


def _placement(cores: dict[str, list[int]] | None) -> str:
    """'candidate: 1; primary, envoy, client: 0' from the cores of each process."""
    if not cores:
        return "every process on every core"
    by_cores: dict[str, list[str]] = {}
    for name, pinned in cores.items():
        by_cores.setdefault(", ".join(str(core) for core in pinned), []).append(name)
    return "; ".join(f"{', '.join(names)}: {pinned}" for pinned, names in by_cores.items())


def _behaviour(behaviour: dict[str, float] | None) -> str:
    if behaviour is None:
        return "stopped (connection refused)"
    return f"error ratio {behaviour['error_ratio']:g}, latency {behaviour['latency_ms']:g} ms"


def setting_rows(document: dict) -> list[list[str]]:
    setup = document["setup"]
    bootstrap = setup["bootstrap"]
    return [
        ["cores", _placement(setup.get("cores"))],
        ["capacity, mirror off (flat out) req/s", f"{setup['capacity_rps']['mirror_off']:.0f}"],
        ["capacity, mirroring 100% to a healthy candidate req/s", f"{setup['capacity_rps']['mirror_100_healthy']:.0f}"],
        ["load fraction (of the lower capacity)", f"{setup['load_fraction']:g}"],
        ["every cell req/s", f"{setup['rate_rps']:.0f}"],
        ["cell s", f"{setup['cell_seconds']:g}"],
        ["rounds", str(setup["rounds"])],
        ["cells per round", str(len(document["conditions"]))],
        ["method", setup["method"]],
        ["client connections", str(setup["concurrency"])],
        *[[f"candidate {name}", _behaviour(behaviour)] for name, behaviour in setup["candidates"].items()],
        ["only (--only)", ", ".join(setup["only"]) if setup.get("only") else "every condition"],
        [
            "candidate subset's trafficPolicy dropped (--no-outlier-detection)",
            "yes" if setup.get("no_outlier_detection") else "no",
        ],
        *_policy_rows("DestinationRule trafficPolicy (every subset)", setup["destination_rule_traffic_policy"]),
        *[
            row
            for subset, policy in setup.get("destination_rule_subset_traffic_policies", {}).items()
            for row in _policy_rows(f"subset {subset}'s own trafficPolicy", policy)
        ],
        [
            "bootstrap over rounds: draws, confidence, seed",
            f"{bootstrap['resamples']}, {bootstrap['confidence']:.0%}, {bootstrap['seed']}",
        ],
        ["delivery check req/s", f"{setup['share_rps']:g}"],
        ["delivery check s per percent", f"{setup['share_seconds']:g}"],
    ]


CELLS_HEADER = ["over the cells", "value"]


def cell_rows(document: dict) -> list[list[str]]:
    """The drift the rounds are there to cancel (the off cells' own p99), the waits for the
    candidate's host, and the errors."""
    off_p99 = sorted(r["p99_ms"] for r in document["cells"] if (r["candidate"], r["percent"]) == OFF)
    waits = [r["ejection_wait_s"] for r in document["cells"] if r["ejection_wait_s"]]
    kinds = document["summary"].get("error_kinds") or {}
    return [
        ["off cells' own p99 ms, lowest", f"{off_p99[0]:.2f}"],
        ["off cells' own p99 ms, median", f"{off_p99[len(off_p99) // 2]:.2f}"],
        ["off cells' own p99 ms, highest", f"{off_p99[-1]:.2f}"],
        ["cells that waited for the candidate's host to be let back in", str(len(waits))],
        ["longest wait s", f"{max(waits, default=0):.1f}"],
        ["errors in all cells", str(document["summary"]["errors"])],
        ["errors by kind", ", ".join(f"{kind}: {count}" for kind, count in kinds.items()) or "none"],
    ]


COUNTERS_HEADER = ["candidate (measured cells)", *CANDIDATE_COUNTERS.values()]


def _counter_totals(document: dict, candidate: str, percent: int) -> dict[str, int]:
    """A mirrored condition's cells' CANDIDATE_COUNTERS summed: what its copies cost Envoy."""
    mine = [
        r.get("candidate_counters", {})
        for r in document["cells"]
        if (r["candidate"], r["percent"]) == (candidate, percent)
    ]
    return {name: sum(counters.get(name, 0) for counters in mine) for name in CANDIDATE_COUNTERS}


def counter_rows(document: dict) -> list[list[str]]:
    return [
        [
            f"{c['candidate']} {c['percent']}%",
            *map(str, _counter_totals(document, c["candidate"], c["percent"]).values()),
        ]
        for c in document["conditions"]
        if c["percent"]
    ]


TARGET_HEADER = ["target", "measured", "met"]


def target_rows(document: dict) -> list[list[str]]:
    """Each mirrored condition against the upper ends of the A/A band, the data-plane target, and
    delivery."""
    summary = document["summary"]
    band = summary["band"]
    mirrored = [c for c in document["conditions"] if c["percent"]]
    shares = judged_shares(document)
    exact = [s for s in shares if s.percent == 100]
    sampled = [s for s in shares if s.percent != 100]
    sampled_percents = ", ".join(f"{s.percent:g}" for s in sampled)
    return [
        [
            "A/A band (1 ± the A/A interval's farthest end from 1)",
            f"p50 {band['p50'][0]:.2f}-{band['p50'][1]:.2f}x, p99 {band['p99'][0]:.2f}-{band['p99'][1]:.2f}x",
            "-",
        ],
        *[
            [
                f"{c['candidate']} {c['percent']}%: p50/off <= {band['p50'][1]:.2f}x and p99/off <= {band['p99'][1]:.2f}x",
                f"{c['p50_vs_off']:.2f}x, {c['p99_vs_off']:.2f}x",
                results.met(within_band(c["p50_vs_off"], c["p99_vs_off"], band)),
            ]
            for c in mirrored
        ],
        [summary["target"], f"{summary['within']} of {summary['judged']} within", results.met(summary["target_met"])],
        *[["every copy delivered at 100%", f"{s.mirrored} of {s.sent}", results.met(s.inside)] for s in exact],
        [
            f"{sampled_percents}%: each observed share inside its Wilson interval at {SHARE_CONFIDENCE:.2%} "
            f"({CONFIDENCE:.0%} for the {len(SHARE_PERCENTS)} together, Bonferroni)",
            f"{sum(s.inside for s in sampled)} of {len(sampled)} inside",
            results.met(all(s.inside for s in sampled)),
        ],
    ]


DOWN = ("down", 100)
COMPARISON_HEADER = [
    "down candidate 100%",
    "run",
    "candidate's outlier detection",
    f"p50/off ({CONFIDENCE:.0%})",
    f"p99/off ({CONFIDENCE:.0%})",
    "A/A band p50",
    "A/A band p99",
    "refused",
    "no healthy upstream",
    "ejections",
    "verdict",
]


def with_outlier_path(quick: bool) -> Path:
    """The JSON of the run with the candidate's outlier detection that a --no-outlier-detection
    run is shown beside: the main run's, quick beside quick."""
    return results.BENCH_DIR / (f"{SECTION}.quick.json" if quick else f"{SECTION}.json")


def _outlier_detection_of(setup: dict) -> str:
    """Where the candidate's outlier detection came from: its subset's own trafficPolicy (istiod's
    merge: it replaces the DestinationRule's whole), the DestinationRule's, or none."""
    subset = setup.get("candidate_subset", "candidate")
    if "outlierDetection" in setup.get("destination_rule_subset_traffic_policies", {}).get(subset, {}):
        return f"subset {subset}'s own"
    if "outlierDetection" in setup["destination_rule_traffic_policy"]:
        return "the DestinationRule's (every subset)"
    return "none"


def comparison_rows(documents: list[dict]) -> list[list[str]]:
    """The down candidate of each run, side by side: with and without its outlier detection."""
    rows = []
    for document in documents:
        down = next(c for c in document["conditions"] if (c["candidate"], c["percent"]) == DOWN)
        band = document["summary"]["band"]
        counters = _counter_totals(document, *DOWN)
        rows.append(
            [
                "without (--no-outlier-detection)" if document["setup"].get("no_outlier_detection") else "with",
                f"{document['when']}, {document['setup']['rounds']} rounds",
                _outlier_detection_of(document["setup"]),
                _ratio(down["p50_vs_off"], down["p50_interval"]),
                _ratio(down["p99_vs_off"], down["p99_interval"]),
                f"{band['p50'][0]:.2f}-{band['p50'][1]:.2f}x",
                f"{band['p99'][0]:.2f}-{band['p99'][1]:.2f}x",
                str(counters["upstream_cx_connect_fail"]),
                str(counters["upstream_cx_none_healthy"]),
                str(counters["outlier_detection.ejections_enforced_total"]),
                down["verdict"],
            ]
        )
    return rows


def beside(document: dict) -> list[dict]:
    """A --no-outlier-detection run with the down candidate, after the run with outlier detection
    (its JSON, when there is one): the documents of the comparison; none for any other run."""
    if not document["setup"].get("no_outlier_detection") or not any(
        (c["candidate"], c["percent"]) == DOWN for c in document["conditions"]
    ):
        return []
    path = with_outlier_path(document["quick"])
    return [results.read_json(path), document] if path.exists() else [document]


def tables(document: dict, render: Callable[[list[str], list[list[Any]]], str]) -> list[str]:
    """Every table of a run, drawn by `render` (text for the terminal, markdown for the doc)."""
    parts = [
        render(results.SETTING_HEADER, setting_rows(document)),
        render(HEADER, rows(document)),
        render(CELLS_HEADER, cell_rows(document)),
        render(COUNTERS_HEADER, counter_rows(document)),
        render(TARGET_HEADER, target_rows(document)),
        render(SHARE_HEADER, share_rows(document)),
    ]
    if compared := beside(document):
        parts.append(render(COMPARISON_HEADER, comparison_rows(compared)))
    return parts


def table(document: dict) -> str:
    return "\n\n".join(tables(document, results.text_table))


def doc_section(document: dict) -> str:
    return "\n\n".join([results.run_line(document), *tables(document, results.markdown_table)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds; each runs every condition once")
    parser.add_argument("--cell-seconds", type=float, default=2.0, help="load per cell, seconds")
    parser.add_argument(
        "--load-fraction", type=float, default=0.25, help="share of the lower measured capacity to send"
    )
    parser.add_argument("--capacity-seconds", type=float, default=4.0, help="flat-out load to measure the capacity")
    parser.add_argument(
        "--share-seconds", type=float, default=10.0, help="load per mirror percent of the delivery check, seconds"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 rounds of 1 s cells, written to dataplane.quick.json"
    )
    parser.add_argument(
        "--shared-cores", action="store_true", help="leave every process on every core (no candidate core)"
    )
    parser.add_argument(
        "--no-outlier-detection",
        action="store_true",
        help="the local inventory's DestinationRule without the candidate subset's trafficPolicy "
        "(its outlier detection): the cost of a down candidate it removes; written to dataplane-no-outlier.json "
        "and, with --write-doc, to its own block of the doc beside the main run's down candidate",
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        metavar="NAME[,NAME]",
        help="run only these mirrored conditions (slow-100,down-100, ...), with mirroring off twice per round",
    )
    results.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.cell_seconds, args.capacity_seconds, args.share_seconds = 2, 1.0, 2.0, 3.0
    if not 2 <= args.rounds <= 500 or not 0.5 <= args.cell_seconds <= 60 or not 1 <= args.share_seconds <= 600:
        parser.error("--rounds 2..500, --cell-seconds 0.5..60, --share-seconds 1..600")
    if not 0 < args.load_fraction <= 1 or not 1 <= args.capacity_seconds <= 30:
        parser.error(
            f"--load-fraction {args.load_fraction}, --capacity-seconds {args.capacity_seconds}: allowed (0, 1] and 1..30"
        )
    section = section_of(args)
    out = results.output_path(args, section)
    if args.write_doc and args.quick:
        parser.error("--write-doc needs a full run, not --quick")
    if args.write_doc and not args.from_json:
        if not args.no_outlier_detection and args.only:
            parser.error("--write-doc of the main block needs every condition, not --only")
        if args.no_outlier_detection and DOWN not in (args.only or MIRRORED):
            parser.error("--write-doc --no-outlier-detection needs the down candidate (--only down-100)")

    return results.finish(
        args,
        argv,
        script=SCRIPT,
        section=section,
        out=out,
        measure=measure,
        table=table,
        doc_section=doc_section,
        interrupted="interrupted: the data plane was stopped, nothing written",
    )


if __name__ == "__main__":
    sys.exit(main())
