"""Benchmark 1, reaction time: from the candidate starting to fail to mirrored requests no longer reaching it.

One local sandbox (playbooks/sandbox.yml on free ports, in a tmp build dir, the alert rules
rendered first; its bounded load at the inventory's mirror_sandbox.load rate), then N trials:

  1. mirror at --percent (20) through the nginx driver, with a fresh ramp state "ramping" at
     a one-step plan whose hold never ends in a trial; the candidate healthy;
  2. wait until every gate of inventories/local (ramp.yml, thresholds.yml) passes over the
     window: Prometheus has a healthy window and no critical alert in it;
  3. the ramp engine in watch mode, in this process (mirrorramp.adapter.execute, what the
     mirror_ramp task runs), in a thread; after its first pass, a random 0..poll_interval wait,
     so that t0 falls anywhere in the scrape and poll cycles;
  4. t0: POST the candidate's /control {"error_ratio": 1.0} (t0 = when it answered);
  5. the candidate's /requests is polled every 50 ms; t1 = when the last change of its served
     requests was observed, once they have stayed unchanged for 2 s. Reaction = t1 - t0. (The
     candidate also stamps each request: `reaction_served_s` is the same end from its clock.)

The floor is what the pipeline cannot beat: the scrape interval of the sandbox Prometheus (read
from its configuration) + the engine's poll interval, + the alert's `for` when the alert gate is
the one that tripped. Target: median <= 2x floor.

The window (--window, default 5s): at 100 requests/s (10% POST, not mirrored) and 20% the
candidate serves about 18 requests/s, so 5 s hold about 90, over four times min_requests (20),
and 5 scrapes: the traffic gate never goes inconclusive and rate() always has enough samples.
A candidate answering only 500s moves the 5xx ratio by about 1/window per second of failures:
past the 0.02 of
5xx-ratio-vs-primary after 0.1 s, past the 0.05 of mirror-5xx-ratio after 0.25 s, so the first
scrape after t0 almost always trips. A longer window gives the same first-scrape trip less
often (10 s: 0.2 s and 0.5 s of failures) and makes each trial longer (a trial must wait until
the previous trial's critical alert has left the window); a window of 2-3 s holds only 2-3
samples and a p99 over 40-60 requests, so the traffic gate and the p99 comparison turn
inconclusive or trip on noise.

Run from the repository root with the venv (`make bench` runs every benchmark):

    python scripts/bench/reaction.py                 # 10 trials, about 3-5 minutes
    python scripts/bench/reaction.py --quick         # smoke run: 2 trials, build/bench/reaction.quick.json
    python scripts/bench/reaction.py --write-doc     # and rewrite its section of docs/benchmarks.md
    python scripts/bench/reaction.py --from-json --write-doc   # the doc from the last build/bench/reaction.json

(`python -m scripts.bench.reaction` works too.) Prints a table, writes build/bench/reaction.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # python scripts/bench/reaction.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from mirrorramp.adapter import ARGUMENT_SPEC, RampRequest, build_prometheus, execute
from mirrorramp.durations import parse_duration
from mirrorramp.gates import evaluate
from mirrorramp.model import Verdict
from mirrorramp.state import RampState
from scripts.bench import results
from scripts.bench.sandbox import Sandbox, local_vars, log, resolve, running_sandbox

SCRIPT = "scripts/bench/reaction.py"
SECTION = "reaction"
LOAD_PREFIX = "/load/"  # where the sandbox's load generator sends (mirror_sandbox role)
POLL_SERVED_S = 0.05
FLAT_S = 2.0
TRIAL_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0
EXTRA_ATTEMPTS = 3  # trials redone when a gate trips before t0 (counted and reported)
ALERT_GATE_KIND = "alert"


@dataclass
class Trial:
    trial: int
    gate: str  # the gate the rollback record names (the first failing one)
    failing: list[str]  # every gate that failed in the deciding pass
    floor_s: float
    reaction_s: float  # t1 - t0, t1 as observed by the 50 ms poll
    reaction_served_s: float  # the same end as the candidate stamped it
    detect_s: float  # the rollback decision (start of the deciding pass) - t0
    removal_s: float  # t1 - the rollback decision: nginx -t, reload, verify, requests in flight
    passes: int  # engine passes in the trial
    failing_requests: int  # requests the candidate served after t0
    ready_wait_s: float  # how long the gates took to pass again before this trial


@dataclass
class EngineRun:
    """The ramp engine in watch mode in a thread (what the mirror_ramp task runs, without Ansible)."""

    request: RampRequest
    result: dict | None = None
    error: BaseException | None = None
    first_pass: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="ramp-engine", daemon=True)
        thread.start()
        return thread

    def _progress(self, message: str) -> None:  # watch mode reports every pass
        self.first_pass.set()

    def _run(self) -> None:
        try:
            self.result = execute(self.request, progress=self._progress)
        except BaseException as e:  # reported by the trial, never lost in the thread
            self.error = e
        finally:
            self.first_pass.set()


def ramp_arguments(sandbox: Sandbox, percent: float, window_s: float, poll_s: float) -> dict:
    """The mirror_ramp task's arguments as rollout.yml passes them for the local inventory, with a
    one-step plan at `percent` that outlasts any trial. Validated against the task's spec."""
    inventory = local_vars()
    info = sandbox.info
    params = {
        "operation": "ramp",
        "service": info["service"],
        "namespace": info["namespace"],
        "environment": inventory["mirror_environment"],
        "driver": inventory["mirror_ramp_driver"],
        "nginx": info["nginx"],
        "workloads": {"primary": info["primary"]["workload"], "mirror": [info["candidate"]["workload"]]},
        "steps": [{"percent": percent, "hold": "1h"}],
        "gates": resolve(inventory["mirror_ramp_gates"], inventory),
        "min_requests": inventory["mirror_ramp_min_requests"],
        "window": f"{window_s:g}s",
        "prometheus": {"url": info["prometheus_url"], "timeout": "5s", "retries": 1},
        "mode": "watch",
        "poll_interval": f"{poll_s:g}s",
        "deadline": f"{TRIAL_TIMEOUT_S:g}s",
        "inconclusive_budget": inventory["mirror_ramp_inconclusive_budget"],
        "inconclusive_action": inventory["mirror_ramp_inconclusive_action"],
    }
    validated = ArgumentSpecValidator(ARGUMENT_SPEC).validate(params)
    # error_messages, not errors: the errors object is truthy even when empty (ansible-core 2.19).
    if validated.error_messages:
        raise SystemExit(f"mirror_ramp arguments: {validated.error_messages}")
    return validated.validated_parameters


