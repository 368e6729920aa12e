"""Run the project's playbooks the way a user does: ansible-playbook in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class PlaybookRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment of a playbook run: this venv's tools and this checkout's ansible.cfg."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}/usr/sbin{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra)
    return env


def run_playbook(
    playbook: str,
    inventory: str | Path = "inventories/local",
    extra_vars: dict | None = None,
    *,
    check: bool = False,
    diff: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> PlaybookRun:
    """Run `ansible-playbook PLAYBOOK -i INVENTORY` from the repository root.

    extra_vars are passed as one JSON document, so values keep their types.
    """
    cmd = [str(VENV_BIN / "ansible-playbook"), playbook, "-i", str(inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=ansible_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PlaybookRun(proc.returncode, proc.stdout, proc.stderr)


def recap_counts(output: str) -> dict[str, int]:
    """Parse the PLAY RECAP line of localhost into {'ok': n, 'changed': n, 'failed': n, ...}."""
    for line in output.splitlines():
        if line.startswith("localhost") and "ok=" in line:
            fields = dict(part.split("=", 1) for part in line.split(":", 1)[1].split())
            return {key: int(value) for key, value in fields.items()}
    raise AssertionError(f"no PLAY RECAP for localhost in:\n{output[-3000:]}")
