"""Benchmark 2, data-plane cost: the primary's p50/p99 and throughput with mirroring off, 10%, 50%, 100%.

One local sandbox (playbooks/sandbox.yml on free ports, in a tmp build dir, no background load),
then in one run:

  1. capacity: the project's load generator (mirrorramp.loadgen.run, bounded) flat out against
     the proxy for a few seconds, with the mirror off and mirroring 100% to a healthy candidate:
     requests/s answered 200;
  2. a fixed rate of --load-fraction (0.25) of the lower capacity for every cell, so that no cell
     runs saturated and the p99 measures mirroring, not queueing (see "Why a quarter");
  3. --rounds (4) rounds; each round runs every condition once, one short cell each
     (--cell-seconds, 2): mirroring off, a healthy, a slow (2 s) and a failing (500)
     candidate at 10%, 50% and 100%, and mirroring off again (the A/A control: judged against
     the first off cells, it shows the smallest difference the run can tell from the machine's
     noise; every other condition is judged against both off cells of each round, pooled, so
     its reference adds less noise of its own). Each round draws its own order (seeded), so no
     condition always follows the same one. A slow candidate's cell is measured after a warm-up
     of its latency (its open copies at their steady level), and the next cell starts once
     they are answered. GET only (the sandbox mirrors GET and HEAD unless
     mirror_all_methods); the mirror set through the nginx driver, the candidate through its
     /control. The cells' requests come from scripts/bench/paced_client.py: one thread, open
     loop (see "Why its own client").

Why a quarter of the capacity: the client, the proxy and the primary share a core (below), and at
half the capacity that core is 60-75% busy; a request's p99 is then set by which others it queues
behind, and the A/A control's interval was 0.70-1.38x in 30 rounds (0.77-2.05x in another). At a
quarter (the core about 45% busy) it was 0.83-1.15x in 10 rounds. What mirroring costs the primary
is the same work per request at either rate; at the lower one the run can resolve it.

Why its own client: mirrorramp.loadgen (the sandbox's load) runs a thread per connection. Measured
with /proc/<pid>/stat at 485 requests/s, its 16 threads took 0.43 ms of CPU per request on the
primary's core, as much as the primary (0.45 ms) and nearly half the core's work per request, and
a thread woken by its answer waits for the GIL behind the others. In the same 40 rounds of 4 s at
a tenth of the capacity (healthy, slow and failing at 100%), the one-thread client measured the off
cells' p50 at 1.17 ms instead of 1.50 and their p99 at 1.99 ms instead of 2.41: less of the
client in the numbers. Its intervals were no narrower (A/A 0.93-1.16x against 0.98-1.17x): the
drift between cells is the machine's, not the client's.

Why rounds: on a shared 2-core machine a 1-4 ms p99 drifts by 2x between cells of the same
condition, seconds apart (measured: off cells differ by 18-165%). Long cells do not help (the
drift is in time, not in the sample size); interleaving does: each condition's p99 is taken over
all its rounds pooled, and its ratio to the off cells' pooled p99 gets a 95% interval from a
bootstrap over rounds (a round's cells are resampled together, so the drift they share cancels).
--only runs some mirrored conditions (and mirroring off, twice) in shorter rounds: more rounds in
the same time, a narrower interval for the cells that need one.

The candidate (with the mirror forwarder and relay, Prometheus and Alertmanager) runs on a core
of its own and everything on the primary path (the client, the proxy nginx, the primary) on the
others, every thread of each process, as in a cluster, where the candidate has its own pods: the
primary then pays the proxy's own work of mirroring (a log line per copy; GET only here, so no
copy goes through the relay), not the candidate's CPU. On that core the candidate, Prometheus and
Alertmanager run at nice 10, behind the forwarder and the relay (see BEHIND_THE_RELAY). --shared-cores leaves
every process on every core (the candidate's work then competes with the primary's).

Per condition: p50, p99, requests/s answered 200, errors (no answer or not 200), the share of its
requests the candidate received, and p99/off with its interval. Target: with a slow or a failing
candidate, p99 within 10% of mirroring off. A cell passes when the whole interval is at or below
1.10, fails when the whole interval is above, and is within the noise otherwise.

Run from the repository root with the venv (`make bench` runs every benchmark):

    python scripts/bench/dataplane.py                 # 4 rounds of 11 cells of 2 s, about 3.5 minutes
    python scripts/bench/dataplane.py --rounds 50     # the run in docs/benchmarks.md, about 34 minutes
    python scripts/bench/dataplane.py --only slow-100,failing-100 --rounds 100   # two cells, about 25 minutes
    python scripts/bench/dataplane.py --quick         # smoke run: 3 rounds of 1 s cells, build/bench/dataplane.quick.json
    python scripts/bench/dataplane.py --write-doc     # and rewrite its section of docs/benchmarks.md
    python scripts/bench/dataplane.py --from-json --write-doc   # the doc from the last build/bench/dataplane.json

(`python -m scripts.bench.dataplane` works too.) Prints a table, writes build/bench/dataplane.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # python scripts/bench/dataplane.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import os
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from mirrorramp import loadgen
from scripts.bench import paced_client, results
from scripts.bench.sandbox import Sandbox, log, running_sandbox

SCRIPT = "scripts/bench/dataplane.py"
SECTION = "dataplane"
# candidate -> its /control behaviour
CANDIDATES: dict[str, dict[str, float]] = {
    "healthy": {"error_ratio": 0.0, "latency_ms": 0.0},
    "slow": {"error_ratio": 0.0, "latency_ms": 2000.0},
    "failing": {"error_ratio": 1.0, "latency_ms": 0.0},
}
PERCENTS = (10, 50, 100)
OFF = ("-", 0)
# Mirroring off a second time in every round, judged against the first like any condition: the
# A/A control, whose interval shows the smallest difference these rounds can resolve.
OFF_AGAIN = ("- (A/A)", 0)
MIRRORED = [(candidate, percent) for candidate in CANDIDATES for percent in PERCENTS]
JUDGED = ("slow", "failing")
TARGET_RATIO = 1.10  # slow or failing: p99 <= 1.10 x the p99 with mirroring off
CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 7  # the bootstrap's draws: the same data gives the same interval
CONCURRENCY = 16  # client connections opened before a cell; more open only if every one waits (a stall)
REQUEST_TIMEOUT_S = 5.0
MAX_RATE = 800.0


def key(candidate: str, percent: int) -> str:
    """A condition's name, and the path its requests go under: off, off-again, healthy-10, slow-100, ..."""
    if percent == 0:
        return "off" if (candidate, percent) == OFF else "off-again"
    return f"{candidate}-{percent}"