def fresh_ramp(sandbox: Sandbox, percent: float) -> None:
    """Mirror at `percent` with a new ramp state at step 1 of the plan, started now."""
    state = RampState.initial().evolve(status="ramping", step_index=0, percent=percent, step_started_at=time.time())
    sandbox.set_percent(percent, state)


def wait_until_gates_pass(request: RampRequest, deadline_s: float) -> float:
    """Seconds until every gate passes over the window (the engine would hold, not trip)."""
    started = time.monotonic()
    prometheus = build_prometheus(request)
    config = request.config
    last: list[str] = []
    while time.monotonic() - started < deadline_s:
        gates = evaluate(config.gates, prometheus, config.query_context, config.window_seconds)
        last = [f"{g.name}={g.verdict}" for g in gates if g.verdict is not Verdict.PASS]
        if not last:
            return time.monotonic() - started
        time.sleep(0.25)
    raise RuntimeError(f"the gates did not all pass within {deadline_s:g}s: {', '.join(last)}")


def last_served(sandbox: Sandbox) -> tuple[int, str, float]:
    """(count, id of the last request, its timestamp) of what the candidate served under the load."""
    served = sandbox.served("candidate", LOAD_PREFIX, limit=1)
    last = served["recent"][-1] if served["recent"] else {"request_id": "", "path": "", "at": 0.0}
    return served["count"], f"{last['path']} {last['request_id']}", float(last["at"])


def watch_until_flat(sandbox: Sandbox, t0: float) -> tuple[float, float, int]:
    """(t1 observed, t1 stamped by the candidate, requests served after t0) once the candidate's
    served requests have not changed for FLAT_S; polled every POLL_SERVED_S."""
    deadline = time.monotonic() + TRIAL_TIMEOUT_S
    _, key, stamped = last_served(sandbox)
    observed, changed = time.time(), time.monotonic()  # wall clock to compare with t0; monotonic to wait
    while time.monotonic() - changed < FLAT_S:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the candidate still receives mirrored requests {TRIAL_TIMEOUT_S:g}s after t0")
        time.sleep(POLL_SERVED_S)
        _, now_key, now_stamped = last_served(sandbox)
        if now_key != key:
            key, stamped, observed, changed = now_key, now_stamped, time.time(), time.monotonic()
    served_after = sum(1 for e in sandbox.served("candidate", LOAD_PREFIX, limit=1000)["recent"] if e["at"] >= t0)
    return observed, stamped, served_after


def floor_of(
    failing: list[str], gate_kinds: dict[str, str], scrape_s: float, poll_s: float, alert_for_s: float
) -> float:
    """scrape + poll, + the alert's `for` when only the alert gate tripped."""
    only_alerts = bool(failing) and all(gate_kinds.get(name) == ALERT_GATE_KIND for name in failing)
    return scrape_s + poll_s + (alert_for_s if only_alerts else 0.0)


