"""What the sandbox's copy costs the primary, by how it is handed over.

A diagnostic for benchmark 2 (dataplane.py), not one of `make bench`'s three. nginx's mirror
finishes a request, and reads the next one on a kept-alive client connection, only once its
mirror subrequest has ended: with a relay, the proxy waits for the relay's answer to every copy.
Envoy's shadowing does not wait. The sandbox paid that wait for every copy until copies without
a body became log lines (nginx.conf.j2); copies with a body still pay it. dataplane.py's p99
cannot resolve it on a 2-core machine (its A/A control spans +-30%); the p50 can. This script
measures the primary's p50 and mean, mirroring 100% to a healthy candidate against mirroring
off, for four ways of handing the copy over:

  tcp         a new loopback TCP connection to the relay for every copy (how every copy went
              before the log line; how copies with a body still go)
  unix        the same relay over a Unix socket (no TCP handshake, no TIME_WAIT)
  keepalive   the floor: connections to the relay kept alive, and a relay that answers at once
              and forwards nothing. Not a design: a relay that forwards (nginx's mirror, and
              njs's ngx.fetch too) holds the proxy's connection until its forward ends, so a
              kept-alive connection would stall behind a slow candidate. It shows what a relay
              that answers at once and never holds a connection could reach.
  log         as shipped for GET and HEAD: no hand-off to wait for, the copy leaves as an access-log
              line over UDP (syslog), here to a sink that reads it and forwards nothing (as
              shipped, to mirror_forwarder). Fire-and-forget, as Envoy's shadowing is: nginx
              sends the line after the answer, in its log phase, and waits for nothing.

Each round runs every variant (the proxy's nginx.conf rewritten and reloaded), each with one
cell mirroring off and one mirroring 100%, --cell-seconds each, at --rate requests/s; the cost of
a variant is its p50 and mean with mirroring 100% minus with mirroring off, pooled over the
rounds, with a 95% bootstrap interval over rounds. The placement of dataplane.py: the relay, the
log lines' sink and the candidate on a core of their own.

Run from the repository root with the venv:

    python scripts/bench/relay_hop.py                # 8 rounds, about 4 minutes
    python scripts/bench/relay_hop.py --write-doc    # and rewrite its section of docs/benchmarks.md

Prints a table, writes build/bench/relay_hop.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # python scripts/bench/relay_hop.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import contextlib
import os
import signal
import socket
import stat
import subprocess
import time

import numpy as np

from scripts.bench import results
from scripts.bench.dataplane import CONCURRENCY, paced_cell, pin_cores
from scripts.bench.sandbox import Sandbox, free_ports, log, running_sandbox

SCRIPT = "scripts/bench/relay_hop.py"
SECTION = "relay_hop"
VARIANTS = ("tcp", "unix", "keepalive", "log")
RESAMPLES = 2000
SEED = 7
CONFIDENCE = 0.95


def _config(sandbox: Sandbox, name: str) -> Path:
    found = sorted(path for path in sandbox.build.glob(f"**/{name}") if path.is_file())
    if len(found) != 1:
        raise SystemExit(f"expected one {name} under {sandbox.build}, found {len(found)}")
    return found[0]


def _replace_once(text: str, old: str, new: str, where: Path) -> str:
    if text.count(old) != 1:
        raise SystemExit(f"{where}: expected {old!r} once; the template changed, update {SCRIPT}")
    return text.replace(old, new)


def _reload(pid: int) -> None:
    os.kill(pid, signal.SIGHUP)
    time.sleep(1.0)  # the old workers wind down


def _reachable(path: Path, stop: Path) -> None:
    """nginx's workers run as nobody under root: every directory from the socket up to `stop`
    (the sandbox's own tmp build dir and below) must be searchable to them."""
    for directory in [path.parent, *path.parent.parents]:
        os.chmod(directory, os.stat(directory).st_mode | stat.S_IXGRP | stat.S_IXOTH)
        if directory == stop:
            return


def prepare(sandbox: Sandbox, sink_port: int) -> dict[str, str]:
    """The relay gains a Unix socket and a floor server; returns the proxy's nginx.conf per variant."""
    relay_conf, proxy_conf = _config(sandbox, "relay.conf"), _config(sandbox, "nginx.conf")
    socket_path = relay_conf.parent / "relay.sock"
    floor_port = free_ports(1)[0]
    listen = f"listen 127.0.0.1:{sandbox.ports['relay']};"
    relay = _replace_once(relay_conf.read_text(), listen, f"{listen}\n        listen unix:{socket_path};", relay_conf)
    # The floor: answers at once, forwards nothing, never holds a connection.
    floor = f"    server {{\n        listen 127.0.0.1:{floor_port};\n        location / {{ return 204; }}\n    }}\n}}\n"
    relay = relay.rstrip().removesuffix("}") + floor
    relay_conf.write_text(relay)
    _reload(sandbox.pids["relay"])
    _reachable(socket_path, sandbox.build.parent)

    shipped = proxy_conf.read_text()
    # As shipped, GET copies leave as log lines to the forwarder on the relay's port number; here
    # to the sink, which counts them and forwards nothing.
    log_line = f"access_log syslog:server=127.0.0.1:{sandbox.ports['relay']},"
    as_log_line = _replace_once(shipped, log_line, f"access_log syslog:server=127.0.0.1:{sink_port},", proxy_conf)
    # Through the relay, as every copy went before the log line: no line, the subrequest for all.
    tcp = _replace_once(shipped, "if ($mirror_via_relay = 0) {", "if ($mirror_send = 0) {", proxy_conf)
    tcp = "\n".join(line for line in tcp.split("\n") if log_line not in line)
    upstream = f"server 127.0.0.1:{sandbox.ports['relay']};\n    }}"
    handoff = "proxy_pass http://sandbox_mirror_relay$request_uri;"
    kept_alive = f'proxy_http_version 1.1;\n            proxy_set_header Connection "";\n            {handoff}'
    return {
        "tcp": tcp,
        "unix": _replace_once(tcp, upstream, f"server unix:{socket_path};\n    }}", proxy_conf),
        "keepalive": _replace_once(
            _replace_once(tcp, upstream, f"server 127.0.0.1:{floor_port};\n        keepalive 32;\n    }}", proxy_conf),
            handoff,
            kept_alive,
            proxy_conf,
        ),
        "log": as_log_line,
    }


# Counts the lines it reads, prints the count when terminated.
SINK = """
import signal, socket, sys
received = 0
def stop(*_):
    print(received, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    s.recv(65536)
    received += 1
"""


@contextlib.contextmanager
def udp_sink(core: set[int], received: dict[str, int]):
    """A process that reads the log lines and throws them away, on the candidate's core; ended by
    PID. `received["lines"]`: how many it read, once it has ended."""
    port = free_udp_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        os.sched_setaffinity(sink.pid, core)
        yield port
    finally:
        sink.terminate()
        out, _ = sink.communicate(timeout=10)
        received["lines"] = int(out.strip() or 0)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cell(sandbox: Sandbox, path: str, percent: int, rate: float, seconds: float) -> tuple[np.ndarray, int]:
    summary = paced_cell(sandbox, path, percent, rate, seconds)
    return np.array(summary.latencies_ms), summary.sent - summary.statuses.get(200, 0)


def cost_interval(off: list[np.ndarray], on: list[np.ndarray], statistic) -> tuple[float, float]:
    rng = np.random.default_rng(SEED)
    rounds = len(off)
    draws = []
    for _ in range(RESAMPLES):
        picked = rng.integers(0, rounds, rounds)
        draws.append(
            statistic(np.concatenate([on[i] for i in picked])) - statistic(np.concatenate([off[i] for i in picked]))
        )
    tail = (1 - CONFIDENCE) / 2
    return round(float(np.quantile(draws, tail)), 4), round(float(np.quantile(draws, 1 - tail)), 4)


def measure(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    all_cores = os.sched_getaffinity(0)
    cells: dict[str, dict[str, list[np.ndarray]]] = {v: {"off": [], "on": []} for v in VARIANTS}
    errors = dict.fromkeys(VARIANTS, 0)
    received: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(running_sandbox(load_seconds=0))
        cores = pin_cores(sandbox)
        log(f"cores: {cores or 'every process on every core'}")
        proxy_conf = _config(sandbox, "nginx.conf")
        shipped = proxy_conf.read_text()
        sink_port = stack.enter_context(udp_sink({max(all_cores)}, received))
        variants = prepare(sandbox, sink_port)
        sandbox.control("candidate")
        try:
            for index in range(args.rounds):
                order = VARIANTS[index % len(VARIANTS) :] + VARIANTS[: index % len(VARIANTS)]
                for variant in order:
                    proxy_conf.write_text(variants[variant])
                    _reload(sandbox.pids["nginx"])
                    for side, percent in (("off", 0), ("on", 100))[:: 1 if index % 2 == 0 else -1]:
                        values, failed = cell(
                            sandbox, f"{variant}-{side}/r{index:02d}", percent, args.rate, args.cell_seconds
                        )
                        cells[variant][side].append(values)
                        errors[variant] += failed
                log(
                    f"round {index + 1}/{args.rounds}: p50 off/100% "
                    + ", ".join(
                        f"{v} {np.median(cells[v]['off'][-1]):.3f}/{np.median(cells[v]['on'][-1]):.3f}"
                        for v in VARIANTS
                    )
                    + " ms"
                )
        finally:
            proxy_conf.write_text(shipped)
            _reload(sandbox.pids["nginx"])
            sandbox.set_percent(0)
        forwarded = {v: sandbox.served("candidate", f"/{v}-on/")["count"] for v in VARIANTS}
    os.sched_setaffinity(0, all_cores)
    forwarded["log"] = received["lines"]  # delivered to the sink as log lines, not forwarded
    rows = []
    for variant in VARIANTS:
        off, on = cells[variant]["off"], cells[variant]["on"]
        pooled_off, pooled_on = np.concatenate(off), np.concatenate(on)
        rows.append(
            {
                "variant": variant,
                "requests": int(len(pooled_off) + len(pooled_on)),
                "errors": errors[variant],
                "off_p50_ms": round(float(np.median(pooled_off)), 4),
                "on_p50_ms": round(float(np.median(pooled_on)), 4),
                "p50_cost_ms": round(float(np.median(pooled_on) - np.median(pooled_off)), 4),
                "p50_cost_interval": cost_interval(off, on, np.median),
                "off_mean_ms": round(float(pooled_off.mean()), 4),
                "on_mean_ms": round(float(pooled_on.mean()), 4),
                "mean_cost_ms": round(float(pooled_on.mean() - pooled_off.mean()), 4),
                "mean_cost_interval": cost_interval(off, on, np.mean),
                "forwarded": forwarded[variant],
            }
        )
    return {
        "benchmark": SECTION,
        "quick": False,
        "setup": {
            "rounds": args.rounds,
            "cell_seconds": args.cell_seconds,
            "rate_rps": args.rate,
            "concurrency": CONCURRENCY,
            "cores": cores,
            "bootstrap": {"resamples": RESAMPLES, "confidence": CONFIDENCE, "seed": SEED},
        },
        "variants": rows,
        "seconds": round(time.monotonic() - started, 1),
    }


HEADER = ["hand-off", "p50 off", "p50 100%", "p50 cost", "95% interval", "mean cost", "95% interval", "errors"]
# delivered: copies the candidate served (tcp, unix; keepalive forwards none), lines the sink read (log)
HEADER += ["copies delivered"]


def _ms(value: float) -> str:
    return f"{value * 1000:+.0f} µs"


def rows(document: dict) -> list[list[str]]:
    return [
        [
            row["variant"],
            f"{row['off_p50_ms']:.3f} ms",
            f"{row['on_p50_ms']:.3f} ms",
            _ms(row["p50_cost_ms"]),
            f"{_ms(row['p50_cost_interval'][0])} to {_ms(row['p50_cost_interval'][1])}",
            _ms(row["mean_cost_ms"]),
            f"{_ms(row['mean_cost_interval'][0])} to {_ms(row['mean_cost_interval'][1])}",
            str(row["errors"]),
            str(row["forwarded"]),
        ]
        for row in document["variants"]
    ]


def setup_line(document: dict) -> str:
    setup = document["setup"]
    return (
        f"{setup['rounds']} rounds; per round and hand-off one cell mirroring off and one mirroring 100% to a "
        f"healthy candidate, {setup['cell_seconds']:g} s each at {setup['rate_rps']:g} requests/s, GET, "
        f"{setup['concurrency']} client connections; cores as in dataplane.py: {setup['cores']}"
    )


def table(document: dict) -> str:
    lines = results.text_table(HEADER, rows(document)).split("\n")
    return "\n".join([setup_line(document), "", *lines])


def doc_section(document: dict) -> str:
    return "\n".join(
        [
            results.run_line(document),
            "",
            f"Setup: {setup_line(document)}. Cost: with mirroring 100% minus with mirroring off, each pooled over "
            f"the rounds; {CONFIDENCE:.0%} interval from a bootstrap over rounds.",
            "",
            results.markdown_table(HEADER, rows(document)),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds; each runs every hand-off once")
    parser.add_argument("--cell-seconds", type=float, default=2.0, help="load per cell, seconds")
    parser.add_argument("--rate", type=float, default=600.0, help="requests/s in every cell")
    results.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    args.quick = False
    if not 2 <= args.rounds <= 100 or not 0.5 <= args.cell_seconds <= 60 or not 10 <= args.rate <= 2000:
        parser.error(
            f"--rounds {args.rounds}, --cell-seconds {args.cell_seconds}, --rate {args.rate}: "
            "allowed 2..100, 0.5..60 and 10..2000"
        )
    return results.finish(
        args,
        argv,
        script=SCRIPT,
        section=SECTION,
        out=results.output_path(args, SECTION),
        measure=measure,
        table=table,
        doc_section=doc_section,
    )


if __name__ == "__main__":
    sys.exit(main())