def conditions_of(mirrored: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The table's order: mirroring off twice, then the mirrored conditions."""
    return [OFF, OFF_AGAIN, *mirrored]


def round_order(index: int, order: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Every condition once, in an order drawn for this round (seeded: the same for every run).
    Turning one order round by round gave each condition the same predecessor every time, so a
    cell's aftermath (the reload, copies still open) always fell on the same condition. With it,
    mirroring off (always after failing 100%) read 8% and 17% above the average cell in two
    60-round runs (A/A 0.90x and 0.81x). With drawn orders the A/A read 0.87x, 1.06x, 1.04x and
    1.00x in four runs: no bias left (the 0.87x came from the first off cells' six worst cells;
    their median cell read lower than the second's)."""
    permutation = np.random.default_rng((SEED, index)).permutation(len(order))
    return [order[i] for i in permutation]


def parse_only(text: str) -> list[tuple[str, int]]:
    """--only slow-100,failing-10: the mirrored conditions to run (mirroring off always runs, twice)."""
    names = {key(*condition): condition for condition in MIRRORED}
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {', '.join(unknown) or 'nothing'} is not a condition; allowed: {', '.join(names)}"
        )
    return [condition for condition in MIRRORED if key(*condition) in chosen]


def reference_of(name: str) -> tuple[str, ...]:
    """What a condition is judged against: both off cells of each round, pooled (mirroring off
    measured twice as often as any condition, so the reference adds less noise of its own); the
    A/A control, the first off cells alone (it is the second)."""
    return ("off",) if name == "off-again" else ("off", "off-again")


def pooled_p99(latencies: dict[str, list[np.ndarray]], names: tuple[str, ...], picked) -> float:
    """The p99 of the named conditions' cells in the rounds `picked`, pooled."""
    return p99(np.concatenate([latencies[name][i] for i in picked for name in names]))


def p99(values: np.ndarray) -> float:
    """The same rank as loadgen.Summary.percentile(0.99)."""
    rank = min(len(values) - 1, int(0.99 * len(values)))
    return float(np.partition(values, rank)[rank])


@dataclass
class CellRun:
    """One condition in one round."""

    round: int
    candidate: str  # "-" for mirroring off
    percent: int
    sent: int
    errors: int  # no answer, or not 200
    throughput_rps: float
    p50_ms: float
    p99_ms: float


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
    p99_vs_off: float | None = None
    interval: tuple[float, float] | None = None  # CONFIDENCE interval of p99_vs_off, bootstrap over rounds
    p99_vs_healthy: float | None = None  # slow, failing: against the healthy candidate at the same percent
    target: str = "-"  # pass / FAIL / noise for slow and failing


def measure_capacity(sandbox: Sandbox, percent: int, seconds: float) -> float:
    """Requests/s answered 200 through the proxy flat out (the client on the same cores), with the
    mirror at `percent` to a healthy candidate."""
    sandbox.control("candidate")
    sandbox.set_percent(percent)
    # loadgen's duration bounds its schedule: behind schedule (flat out) it would go on until
    # max_requests. The stop event bounds the wall time.
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        summary = loadgen.run(
            f"{sandbox.proxy_url}capacity-{percent}",
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


def settle(sandbox: Sandbox, prefix: str, quiet_s: float, timeout_s: float = 15.0) -> int:
    """The candidate's count of `prefix` once it has not grown for `quiet_s` (copies arrive
    asynchronously; a slow candidate counts a request when it answers)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while True:
        count = sandbox.served("candidate", prefix)["count"]
        now = time.monotonic()
        if count != last:
            last, since = count, now
        elif now - since >= quiet_s or now > deadline:
            return count
        time.sleep(0.1)


def paced_cell(
    sandbox: Sandbox, path: str, percent: int, rate: float, seconds: float, warmup_s: float = 0.0
) -> paced_client.Summary:
    """One cell: the mirror set to `percent`, then GETs under `path` at `rate` for `seconds`; first,
    with `warmup_s`, the same load under warmup/`path` for that long, not measured."""
    sandbox.set_percent(percent)
    time.sleep(0.2)  # the reload's old worker winds down
    if warmup_s:
        _paced(sandbox, f"warmup/{path}", rate, warmup_s)
    return _paced(sandbox, path, rate, seconds)


def _paced(sandbox: Sandbox, path: str, rate: float, seconds: float) -> paced_client.Summary:
    return paced_client.run(
        f"{sandbox.proxy_url}{path}", rate, seconds, connections=CONCURRENCY, timeout=REQUEST_TIMEOUT_S
    )


def run_cell(
    sandbox: Sandbox, index: int, candidate: str, percent: int, rate: float, seconds: float
) -> tuple[CellRun, list[float]]:
    behaviour = CANDIDATES.get(candidate, CANDIDATES["healthy"])
    sandbox.control("candidate", **behaviour)
    # A slow candidate holds each copy for its latency: the cell is measured once the copies open
    # at its start are answered (the open count at its steady level), and the next cell starts
    # once those of this cell are (none of them falls on another condition).
    held_s = behaviour["latency_ms"] / 1000 if percent else 0.0
    summary = paced_cell(sandbox, f"{key(candidate, percent)}/r{index:02d}", percent, rate, seconds, held_s)
    if held_s:
        time.sleep(held_s + 0.3)
    ok = summary.statuses.get(200, 0)
    return CellRun(
        round=index,
        candidate=candidate,
        percent=percent,
        sent=summary.sent,
        errors=summary.sent - ok,
        throughput_rps=round(ok / summary.elapsed_s, 1),
        p50_ms=summary.percentile(0.50) or 0.0,
        p99_ms=summary.percentile(0.99) or 0.0,
    ), summary.latencies_ms


def intervals(latencies: dict[str, list[np.ndarray]], rounds: int) -> dict[str, tuple[float, float]]:
    """Each mirrored condition's p99/off: its CONFIDENCE interval from a bootstrap over rounds. A
    draw takes `rounds` rounds with replacement, the same ones for the condition and for off, so
    what a round's cells share (the machine's drift) stays paired."""
    rng = np.random.default_rng(SEED)
    ratios: dict[str, list[float]] = {name: [] for name in latencies if name != "off"}
    for _ in range(RESAMPLES):
        picked = rng.integers(0, rounds, rounds)
        off = {names: pooled_p99(latencies, names, picked) for names in {reference_of(name) for name in ratios}}
        for name in ratios:
            ratios[name].append(pooled_p99(latencies, (name,), picked) / off[reference_of(name)])
    tail = (1 - CONFIDENCE) / 2
    return {
        name: (round(float(np.quantile(values, tail)), 3), round(float(np.quantile(values, 1 - tail)), 3))
        for name, values in ratios.items()
    }


def pooled(
    runs: list[CellRun],
    latencies: dict[str, list[np.ndarray]],
    mirrored: dict[str, int],
    rounds: int,
    chosen: list[tuple[str, int]],
) -> list[Condition]:
    """The conditions, each pooled over its rounds and judged against off."""
    bounds = intervals(latencies, rounds)
    conditions = []
    for candidate, percent in chosen:
        name = key(candidate, percent)
        mine = [run for run in runs if (run.candidate, run.percent) == (candidate, percent)]
        values = np.concatenate(latencies[name])
        sent = sum(run.sent for run in mine)
        condition = Condition(
            candidate=candidate,
            percent=percent,
            cells=len(mine),
            sent=sent,
            errors=sum(run.errors for run in mine),
            throughput_rps=round(sum(run.throughput_rps for run in mine) / len(mine), 1),
            p50_ms=round(float(np.partition(values, len(values) // 2)[len(values) // 2]), 2),
            p99_ms=round(p99(values), 2),
            mirrored=mirrored[name],
            mirrored_share=round(mirrored[name] / sent, 4) if sent else 0.0,
        )
        if name != "off":
            condition.p99_vs_off = round(p99(values) / pooled_p99(latencies, reference_of(name), range(rounds)), 3)
            condition.interval = bounds[name]
        if candidate in JUDGED:
            low, high = condition.interval
            condition.target = "pass" if high <= TARGET_RATIO else "FAIL" if low > TARGET_RATIO else "noise"
        conditions.append(condition)
    for condition in conditions:
        if condition.candidate in JUDGED:
            healthy = next((c for c in conditions if (c.candidate, c.percent) == ("healthy", condition.percent)), None)
            if healthy and healthy.p99_ms:
                condition.p99_vs_healthy = round(condition.p99_ms / healthy.p99_ms, 3)
    return conditions


# The processes of the candidate's side: its own core; the rest (the proxy nginx, the primary) the
# others. The forwarder and the relay are the asynchronous half of Envoy's shadowing (the copy
# held open while the candidate answers), which nginx's mirror lacks: on the candidate's side.
CANDIDATE_SIDE = ("candidate", "relay", "forwarder", "prometheus", "alertmanager")
# On that core the relay and the forwarder go first. The proxy waits for the relay's answer (copies
# with a body) before it reads the next request on the connection (nginx's mirror), so a relay
# delayed by the candidate's CPU (a thousand threads of a slow candidate) would put the
# candidate's load on the primary's path, which a cluster does not (the candidate's pods have CPU
# of their own). Measured with 10 rounds, when every copy went through the relay: slow 50%
# p99/healthy 2.28x with every process at the same priority, 0.96x with this. The forwarder
# (copies without a body) is never waited for; ahead of the candidate, it keeps up.
BEHIND_THE_RELAY = ("candidate", "prometheus", "alertmanager")
BEHIND_THE_RELAY_NICE = 10


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (nginx's workers), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _threads(pid: int) -> list[int]:
    """Every thread of `pid`: sched_setaffinity(pid) moves only the main one, and a thread started
    before it (the backends' server threads, Go's threads in Prometheus) would go on starting
    its own threads on every core."""
    try:
        return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return [pid]


def pin_cores(sandbox: Sandbox) -> dict[str, list[int]] | None:
    """The candidate's side on the last core (the candidate, Prometheus and Alertmanager at nice
    BEHIND_THE_RELAY_NICE), the primary path (and this process: the client) on the others; None
    (nothing pinned) with fewer than 2 cores. Every thread is moved; threads started later inherit
    their parent's cores and nice value, and nginx's workers the master's at each reload."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    own, rest = {cores[-1]}, set(cores[:-1])
    pinned = {}
    for name, pid in sandbox.pids.items():
        target = own if name in CANDIDATE_SIDE else rest
        for each in (pid, *_children(pid)):
            for thread in _threads(each):
                os.sched_setaffinity(thread, target)
                if name in BEHIND_THE_RELAY:
                    os.setpriority(os.PRIO_PROCESS, thread, BEHIND_THE_RELAY_NICE)
        pinned[name] = sorted(target)
    os.sched_setaffinity(0, rest)
    pinned["client"] = sorted(rest)
    return pinned


def measure(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    runs: list[CellRun] = []
    chosen = conditions_of(args.only or MIRRORED)
    latencies: dict[str, list[np.ndarray]] = {key(*condition): [] for condition in chosen}
    all_cores = os.sched_getaffinity(0)
    with running_sandbox(load_seconds=0) as sandbox:
        cores = None if args.shared_cores else pin_cores(sandbox)
        log(f"cores: {cores or 'every process on every core'}")
        capacity = {percent: measure_capacity(sandbox, percent, args.capacity_seconds) for percent in (0, 100)}
        rate = min(MAX_RATE, max(10.0, round(args.load_fraction * min(capacity.values()))))
        log(
            f"capacity {capacity[0]:.0f} requests/s with the mirror off, {capacity[100]:.0f} mirroring 100% to a "
            f"healthy candidate; {args.rounds} rounds of {len(chosen)} cells at {rate:.0f} requests/s"
        )
        for index in range(args.rounds):
            for candidate, percent in round_order(index, chosen):
                run, values = run_cell(sandbox, index, candidate, percent, rate, args.cell_seconds)
                runs.append(run)
                latencies[key(candidate, percent)].append(np.array(values))
            this = [run for run in runs if run.round == index]
            log(
                f"round {index + 1}/{args.rounds}: p99 "
                + ", ".join(f"{key(r.candidate, r.percent)} {r.p99_ms:.2f}" for r in this)
                + f" ms; {sum(r.errors for r in this)} errors"
            )
        sandbox.control("candidate")
        sandbox.set_percent(0)
        # Copies arrive after the answer; a slow candidate counts a request when it answers.
        mirrored = {
            key(c, p): settle(
                sandbox, f"/{key(c, p)}/", CANDIDATES.get(c, CANDIDATES["healthy"])["latency_ms"] / 1000 + 0.5
            )
            for c, p in chosen
        }
    os.sched_setaffinity(0, all_cores)
    conditions = pooled(runs, latencies, mirrored, args.rounds, chosen)
    judged = [c for c in conditions if c.target != "-"]
    return {
        "benchmark": SECTION,
        "quick": args.quick,
        "setup": {
            "capacity_rps": {"mirror_off": round(capacity[0], 1), "mirror_100_healthy": round(capacity[100], 1)},
            "load_fraction": args.load_fraction,
            "rate_rps": rate,
            "rounds": args.rounds,
            "only": [key(*condition) for condition in args.only] if args.only else None,
            "cell_seconds": args.cell_seconds,
            "concurrency": CONCURRENCY,
            "cores": cores,
            **({"behind_the_relay_nice": BEHIND_THE_RELAY_NICE} if cores else {}),
            "method": "GET",
            "candidates": CANDIDATES,
            "bootstrap": {"resamples": RESAMPLES, "confidence": CONFIDENCE, "seed": SEED},
        },
        "conditions": [asdict(c) for c in conditions],
        "cells": [asdict(r) for r in runs],
        "summary": {
            "target": f"slow or failing candidate: p99 <= {TARGET_RATIO:g} x mirroring off",
            "cells_judged": len(judged),
            "passed": sum(1 for c in judged if c.target == "pass"),
            "failed": sum(1 for c in judged if c.target == "FAIL"),
            "within_noise": sum(1 for c in judged if c.target == "noise"),
            "target_met": all(c.target == "pass" for c in judged),
            "errors": sum(c.errors for c in conditions),
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


HEADER = ["candidate", "mirror", "req/s", "p50 ms", "p99 ms", "p99/off", f"{CONFIDENCE:.0%} interval"]
HEADER += ["p99/healthy", "errors", "mirrored", "target"]


def rows(document: dict) -> list[list[str]]:
    return [
        [
            c["candidate"],
            "off" if c["percent"] == 0 else f"{c['percent']}%",
            f"{c['throughput_rps']:.1f}",
            f"{c['p50_ms']:.2f}",
            f"{c['p99_ms']:.2f}",
            _ratio(c["p99_vs_off"]),
            "-" if c["interval"] is None else f"{c['interval'][0]:.2f}-{c['interval'][1]:.2f}x",
            _ratio(c["p99_vs_healthy"]),
            str(c["errors"]),
            f"{c['mirrored_share']:.1%}",
            c["target"],
        ]
        for c in document["conditions"]
    ]


def verdict(document: dict) -> str:
    s = document["summary"]
    control = next(c for c in document["conditions"] if (c["candidate"], c["percent"]) == OFF_AGAIN)
    state = "met" if s["target_met"] else "MISSED" if s["failed"] else "not shown"
    text = (
        f"{s['passed']} of {s['cells_judged']} pass, {s['failed']} fail, {s['within_noise']} within the noise: {state}"
    )
    if s["within_noise"]:
        text += (
            f" (within the noise: the {CONFIDENCE:.0%} interval of p99/off holds {TARGET_RATIO:g}, so the rounds "
            "can tell neither a pass nor a fail)"
        )
    low, high = control["interval"]
    return text + f"; the A/A control (off against off): {control['p99_vs_off']:.2f}x, interval {low:.2f}-{high:.2f}x"


def setup_line(document: dict) -> str:
    setup = document["setup"]
    cores = setup.get("cores")
    placement = (
        f"the forwarder and the relay, and at nice {setup['behind_the_relay_nice']} the candidate, Prometheus and "
        f"Alertmanager, on core "
        f"{cores['candidate']}; the client, the proxy nginx and the primary on {cores['client']}"
        if cores
        else "every process on every core"
    )
    return (
        f"{placement}; capacity (flat out): {setup['capacity_rps']['mirror_off']:.0f} requests/s "
        f"with the mirror off, {setup['capacity_rps']['mirror_100_healthy']:.0f} mirroring 100% to a healthy "
        f"candidate; every cell {setup['rate_rps']:.0f} requests/s ({setup['load_fraction']:g} of the lower) for "
        f"{setup['cell_seconds']:g} s, {setup['rounds']} rounds of {len(document['conditions'])} cells, GET, "
        f"{setup['concurrency']} client connections"
    )


def off_line(document: dict) -> str:
    per_cell = sorted(r["p99_ms"] for r in document["cells"] if (r["candidate"], r["percent"]) == OFF)
    return (
        f"the off cells' own p99 ranged from {per_cell[0]:.2f} to {per_cell[-1]:.2f} ms (median "
        f"{per_cell[len(per_cell) // 2]:.2f}): the drift the rounds are there to cancel"
    )


def table(document: dict) -> str:
    lines = results.text_table(HEADER, rows(document)).split("\n")
    return "\n".join(
        [
            setup_line(document),
            "",
            *lines,
            "",
            off_line(document),
            f"target ({document['summary']['target']}): {verdict(document)}",
        ]
    )


def doc_section(document: dict) -> str:
    return "\n".join(
        [
            results.run_line(document),
            "",
            f"Setup: {setup_line(document)}; latencies as the client sees them, each condition pooled over its "
            f"rounds. p99/off: against both off cells of every round, pooled (the A/A control: the second off "
            f"cells against the first); {CONFIDENCE:.0%} interval: of p99/off, "
            "from a bootstrap over rounds; p99/healthy: a slow or failing candidate against the healthy one at "
            "the same percent (what the bad candidate adds beyond mirroring itself).",
            "",
            results.markdown_table(HEADER, rows(document)),
            "",
            f"{off_line(document)[0].upper()}{off_line(document)[1:]}. Errors in all cells: "
            f"{document['summary']['errors']}.",
            "",
            f"Target ({document['summary']['target']}): **{verdict(document)}**.",
        ]
    )


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
        "--quick", action="store_true", help="smoke run: 3 rounds of 1 s cells, written to dataplane.quick.json"
    )
    parser.add_argument(
        "--shared-cores", action="store_true", help="leave every process on every core (no candidate core)"
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        metavar="NAME[,NAME]",
        help="run only these mirrored conditions (slow-100,failing-10, ...), with mirroring off twice per round: "
        "more rounds in the same time for the cells that need them",
    )
    results.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.cell_seconds, args.capacity_seconds = 3, 1.0, 2.0
    if not 2 <= args.rounds <= 500 or not 0.5 <= args.cell_seconds <= 60:
        parser.error(f"--rounds {args.rounds}, --cell-seconds {args.cell_seconds}: allowed 2..500 and 0.5..60")
    if not 0 < args.load_fraction <= 1 or not 1 <= args.capacity_seconds <= 30:
        parser.error(
            f"--load-fraction {args.load_fraction}, --capacity-seconds {args.capacity_seconds}: allowed (0, 1] and 1..30"
        )
    out = results.output_path(args, SECTION)
    if args.write_doc and (args.quick or args.only):
        parser.error("--write-doc needs a full run, not --quick or --only")

    return results.finish(
        args,
        argv,
        script=SCRIPT,
        section=SECTION,
        out=out,
        measure=measure,
        table=table,
        doc_section=doc_section,
        interrupted="interrupted: the sandbox was stopped, nothing written",
    )


if __name__ == "__main__":
    sys.exit(main())
