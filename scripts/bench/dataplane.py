"""Benchmark 2, data-plane cost: the primary's p50/p99 and throughput with mirroring off, 10%, 50%, 100%.

One local sandbox (playbooks/sandbox.yml on free ports, in a tmp build dir, no background load),
then in one run:

  1. capacity: the project's load generator (mirrorramp.loadgen.run, bounded) flat out against
     the proxy for a few seconds, with the mirror off and mirroring 100% to a healthy candidate
     (on one machine the candidate then does as much work as the primary, on the same cores):
     requests/s answered 200;
  2. a fixed rate of --load-fraction (0.5) of the lower capacity for every cell, so that no cell
     runs saturated;
  3. the cells, --cell-seconds (6) each, GET only (the sandbox mirrors GET and HEAD unless
     mirror_all_methods), the mirror set through the nginx driver, the candidate through its
     /control; every mirrored cell between two cells with the mirror off:

        off, healthy 10%, off, healthy 50%, off, healthy 100%, off, slow (2 s) 10%, off, ...,
        failing (500) 100%, off                                               (19 cells)

The candidate (with Prometheus and Alertmanager) runs on a core of its own and everything on the
primary path (the client, nginx, the primary) on the others, as in a cluster, where the candidate
has its own pods: the primary then pays the proxy's own work of mirroring, not the candidate's
CPU. --shared-cores leaves every process on every core (the candidate's work then competes with
the primary's).

Per cell, the primary path as the client sees it: p50, p99, requests/s answered 200, errors
(no answer or not 200), and the share of its requests the candidate received. Each mirrored
cell is compared with the two off cells around it, pooled: on a shared machine the load of
other jobs drifts, and neighbours in time see the same drift; how far those two off cells differ
from each other is printed too (off noise), since a verdict within it is not one.
Target: with a slow or a failing candidate, p99 within 10% of mirroring off.

Run from the repository root with the venv (`make bench` runs every benchmark):

    python scripts/bench/dataplane.py                 # 19 cells of 6 s, about 3-4 minutes
    python scripts/bench/dataplane.py --quick         # smoke run: 2 s cells, build/bench/dataplane.quick.json
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
import math
import os
import threading
import time
from dataclasses import asdict, dataclass

from mirrorramp import loadgen
from scripts.bench import results
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
JUDGED = ("slow", "failing")
TARGET_RATIO = 1.10  # slow or failing: p99 <= 1.10 x the p99 with mirroring off
CONCURRENCY = 16  # client connections: enough that a stall does not hold back the paced requests
REQUEST_TIMEOUT_S = 5.0
MAX_RATE = 800.0  # a slow candidate holds rate x 2 s mirrored requests open (nginx worker_connections 4096)


@dataclass
class Cell:
    index: int
    candidate: str  # "-" for mirroring off
    percent: int
    rate_rps: float
    seconds: float
    sent: int
    ok: int
    errors: int  # no answer, or not 200
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    mirrored: int  # requests of this cell the candidate served
    mirrored_share: float
    off_p99_ms: float | None = None  # p99 of the off cells just before and after this one, pooled
    p99_vs_off: float | None = None
    noise: float | None = None  # p99 of those two off cells, the higher over the lower
    p99_vs_healthy: float | None = None  # slow, failing: against the healthy candidate at the same percent
    target: str = "-"  # pass / FAIL for slow and failing cells


def plan() -> list[tuple[str, int]]:
    """Every mirrored cell between two off cells: off, healthy 10%, off, healthy 50%, off, ..."""
    cells: list[tuple[str, int]] = [("-", 0)]
    for candidate in CANDIDATES:
        for percent in PERCENTS:
            cells += [(candidate, percent), ("-", 0)]
    return cells


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


def run_cell(
    sandbox: Sandbox, index: int, candidate: str, percent: int, rate: float, seconds: float
) -> tuple[Cell, list[float]]:
    sandbox.control("candidate", **CANDIDATES.get(candidate, CANDIDATES["healthy"]))
    sandbox.set_percent(percent)
    time.sleep(0.2)  # the reload's old worker winds down
    prefix = f"dp{index:02d}"
    summary = loadgen.run(
        f"{sandbox.proxy_url}{prefix}",
        rps=rate,
        duration=seconds,
        max_requests=math.ceil(rate * seconds),
        post_ratio=0.0,
        concurrency=CONCURRENCY,
        timeout=REQUEST_TIMEOUT_S,
    )
    quiet = CANDIDATES.get(candidate, CANDIDATES["healthy"])["latency_ms"] / 1000 + 0.5
    mirrored = settle(sandbox, f"/{prefix}/", quiet) if percent else sandbox.served("candidate", f"/{prefix}/")["count"]
    ok = summary.statuses.get(200, 0)
    return Cell(
        index=index,
        candidate=candidate,
        percent=percent,
        rate_rps=round(rate, 1),
        seconds=seconds,
        sent=summary.sent,
        ok=ok,
        errors=summary.sent - ok,
        throughput_rps=round(ok / summary.elapsed_s, 1),
        p50_ms=summary.percentile(0.50) or 0.0,
        p99_ms=summary.percentile(0.99) or 0.0,
        mirrored=mirrored,
        mirrored_share=round(mirrored / summary.sent, 4) if summary.sent else 0.0,
    ), summary.latencies_ms


def judge(cells: list[Cell], latencies: dict[int, list[float]]) -> None:
    """Each mirrored cell against the off cells just before and just after it (drift on a shared
    machine cancels out); `noise` is how far those two off cells differ."""
    off = [c for c in cells if c.percent == 0]
    for cell in cells:
        if cell.percent == 0:
            continue
        before = max((c for c in off if c.index < cell.index), key=lambda c: c.index)
        after = min((c for c in off if c.index > cell.index), key=lambda c: c.index)
        pooled = loadgen.Summary(latencies_ms=latencies[before.index] + latencies[after.index])
        cell.off_p99_ms = pooled.percentile(0.99) or 0.0
        cell.p99_vs_off = round(cell.p99_ms / cell.off_p99_ms, 3) if cell.off_p99_ms else None
        low, high = sorted((before.p99_ms, after.p99_ms))
        cell.noise = round(high / low, 3) if low else None
        if cell.candidate in JUDGED:
            cell.target = "pass" if cell.p99_ms <= TARGET_RATIO * cell.off_p99_ms else "FAIL"
            healthy = next(c for c in cells if c.candidate == "healthy" and c.percent == cell.percent)
            cell.p99_vs_healthy = round(cell.p99_ms / healthy.p99_ms, 3) if healthy.p99_ms else None


# The processes of the candidate's side: its own core; the rest (nginx, the primary) the others.
CANDIDATE_SIDE = ("candidate", "prometheus", "alertmanager")


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
    """The candidate's side on the last core, the primary path (and this process: the client) on
    the others; None (nothing pinned) with fewer than 2 cores. Every thread is moved; threads
    started later inherit their parent's cores, and nginx's workers the master's at each reload."""
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
        pinned[name] = sorted(target)
    os.sched_setaffinity(0, rest)
    pinned["client"] = sorted(rest)
    return pinned


