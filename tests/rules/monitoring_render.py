"""Render the role mirror_monitoring alone, once per environment and test session.

The render playbook needs every render role; this private playbook starts the list of rendered
files itself and includes only mirror_monitoring, so the monitoring tests do not wait for (or
break with) the other roles. It also writes the role's resolved inputs to a JSON file, so that the
tests derive their expectations from the inventory, not from constants.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible_run import PlaybookRun, recap_counts, run_playbook

ENVIRONMENTS = ("local", "dev", "staging", "prod")
RULES_FILE = Path("prometheus") / "mirror-rules.yml"

PLAYBOOK = """\
---
- name: Render only the monitoring and the alert rules
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Start the list of rendered files
      ansible.builtin.set_fact:
        mirror_rendered_files: []

    - name: Render the monitoring
      ansible.builtin.import_role:
        name: mirror_monitoring

    - name: Write the inputs the role read and the files it recorded
      ansible.builtin.copy:
        dest: "{{ mirror_test_inputs_file }}"
        mode: "0644"
        content: "{{ {'environment': mirror_environment, 'namespace': mirror_namespace,
                      'services': mirror_services, 'monitoring': mirror_monitoring,
                      'telemetry': mirror_telemetry, 'thresholds': mirror_thresholds,
                      'alert_window': mirror_alert_window, 'alert_for': mirror_alert_for,
                      'no_traffic_for': mirror_no_traffic_for,
                      'rendered_files': mirror_rendered_files} | to_nice_json }}"
"""


@dataclass(frozen=True)
class Target:
    """One mirror workload of one service, as the alerts label it."""

    service: str
    namespace: str
    primary: str
    workload: str


@dataclass(frozen=True)
class Render:
    environment: str
    build_dir: Path
    inputs: dict[str, Any]
    run: PlaybookRun

    @property
    def rules_file(self) -> Path:
        return self.build_dir / RULES_FILE

    def rule_groups(self) -> list[dict[str, Any]]:
        return yaml.safe_load(self.rules_file.read_text())["groups"]

    def manifests(self) -> dict[Path, dict[str, Any]]:
        """Every Kubernetes resource written, by file."""
        return {path: yaml.safe_load(path.read_text()) for path in sorted((self.build_dir / "k8s").glob("*.yml"))}

    def files(self) -> dict[Path, bytes]:
        return {path: path.read_bytes() for path in sorted(self.build_dir.rglob("*")) if path.is_file()}

    def targets(self) -> list[Target]:
        """The mirror workloads, computed here from the inventory (an oracle independent of the role)."""
        found = []
        for service in self.inputs["services"]:
            workload_of = {subset["name"]: subset["workload"] for subset in service["subsets"]}
            for mirror in service["mirrors"]:
                found.append(
                    Target(
                        service=service["name"],
                        namespace=service.get("namespace") or self.inputs["namespace"],
                        primary=workload_of[service["primary_subset"]],
                        workload=workload_of[mirror["subset"]],
                    )
                )
        return found


def write_playbook(directory: Path) -> Path:
    playbook = directory / "render-monitoring.yml"
    playbook.write_text(PLAYBOOK)
    return playbook


def render(
    environment: str,
    build_dir: Path,
    playbook: Path,
    extra_vars: dict[str, Any] | None = None,
    *,
    check: bool = False,
) -> Render:
    """Render into build_dir; in check mode (with --diff) into nothing, and the Render reads the
    files the diff shows from build_dir-preview instead."""
    inputs_file = build_dir.parent / f"{build_dir.name}-inputs.json"
    run = run_playbook(
        str(playbook),
        f"inventories/{environment}",
        {"mirror_build_dir": str(build_dir), "mirror_test_inputs_file": str(inputs_file), **(extra_vars or {})},
        check=check,
        diff=check,
    )
    assert run.returncode == 0, run.output[-4000:]
    if not check:
        return Render(environment, build_dir, json.loads(inputs_file.read_text()), run)
    preview = build_dir.with_name(f"{build_dir.name}-preview")
    previewed = previewed_files(run.output)
    for path, content in previewed.items():
        if Path(path).is_relative_to(build_dir):
            relative = Path(path).relative_to(build_dir)
            (preview / relative).parent.mkdir(parents=True, exist_ok=True)
            (preview / relative).write_text(content)
    return Render(environment, preview, json.loads(previewed[str(inputs_file)]), run)


_NEW_FILE_HUNK = re.compile(r"^@@ -0,0 \+1(?:,(\d+))? @@$")
_AFTER_HEADER = re.compile(r"^\+\+\+ after: (.+)$")


def previewed_files(output: str) -> dict[str, str]:
    """From check mode with --diff: the content of each file that would be created, by the path
    its diff names ("+++ after: <path>")."""
    files: dict[str, str] = {}
    lines = output.splitlines()
    path = None
    index = 0
    while index < len(lines):
        header = _AFTER_HEADER.match(lines[index])
        if header:
            path = header.group(1)
        hunk = _NEW_FILE_HUNK.match(lines[index])
        if hunk and path is not None:
            count = int(hunk.group(1) or 1)
            files[path] = "".join(line[1:] + "\n" for line in lines[index + 1 : index + 1 + count])
            path = None
            index += count + 1
            continue
        index += 1
    return files


_renders: dict[str, Render] = {}


def rendered_environments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Render]:
    """Every environment rendered once per session (two at a time), shared by the test modules."""
    if not _renders:
        base = tmp_path_factory.mktemp("monitoring")
        playbook = write_playbook(base)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {env: pool.submit(render, env, base / env, playbook) for env in ENVIRONMENTS}
            _renders.update({env: future.result() for env, future in futures.items()})
    return _renders


def changed_count(run: PlaybookRun) -> int:
    return recap_counts(run.output)["changed"]


_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float:
    """A Prometheus duration ("90s", "1h30m") in seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