def run_trial(
    number: int, sandbox: Sandbox, request: RampRequest, timing: dict[str, float], ready_wait_s: float
) -> Trial | None:
    """One trial; None when a gate tripped before t0 (the trial is redone)."""
    engine = EngineRun(request)
    thread = engine.start()
    if not engine.first_pass.wait(15):
        raise RuntimeError("the ramp engine did not finish its first pass within 15s")
    time.sleep(random.uniform(0, timing["poll_s"]))
    if engine.result is not None or engine.error is not None:
        thread.join()
        log(f"trial {number}: the engine stopped before t0 ({_outcome(engine)}); redone")
        return None
    sandbox.control("candidate", error_ratio=1.0)
    t0 = time.time()
    t1, t1_stamped, failing_requests = watch_until_flat(sandbox, t0)
    thread.join(TRIAL_TIMEOUT_S)
    if engine.error is not None:
        raise RuntimeError(f"trial {number}: the ramp engine failed: {engine.error}") from engine.error
    result = engine.result or {}
    rollback = result.get("rollback") or {}
    if result.get("state") != "rolled_back" or not rollback:
        raise RuntimeError(f"trial {number}: no rollback: {_outcome(engine)}")
    if rollback["at"] < t0:
        log(f"trial {number}: {rollback['gate']} tripped before t0 ({rollback['reason']}); redone")
        return None
    kinds = {g["name"]: g["kind"] for g in result["gates"]}
    failing = [g["name"] for g in result["gates"] if g["verdict"] == "fail"]
    return Trial(
        trial=number,
        gate=rollback["gate"],
        failing=failing,
        floor_s=floor_of(failing, kinds, timing["scrape_s"], timing["poll_s"], timing["alert_for_s"]),
        reaction_s=round(t1 - t0, 3),
        reaction_served_s=round(t1_stamped - t0, 3),
        detect_s=round(rollback["at"] - t0, 3),
        removal_s=round(t1 - rollback["at"], 3),
        passes=result["passes"],
        failing_requests=failing_requests,
        ready_wait_s=round(ready_wait_s, 2),
    )


def _outcome(engine: EngineRun) -> str:
    if engine.error is not None:
        return f"error {engine.error}"
    return str((engine.result or {}).get("msg", "no result"))