def measure(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    cells: list[Cell] = []
    latencies: dict[int, list[float]] = {}
    all_cores = os.sched_getaffinity(0)
    with running_sandbox(load_seconds=0) as sandbox:
        cores = None if args.shared_cores else pin_cores(sandbox)
        log(f"cores: {cores or 'every process on every core'}")
        capacity = {percent: measure_capacity(sandbox, percent, args.capacity_seconds) for percent in (0, 100)}
        rate = min(MAX_RATE, max(10.0, round(args.load_fraction * min(capacity.values()))))
        log(
            f"capacity {capacity[0]:.0f} requests/s with the mirror off, {capacity[100]:.0f} mirroring 100% to a "
            f"healthy candidate; every cell at {rate:.0f} requests/s"
        )
        for index, (candidate, percent) in enumerate(plan(), start=1):
            cell, latencies[index] = run_cell(sandbox, index, candidate, percent, rate, args.cell_seconds)
            cells.append(cell)
            log(
                f"cell {index:>2} {candidate:<8} {percent:>3}%: p50 {cell.p50_ms:.2f} ms, p99 {cell.p99_ms:.2f} ms, "
                f"{cell.throughput_rps:.0f}/s, {cell.errors} errors, {cell.mirrored_share:.0%} mirrored"
            )
        sandbox.control("candidate")
        sandbox.set_percent(0)
    os.sched_setaffinity(0, all_cores)
    judge(cells, latencies)
    off = [c for c in cells if c.percent == 0]
    pooled = loadgen.Summary(latencies_ms=[x for c in off for x in latencies[c.index]])
    judged = [c for c in cells if c.target != "-"]
    noisy = [c.index for c in judged if c.noise is None or c.noise > TARGET_RATIO]
    return {
        "benchmark": SECTION,
        "quick": args.quick,
        "setup": {
            "capacity_rps": {"mirror_off": round(capacity[0], 1), "mirror_100_healthy": round(capacity[100], 1)},
            "load_fraction": args.load_fraction,
            "rate_rps": rate,
            "cell_seconds": args.cell_seconds,
            "concurrency": CONCURRENCY,
            "cores": cores,
            "method": "GET",
            "candidates": CANDIDATES,
        },
        "cells": [asdict(c) for c in cells],
        "baseline": {
            "cells": len(off),
            "p50_ms": pooled.percentile(0.50),
            "p99_ms": pooled.percentile(0.99),
            "p99_ms_per_cell": [c.p99_ms for c in off],
        },
        "summary": {
            "target": f"slow or failing candidate: p99 <= {TARGET_RATIO:g} x the off cells around it",
            "cells_judged": len(judged),
            "cells_passed": sum(1 for c in judged if c.target == "pass"),
            "target_met": all(c.target == "pass" for c in judged),
            # Cells whose two off cells differ by more than the target: there the verdict is noise.
            "noisy_cells": noisy,
            "errors": sum(c.errors for c in cells),
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


HEADER = ["cell", "candidate", "mirror", "req/s", "p50 ms", "p99 ms", "off p99 ms", "p99/off", "off noise"]
HEADER += ["p99/healthy", "errors", "mirrored", "target"]


def _target(cell: dict) -> str:
    if cell["target"] == "-":
        return "-"
    noisy = cell["noise"] is None or cell["noise"] > TARGET_RATIO
    return f"{cell['target']} (noise)" if noisy else cell["target"]


def rows(document: dict) -> list[list[str]]:
    return [
        [
            str(c["index"]),
            c["candidate"],
            "off" if c["percent"] == 0 else f"{c['percent']}%",
            f"{c['throughput_rps']:.1f}",
            f"{c['p50_ms']:.2f}",
            f"{c['p99_ms']:.2f}",
            "-" if c["off_p99_ms"] is None else f"{c['off_p99_ms']:.2f}",
            _ratio(c["p99_vs_off"]),
            _ratio(c["noise"]),
            _ratio(c.get("p99_vs_healthy")),
            str(c["errors"]),
            f"{c['mirrored_share']:.1%}",
            _target(c),
        ]
        for c in document["cells"]
    ]


def verdict(document: dict) -> str:
    s = document["summary"]
    text = f"{s['cells_passed']} of {s['cells_judged']} cells pass: {'met' if s['target_met'] else 'MISSED'}"
    if s["noisy_cells"]:
        text += (
            f"; but around cells {', '.join(map(str, s['noisy_cells']))} the two off cells themselves differ by "
            f"more than {TARGET_RATIO - 1:.0%} (column off noise), so there the verdict is within the noise"
        )
    return text


def setup_line(document: dict) -> str:
    setup = document["setup"]
    cores = setup.get("cores")
    placement = (
        f"the candidate, Prometheus and Alertmanager on core {cores['candidate']}, the client, nginx and the "
        f"primary on {cores['client']}"
        if cores
        else "every process on every core"
    )
    return (
        f"{placement}; capacity (flat out): {setup['capacity_rps']['mirror_off']:.0f} requests/s "
        f"with the mirror off, {setup['capacity_rps']['mirror_100_healthy']:.0f} mirroring 100% to a healthy "
        f"candidate; every cell {setup['rate_rps']:.0f} requests/s ({setup['load_fraction']:g} of the lower) for "
        f"{setup['cell_seconds']:g} s, GET, {setup['concurrency']} client connections"
    )


def baseline_line(document: dict) -> str:
    base = document["baseline"]
    per_cell = ", ".join(f"{p99:.2f}" for p99 in base["p99_ms_per_cell"])
    return (
        f"mirroring off, {base['cells']} cells pooled: p50 {base['p50_ms']:.2f} ms, p99 {base['p99_ms']:.2f} ms "
        f"(each off cell's p99: {per_cell} ms)"
    )


def table(document: dict) -> str:
    body = [HEADER, *rows(document)]
    widths = [max(len(row[i]) for row in body) for i in range(len(HEADER))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in body]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(
        [
            setup_line(document),
            "",
            *lines,
            "",
            baseline_line(document),
            f"target ({document['summary']['target']}): {verdict(document)}",
        ]
    )


def doc_section(document: dict) -> str:
    load = ", ".join(f"{x:g}" for x in document["machine"]["load_average"])
    return "\n".join(
        [
            f"Command: `{document['command']}` ({document['when']}, {document['seconds']:.0f} s in all; "
            f"load average at the start: {load}).",
            "",
            f"Setup: {setup_line(document)}; latencies as the client sees them. off p99: the p99 of the off cells "
            "just before and just after the cell, pooled; off noise: those two off cells' p99, the higher over "
            "the lower; p99/healthy: a slow or failing candidate's cell against the healthy candidate's at the "
            "same percent (what the bad candidate adds beyond mirroring itself).",
            "",
            results.markdown_table(HEADER, rows(document)),
            "",
            f"{baseline_line(document)[0].upper()}{baseline_line(document)[1:]}. "
            f"Errors in all cells: {document['summary']['errors']}.",
            "",
            f"Target ({document['summary']['target']}): **{verdict(document)}**.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cell-seconds", type=float, default=6.0, help="load per cell, seconds")
    parser.add_argument("--load-fraction", type=float, default=0.5, help="share of the lower measured capacity to send")
    parser.add_argument("--capacity-seconds", type=float, default=4.0, help="flat-out load to measure the capacity")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s cells, written to dataplane.quick.json")
    parser.add_argument(
        "--shared-cores", action="store_true", help="leave every process on every core (no candidate core)"
    )
    results.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    if args.quick:
        args.cell_seconds, args.capacity_seconds = 2.0, 2.0
    if not 1 <= args.cell_seconds <= 120 or not 0 < args.load_fraction <= 1 or not 1 <= args.capacity_seconds <= 30:
        parser.error("1 <= --cell-seconds <= 120, 0 < --load-fraction <= 1, 1 <= --capacity-seconds <= 30")
    out = results.output_path(args, SECTION)
    if args.write_doc and args.quick:
        parser.error("--write-doc needs a full run, not --quick")

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
