"""Benchmark 1, reaction time: from the candidate starting to fail to mirrored requests no longer reaching it.

The data plane of mirrorsandbox.harness on Envoy (no Ansible for it): the local inventory rendered
first (playbooks/render.yml into a tmp build dir: the alert rules, the VirtualService and the
DestinationRule), then the two sandbox backends, Envoy configured by `sidecar_config` from that
VirtualService and DestinationRule, Prometheus with the rules, and the bounded load generator at
the inventory's mirror_sandbox.load rate, all on 127.0.0.1. Then N trials:

  1. mirror at --percent (20) through the envoy driver, with a fresh ramp state "ramping" at
     a one-step plan whose hold never ends in a trial; the candidate healthy;
  2. wait until every gate of inventories/local (ramp.yml, thresholds.yml) passes over the
     window: Prometheus has a healthy window and no critical alert in it;
  3. the ramp engine in watch mode with the envoy driver, in this process
     (mirrorramp.adapter.execute, what the mirror_ramp task runs), in a thread; after its first
     pass, a random 0..poll_interval wait, so that t0 falls anywhere in the scrape and poll cycles;
  4. t0: POST the candidate's /control {"error_ratio": 1.0} (t0 = when it answered);
  5. once the engine has ended (it rolled back), the candidate's /requests is polled every 50 ms
     until its served requests have stayed unchanged for 2 s (not during the engine's passes:
     the polling would share the engine's interpreter and slow the pass it measures): the last of them, as the candidate stamped it, is the last copy; Envoy's
     config_dump says when it began to run the route without mirror (`last_updated`). The end,
     t1, is the later of the two: the mirror gone from Envoy and its last copy arrived.
     Reaction = t1 - t0; removal = t1 - the start of the engine pass that decided the rollback.
     Removal splits into: to the write (the pass's gate queries and decision, up to the route
     file's modification time: the driver renames a file written just before), itself split at
     the end of the pass's last gate evaluation (gates: the start of the pass to there; driver:
     from there to the write, the decision and the envoy driver's reads before it writes), the
     write to Envoy running it, and the last copy after that (negative when the last copy came before:
     at 20% of 90 GETs/s a copy comes every 55 ms on average, so the last copy alone says little
     about the moment the mirror went).

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
Target: median reaction <= 2x floor; median removal <= REMOVAL_TARGET_S (20 ms).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # python scripts/bench/reaction.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import math
import random
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from unittest import mock

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from mirrorramp import gates as gate_module
from mirrorramp import runner as runner_module
from mirrorramp.adapter import execute
from mirrorramp.arguments import ARGUMENT_SPEC, RampRequest
from mirrorramp.durations import parse_duration
from mirrorramp.gates import evaluate
from mirrorramp.model import Verdict
from mirrorramp.state import RampState
from mirrorramp.wiring import build_prometheus
from mirrorsandbox.envoy_process import admin_get
from mirrorsandbox.harness import Harness, local_inventory_vars, local_resources, rendered_resources, running_harness
from scripts.bench import results
from scripts.bench.results import REPO_ROOT, VENV_BIN, ansible_env, log, resolve

SCRIPT = "scripts/bench/reaction.py"
SECTION = "reaction"
LOAD_PREFIX = "/load/"  # where the sandbox's load generator sends (mirror_sandbox role)
POLL_SERVED_S = 0.05
FLAT_S = 2.0
TRIAL_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0
EXTRA_ATTEMPTS = 3  # trials redone when a gate trips before t0 (counted and reported)
ALERT_GATE_KIND = "alert"
REMOVAL_TARGET_S = 0.020  # issue 18: the deciding pass to the last mirrored request, median
RENDER_TIMEOUT_S = 300.0


@dataclass
class Trial:
    trial: int
    gate: str  # the gate the rollback record names (the first failing one)
    failing: list[str]  # every gate that failed in the deciding pass
    floor_s: float
    reaction_s: float  # t1 - t0; t1: the later of Envoy running the route without mirror and the last copy
    detect_s: float  # the rollback decision (start of the deciding pass) - t0
    removal_s: float  # t1 - the rollback decision
    to_write_s: float  # the route file's write - the rollback decision: the pass's queries and decision
    gates_s: float  # the end of the deciding pass's last gate evaluation - the rollback decision
    driver_to_write_s: float  # the route file's write - the end of that evaluation: decision, driver reads
    write_to_live_s: float  # Envoy running the route without mirror (config_dump last_updated) - the write
    last_copy_after_live_s: float  # the candidate's stamp on the last copy - Envoy running the new route
    passes: int  # engine passes in the trial
    failing_requests: int  # requests the candidate served after t0
    ready_wait_s: float  # how long the gates took to pass again before this trial
    gate_check_s: float  # one check of every gate (their Prometheus queries) just before this trial
    gate_check_one_by_one_s: float  # the same check right after, its queries sent one after another


@dataclass
class EngineRun:
    """The ramp engine in watch mode in a thread (what the mirror_ramp task runs, without Ansible)."""

    request: RampRequest
    result: dict | None = None
    error: BaseException | None = None
    first_pass: threading.Event = field(default_factory=threading.Event)
    # When each gate evaluation of the run ended (time.time()): the deciding pass's last one
    # splits the pass's time to the write into the gates' and the driver's.
    evaluations_ended: list[float] = field(default_factory=list)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="ramp-engine", daemon=True)
        thread.start()
        return thread

    def _progress(self, message: str) -> None:  # watch mode reports every pass
        self.first_pass.set()

    def _timed_evaluate(self, *args, **kwargs):
        try:
            return gate_module.evaluate(*args, **kwargs)
        finally:
            self.evaluations_ended.append(time.time())

    def _run(self) -> None:
        try:
            # Patched where the runner looks it up: one engine thread per trial, none at once.
            with mock.patch.object(runner_module, "evaluate", self._timed_evaluate):
                self.result = execute(self.request, progress=self._progress)
        except BaseException as e:  # reported by the trial, never lost in the thread
            self.error = e
        finally:
            self.first_pass.set()


def ramp_arguments(harness: Harness, percent: float, window_s: float, poll_s: float) -> dict:
    """The mirror_ramp task's arguments as rollout.yml passes them for the local inventory, with the
    envoy driver on the harness's Envoy and a one-step plan at `percent` that outlasts any trial.
    Validated against the task's spec."""
    inventory = local_inventory_vars()
    resources = harness.resources
    candidates = [
        s["name"] for s in resources.destination_rule["spec"]["subsets"] if s["name"] != resources.primary_subset
    ]
    assert harness.prometheus is not None
    params = {
        "operation": "ramp",
        "service": resources.service,
        "namespace": resources.namespace,
        "environment": inventory["mirror_environment"],
        "driver": "envoy",
        "envoy": harness.envoy_options(),
        "workloads": {
            "primary": resources.workloads[resources.primary_subset],
            "mirror": [resources.workloads[subset] for subset in candidates],
        },
        "steps": [{"percent": percent, "hold": "1h"}],
        "gates": resolve(inventory["mirror_ramp_gates"], inventory),
        "min_requests": inventory["mirror_ramp_min_requests"],
        "window": f"{window_s:g}s",
        "prometheus": {"url": harness.prometheus.url, "timeout": "5s", "retries": 1},
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


def render_local(build_dir: Path) -> float:
    """playbooks/render.yml for inventories/local into `build_dir` (the alert rules Prometheus
    loads, the VirtualService and DestinationRule Envoy is configured from); its seconds."""
    started = time.monotonic()
    command = [
        str(VENV_BIN / "ansible-playbook"),
        "playbooks/render.yml",
        "-i",
        "inventories/local",
        "-e",
        json.dumps({"mirror_build_dir": str(build_dir)}),
    ]
    proc = subprocess.run(
        command, cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"playbooks/render.yml failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return time.monotonic() - started


def fresh_ramp(harness: Harness, percent: float) -> None:
    """Mirror at `percent` with a new ramp state at step 1 of the plan, started now."""
    state = RampState.initial().evolve(status="ramping", step_index=0, percent=percent, step_started_at=time.time())
    harness.set_percent(percent, state)


def one_after_another(calls):
    """prometheus.concurrently as it was before a pass sent its queries at once."""
    return [call() for call in calls]


def wait_until_gates_pass(request: RampRequest, deadline_s: float) -> tuple[float, float, float]:
    """(seconds until every gate passes over the window (the engine would hold, not trip), seconds
    a check right after the passing one takes: every gate's queries, as the engine's pass makes
    them, and seconds the same check takes next with its queries one after another: the two side
    by side, both on kept-alive connections, as in the engine's passes after its first)."""
    started = time.monotonic()
    prometheus = build_prometheus(request)
    config = request.config
    last: list[str] = []
    while time.monotonic() - started < deadline_s:
        checked = time.monotonic()
        gates = evaluate(config.gates, prometheus, config.query_context, config.window_seconds)
        last = [f"{g.name}={g.verdict}" for g in gates if g.verdict is not Verdict.PASS]
        if not last:
            ready = time.monotonic() - started
            # Timed again, so that both ways run on the connections the first check kept alive.
            checked = time.monotonic()
            evaluate(config.gates, prometheus, config.query_context, config.window_seconds)
            at_once = time.monotonic() - checked
            with mock.patch.object(gate_module, "concurrently", one_after_another):
                sequential_started = time.monotonic()
                evaluate(config.gates, prometheus, config.query_context, config.window_seconds)
                one_by_one = time.monotonic() - sequential_started
            return ready, at_once, one_by_one
        time.sleep(0.25)
    raise RuntimeError(f"the gates did not all pass within {deadline_s:g}s: {', '.join(last)}")


def last_served(harness: Harness) -> tuple[int, str, float]:
    """(count, id of the last request, its timestamp) of what the candidate served under the load."""
    served = harness.served("candidate", LOAD_PREFIX, limit=1)
    last = served["recent"][-1] if served["recent"] else {"request_id": "", "path": "", "at": 0.0}
    return served["count"], f"{last['path']} {last['request_id']}", float(last["at"])


def watch_until_flat(harness: Harness, t0: float) -> tuple[float, int]:
    """(t1: the candidate's stamp on its last mirrored request, requests served after t0) once the
    candidate's served requests have not changed for FLAT_S; polled every POLL_SERVED_S."""
    deadline = time.monotonic() + TRIAL_TIMEOUT_S
    _, key, stamped = last_served(harness)
    changed = time.monotonic()
    while time.monotonic() - changed < FLAT_S:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the candidate still receives mirrored requests {TRIAL_TIMEOUT_S:g}s after t0")
        time.sleep(POLL_SERVED_S)
        _, now_key, now_stamped = last_served(harness)
        if now_key != key:
            key, stamped, changed = now_key, now_stamped, time.monotonic()
    served_after = sum(1 for e in harness.served("candidate", LOAD_PREFIX, limit=1000)["recent"] if e["at"] >= t0)
    return stamped, served_after


def route_live_since(harness: Harness) -> float:
    """When Envoy began to run its current route configuration (config_dump `last_updated`, ms)."""
    assert harness.envoy is not None
    dump = json.loads(admin_get(harness.envoy.admin_url, "/config_dump?resource=dynamic_route_configs"))
    (stamp,) = [
        entry["last_updated"] for entry in dump["configs"] if entry["route_config"]["name"] == harness.route_config_name
    ]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def floor_of(
    failing: list[str], gate_kinds: dict[str, str], scrape_s: float, poll_s: float, alert_for_s: float
) -> float:
    """scrape + poll, + the alert's `for` when only the alert gate tripped."""
    only_alerts = bool(failing) and all(gate_kinds.get(name) == ALERT_GATE_KIND for name in failing)
    return scrape_s + poll_s + (alert_for_s if only_alerts else 0.0)


def run_trial(
    number: int,
    harness: Harness,
    request: RampRequest,
    timing: dict[str, float],
    ready_wait_s: float,
    gate_check_s: float,
    gate_check_one_by_one_s: float,
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
    harness.control("candidate", error_ratio=1.0)
    t0 = time.time()
    thread.join(TRIAL_TIMEOUT_S)
    if thread.is_alive():
        raise RuntimeError(f"trial {number}: the ramp engine did not roll back within {TRIAL_TIMEOUT_S:g}s of t0")
    last_copy, failing_requests = watch_until_flat(harness, t0)
    if engine.error is not None:
        raise RuntimeError(f"trial {number}: the ramp engine failed: {engine.error}") from engine.error
    result = engine.result or {}
    rollback = result.get("rollback") or {}
    if result.get("state") != "rolled_back" or not rollback:
        raise RuntimeError(f"trial {number}: no rollback: {_outcome(engine)}")
    if rollback["at"] < t0:
        log(f"trial {number}: {rollback['gate']} tripped before t0 ({rollback['reason']}); redone")
        return None
    written = harness.route_path.stat().st_mtime
    live = route_live_since(harness)
    gates_ended = max(at for at in engine.evaluations_ended if at <= written)
    t1 = max(live, last_copy)
    kinds = {g["name"]: g["kind"] for g in result["gates"]}
    failing = [g["name"] for g in result["gates"] if g["verdict"] == "fail"]
    return Trial(
        trial=number,
        gate=rollback["gate"],
        failing=failing,
        floor_s=floor_of(failing, kinds, timing["scrape_s"], timing["poll_s"], timing["alert_for_s"]),
        reaction_s=round(t1 - t0, 4),
        detect_s=round(rollback["at"] - t0, 4),
        removal_s=round(t1 - rollback["at"], 4),
        # The driver writes a temp file and renames it: the route file's mtime is the write.
        to_write_s=round(written - rollback["at"], 4),
        gates_s=round(gates_ended - rollback["at"], 4),
        driver_to_write_s=round(written - gates_ended, 4),
        write_to_live_s=round(live - written, 4),
        last_copy_after_live_s=round(last_copy - live, 4),
        passes=result["passes"],
        failing_requests=failing_requests,
        ready_wait_s=round(ready_wait_s, 2),
        gate_check_s=round(gate_check_s, 4),
        gate_check_one_by_one_s=round(gate_check_one_by_one_s, 4),
    )


def _outcome(engine: EngineRun) -> str:
    if engine.error is not None:
        return f"error {engine.error}"
    return str((engine.result or {}).get("msg", "no result"))


def measure(args: argparse.Namespace) -> dict:
    inventory = local_inventory_vars()
    load = inventory["mirror_sandbox"]["load"]
    alert_for_s = parse_duration(resolve(inventory["mirror_alert_for"], inventory)["critical"])
    load_seconds = min(900.0, 60.0 + args.trials * 45.0)
    started = time.monotonic()
    trials: list[Trial] = []
    redone = 0
    with results.stopped_on_sigterm(), tempfile.TemporaryDirectory(prefix="bench-reaction-") as tmp:
        build = Path(tmp) / "build"
        log(f"rendered inventories/local in {render_local(build):.1f}s")
        local = local_resources()
        resources = rendered_resources(build, local.service, local.namespace, local.workloads)
        rules = build / "prometheus" / "mirror-rules.yml"
        with running_harness(Path(tmp) / "harness", resources, prometheus=True, rules=rules) as harness:
            harness.start_load(load_seconds, load["rps"], load["post_ratio"], prefix=LOAD_PREFIX.strip("/"))
            log(f"data plane started: Envoy at {harness.proxy_url}, processes {harness.pids()}")
            assert harness.prometheus is not None
            scrape_s = harness.prometheus.scrape_interval_s
            timing = {"scrape_s": scrape_s, "poll_s": args.poll, "alert_for_s": alert_for_s}
            request = RampRequest.from_arguments(
                ramp_arguments(harness, args.percent, args.window, args.poll), check_mode=False, diff=False
            )
            attempts = 0
            while len(trials) < args.trials:
                attempts += 1
                if attempts > args.trials + EXTRA_ATTEMPTS:
                    raise RuntimeError(f"{redone} trials tripped before t0: too noisy to measure")
                harness.control("candidate")
                fresh_ramp(harness, args.percent)
                ready, gate_check, one_by_one = wait_until_gates_pass(request, READY_TIMEOUT_S)
                trial = run_trial(len(trials) + 1, harness, request, timing, ready, gate_check, one_by_one)
                if trial is None:
                    redone += 1
                    continue
                trials.append(trial)
                log(
                    f"trial {trial.trial}: {trial.reaction_s:.2f}s ({trial.gate}; detect {trial.detect_s:.2f}s, "
                    f"removal {trial.removal_s * 1000:.1f} ms: {trial.to_write_s * 1000:.1f} to the write, "
                    f"{trial.write_to_live_s * 1000:.1f} to Envoy running it, last copy "
                    f"{trial.last_copy_after_live_s * 1000:+.1f} after; gates ready after {ready:.1f}s)"
                )
            harness.control("candidate")
    reactions = [t.reaction_s for t in trials]
    floors = [t.floor_s for t in trials]
    floor = statistics.median(floors)
    median = statistics.median(reactions)
    median_removal = statistics.median(t.removal_s for t in trials)
    return {
        "benchmark": SECTION,
        "quick": args.quick,
        "setup": {
            "percent": args.percent,
            "window_s": args.window,
            "poll_interval_s": args.poll,
            "scrape_interval_s": scrape_s,
            "alert_for_critical_s": alert_for_s,
            "load_rps": load["rps"],
            "load_post_ratio": load["post_ratio"],
            "gates": [g.name for g in (*request.config.gates.thresholds, *request.config.gates.comparisons)]
            + [g.name for g in request.config.gates.alerts],
            "min_requests": request.config.gates.min_requests,
            "destination_rule_traffic_policy": resources.destination_rule["spec"].get("trafficPolicy", {}),
            "destination_rule_subset_traffic_policies": resources.subset_traffic_policies,
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
            "median_removal_s": round(median_removal, 4),
            "max_removal_s": round(max(t.removal_s for t in trials), 4),
            "median_to_write_s": round(statistics.median(t.to_write_s for t in trials), 4),
            "median_gates_s": round(statistics.median(t.gates_s for t in trials), 4),
            "median_driver_to_write_s": round(statistics.median(t.driver_to_write_s for t in trials), 4),
            "median_gate_check_s": round(statistics.median(t.gate_check_s for t in trials), 4),
            "median_gate_check_one_by_one_s": round(statistics.median(t.gate_check_one_by_one_s for t in trials), 4),
            "median_write_to_live_s": round(statistics.median(t.write_to_live_s for t in trials), 4),
            "max_last_copy_after_live_s": round(max(t.last_copy_after_live_s for t in trials), 4),
            "removal_target_s": REMOVAL_TARGET_S,
            "removal_target_met": median_removal <= REMOVAL_TARGET_S,
            "gates": {name: sum(1 for t in trials if t.gate == name) for name in sorted({t.gate for t in trials})},
        },
        "seconds": round(time.monotonic() - started, 1),
    }


HEADER = [
    "trial",
    "gate (first failing)",
    "also failing",
    "floor s",
    "reaction s",
    "detect s",
    "removal ms",
    "to the write ms",
    "gates ms",
    "driver ms",
    "write to live ms",
    "last copy after ms",
    "500s served",
]


def rows(document: dict) -> list[list[str]]:
    return [
        [
            str(t["trial"]),
            t["gate"],
            ", ".join(name for name in t["failing"] if name != t["gate"]) or "-",
            f"{t['floor_s']:.2f}",
            f"{t['reaction_s']:.2f}",
            f"{t['detect_s']:.2f}",
            f"{t['removal_s'] * 1000:.1f}",
            f"{t['to_write_s'] * 1000:.1f}",
            f"{t.get('gates_s', math.nan) * 1000:.1f}",
            f"{t.get('driver_to_write_s', math.nan) * 1000:.1f}",
            f"{t['write_to_live_s'] * 1000:.1f}",
            f"{t['last_copy_after_live_s'] * 1000:+.1f}",
            str(t["failing_requests"]),
        ]
        for t in document["trials"]
    ]


SUMMARY_HEADER = ["over the trials", "median", "max", "target (median)", "target"]


def summary_rows(document: dict) -> list[list[str]]:
    s = document["summary"]

    def ms(key: str, sign: str = "") -> str:  # runs from before a split was measured have none
        return f"{s.get(key, math.nan) * 1000:{sign}.1f}"

    return [
        ["floor s", f"{s['floor_s']:.2f}", "-", "-", "-"],
        [
            "reaction s",
            f"{s['median_s']:.2f}",
            f"{s['max_s']:.2f}",
            f"<= {s['target_s']:.2f}",
            results.met(s["target_met"]),
        ],
        ["detect s", f"{s['median_detect_s']:.2f}", "-", "-", "-"],
        [
            "removal ms",
            ms("median_removal_s"),
            ms("max_removal_s"),
            f"<= {s['removal_target_s'] * 1000:.0f}",
            results.met(s["removal_target_met"]),
        ],
        ["to the write ms", ms("median_to_write_s"), "-", "-", "-"],
        ["gates ms", ms("median_gates_s"), "-", "-", "-"],
        ["driver ms", ms("median_driver_to_write_s"), "-", "-", "-"],
        ["write to live ms", ms("median_write_to_live_s"), "-", "-", "-"],
        ["last copy after ms", "-", ms("max_last_copy_after_live_s", "+"), "-", "-"],
        ["a check of every gate ms", ms("median_gate_check_s"), "-", "-", "-"],
        ["the same, its queries one after another ms", ms("median_gate_check_one_by_one_s"), "-", "-", "-"],
    ]


DECIDED_HEADER = ["gate that decided", "trials"]


def decided_rows(document: dict) -> list[list[str]]:
    return [[name, str(count)] for name, count in document["summary"]["gates"].items()]


def table(document: dict) -> str:
    return "\n\n".join(
        [
            results.text_table(HEADER, rows(document)),
            results.text_table(SUMMARY_HEADER, summary_rows(document)),
            results.text_table(DECIDED_HEADER, decided_rows(document)),
        ]
    )


def doc_section(document: dict) -> str:
    setup = document["setup"]
    policy = json.dumps(setup["destination_rule_traffic_policy"], sort_keys=True)
    subset_policies = "".join(
        f", subset {subset}'s `{json.dumps(own, sort_keys=True)}`"
        for subset, own in setup.get("destination_rule_subset_traffic_policies", {}).items()
    )
    return "\n".join(
        [
            results.run_line(document),
            "",
            f"Setup: mirror at {setup['percent']:g}% of {setup['load_rps']:g} requests/s "
            f"({setup['load_post_ratio']:.0%} of them POSTs, not mirrored) through Envoy and the envoy driver; "
            f"window {setup['window_s']:g}s, poll interval {setup['poll_interval_s']:g}s, Prometheus scrape and "
            f"rule evaluation every {setup['scrape_interval_s']:g}s; the gates of inventories/local "
            f"({', '.join(setup['gates'])}; min_requests {setup['min_requests']}); the rendered DestinationRule's "
            f"trafficPolicy `{policy}`{subset_policies}. {document['redone_trials']} trial(s) redone because a gate "
            "tripped before t0.",
            "",
            results.markdown_table(HEADER, rows(document)),
            "",
            results.markdown_table(SUMMARY_HEADER, summary_rows(document)),
            "",
            results.markdown_table(DECIDED_HEADER, decided_rows(document)),
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
        interrupted="interrupted: the data plane was stopped, nothing written",
    )


if __name__ == "__main__":
    sys.exit(main())