def measure(args: argparse.Namespace) -> dict:
    inventory = local_vars()
    load = inventory["mirror_sandbox"]["load"]
    alert_for_s = parse_duration(resolve(inventory["mirror_alert_for"], inventory)["critical"])
    load_seconds = min(900.0, 60.0 + args.trials * 45.0)
    started = time.monotonic()
    trials: list[Trial] = []
    redone = 0
    with running_sandbox(
        load_seconds=load_seconds, rps=load["rps"], post_ratio=load["post_ratio"], render_rules=True
    ) as sandbox:
        scrape_s = parse_duration(sandbox.prometheus_config()["global"]["scrape_interval"])
        timing = {"scrape_s": scrape_s, "poll_s": args.poll, "alert_for_s": alert_for_s}
        request = RampRequest.from_arguments(
            ramp_arguments(sandbox, args.percent, args.window, args.poll), check_mode=False, diff=False
        )
        attempts = 0
        while len(trials) < args.trials:
            attempts += 1
            if attempts > args.trials + EXTRA_ATTEMPTS:
                raise RuntimeError(f"{redone} trials tripped before t0: too noisy to measure")
            sandbox.control("candidate")
            fresh_ramp(sandbox, args.percent)
            ready = wait_until_gates_pass(request, READY_TIMEOUT_S)
            trial = run_trial(len(trials) + 1, sandbox, request, timing, ready)
            if trial is None:
                redone += 1
                continue
            trials.append(trial)
            log(
                f"trial {trial.trial}: {trial.reaction_s:.2f}s ({trial.gate}; "
                f"detect {trial.detect_s:.2f}s, removal {trial.removal_s:.2f}s; gates ready after {ready:.1f}s)"
            )
        sandbox.control("candidate")
        prometheus_config = sandbox.prometheus_config()["global"]
    reactions = [t.reaction_s for t in trials]
    floors = [t.floor_s for t in trials]
    floor = statistics.median(floors)
    median = statistics.median(reactions)
    return {
        "benchmark": SECTION,
        "quick": args.quick,
        "setup": {
            "percent": args.percent,
            "window_s": args.window,
            "poll_interval_s": args.poll,
            "scrape_interval_s": scrape_s,
            "prometheus_global": prometheus_config,
            "alert_for_critical_s": alert_for_s,
            "load_rps": load["rps"],
            "load_post_ratio": load["post_ratio"],
            "gates": [g.name for g in (*request.config.gates.thresholds, *request.config.gates.comparisons)]
            + [g.name for g in request.config.gates.alerts],
            "min_requests": request.config.gates.min_requests,
        },
        "trials": [asdict(t) for t in trials],
        "redone_trials": redone,
        "summary": {
            "trials": len(trials),
            "median_s": round(median, 3),
            "max_s": round(max(reactions), 3),
            "min_s": round(min(reactions), 3),
            "floor_s": floor,
            "target_s": 2 * floor,
            "target_met": median <= 2 * floor,
            "median_detect_s": round(statistics.median(t.detect_s for t in trials), 3),
            "median_removal_s": round(statistics.median(t.removal_s for t in trials), 3),
            "gates": {name: sum(1 for t in trials if t.gate == name) for name in sorted({t.gate for t in trials})},
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def table(document: dict) -> str:
    header = (
        f"{'trial':>5}  {'gate (first failing)':<24} {'also failing':<44} {'floor s':>7} {'reaction s':>10} "
        f"{'detect s':>8} {'removal s':>9} {'500s served':>11}"
    )
    lines = [header, "-" * len(header)]
    for t in document["trials"]:
        others = ", ".join(name for name in t["failing"] if name != t["gate"]) or "-"
        lines.append(
            f"{t['trial']:>5}  {t['gate']:<24} {others:<44} {t['floor_s']:>7.2f} {t['reaction_s']:>10.2f} "
            f"{t['detect_s']:>8.2f} {t['removal_s']:>9.2f} {t['failing_requests']:>11}"
        )
    s = document["summary"]
    verdict = "met" if s["target_met"] else "MISSED"
    lines += [
        "",
        f"median {s['median_s']:.2f}s, max {s['max_s']:.2f}s over {s['trials']} trials; "
        f"floor {s['floor_s']:.2f}s (scrape {document['setup']['scrape_interval_s']:g}s + poll "
        f"{document['setup']['poll_interval_s']:g}s); target median <= 2x floor = {s['target_s']:.2f}s: {verdict}",
    ]
    return "\n".join(lines)


def doc_section(document: dict) -> str:
    s, setup = document["summary"], document["setup"]
    rows = [
        [
            t["trial"],
            t["gate"],
            ", ".join(name for name in t["failing"] if name != t["gate"]) or "-",
            f"{t['floor_s']:.2f}",
            f"{t['reaction_s']:.2f}",
            f"{t['detect_s']:.2f}",
            f"{t['removal_s']:.2f}",
            t["failing_requests"],
        ]
        for t in document["trials"]
    ]
    verdict = "**met**" if s["target_met"] else "**missed**"
    return "\n".join(
        [
            results.run_line(document),
            "",
            f"Setup: mirror at {setup['percent']:g}% of {setup['load_rps']:g} requests/s "
            f"({setup['load_post_ratio']:.0%} of them POSTs, not mirrored); window {setup['window_s']:g}s, "
            f"poll interval {setup['poll_interval_s']:g}s, Prometheus scrape and rule evaluation every "
            f"{setup['scrape_interval_s']:g}s; the gates of inventories/local ({', '.join(setup['gates'])}; "
            f"min_requests {setup['min_requests']}). {document['redone_trials']} trial(s) redone because a gate "
            "tripped before t0.",
            "",
            results.markdown_table(
                [
                    "trial",
                    "gate (first failing)",
                    "also failing",
                    "floor s",
                    "reaction s",
                    "detect s",
                    "removal s",
                    "500s served",
                ],
                rows,
            ),
            "",
            f"**Median {s['median_s']:.2f} s, max {s['max_s']:.2f} s** over {s['trials']} trials; floor "
            f"{s['floor_s']:.2f} s (scrape + poll); target median <= 2x floor = {s['target_s']:.2f} s: {verdict}. "
            f"Median detection (t0 to the deciding pass) {s['median_detect_s']:.2f} s, median removal (that "
            f"pass to the last mirrored request) {s['median_removal_s']:.2f} s. 500s served: mirrored requests "
            "the candidate answered after t0, before the mirror was gone.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=10, help="trials to measure (at least 10 for the doc)")
    parser.add_argument("--percent", type=float, default=20.0, help="mirror percent during a trial")
    parser.add_argument("--window", type=float, default=5.0, help="the gates' window, seconds")
    parser.add_argument("--poll", type=float, default=1.0, help="the engine's poll interval, seconds")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 trials, written to reaction.quick.json")
    results.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    if args.quick:
        args.trials = 2
    if args.trials < 1 or not 0 < args.percent <= 100 or args.window < 2 or args.poll <= 0:
        parser.error("--trials >= 1, 0 < --percent <= 100, --window >= 2, --poll > 0")
    out = results.output_path(args, SECTION)
    if args.write_doc and (args.quick or args.trials < 10):
        parser.error("--write-doc needs a full run (at least 10 trials, not --quick)")

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
