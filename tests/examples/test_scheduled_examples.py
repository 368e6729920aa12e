"""The scheduled CI/CD examples (examples/scheduled/): valid for the tools that run them, and safe.

Checked for real and offline: the GitHub workflow and the GitLab pipeline against the schemas
vendored in check-jsonschema (with every download made impossible, so a pass cannot come from the
network), yamllint --strict with the repository's .yamllint, the systemd units with
systemd-analyze verify and security, the crontab with a strict parser and `sh -n`. The guards are
run, not only read: the unit's and the crontab's own command lines against a held lock, the
workflow's and the pipeline's kubeconfig steps with a fake secret. Every example runs rollout.yml
only with inventories whose mirror_ramp_mode is scheduled, never prints the kubeconfig, and names
only files of this repository (or the playbooks that other work is writing).
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.ansible_run import REPO_ROOT, VENV_BIN

EXAMPLES = REPO_ROOT / "examples" / "scheduled"
WORKFLOW = EXAMPLES / "github-actions.yml"
GITLAB = EXAMPLES / "gitlab-ci.yml"
SERVICE = EXAMPLES / "mirror-rollout@.service"
TIMER = EXAMPLES / "mirror-rollout@.timer"
CRONTAB = EXAMPLES / "crontab"
README = EXAMPLES / "README.md"
EXAMPLE_FILES = [WORKFLOW, GITLAB, SERVICE, TIMER, CRONTAB]

# Playbooks that other work is writing: the examples may call them before they land.
TO_BE_WRITTEN = {"playbooks/emergency-stop.yml", "playbooks/status.yml"}
# Paths outside this repository that the examples name on purpose: where a user copies them.
COPY_DESTINATIONS = {".github/workflows/mirror-rollout.yml", ".gitlab-ci.yml"}

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
NO_SYSTEMD_ANALYZE = "systemd-analyze is not installed (Debian package systemd); the other tests still read the units"
FAKE_KUBECONFIG = "apiVersion: v1\nkind: Config\nusers:\n- name: ci\n  user: {token: fake-secret-4f2a9c}\n"


# ---------------------------------------------------------------------------------------------
# Reading the examples


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def gitlab() -> dict:
    return yaml.safe_load(GITLAB.read_text())


def unit_settings(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of (key, value): keys such as Environment= repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"{path.name}: not a setting of a section: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(path: Path, section: str, key: str) -> list[str]:
    return [value for name, value in unit_settings(path).get(section, []) if name == key]


CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
CRON_ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


def cron_field_values(text: str, low: int, high: int) -> set[int]:
    """The values one time field matches: *, N, N-M, lists and /steps; anything else is refused."""
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"bad step in {part!r}")
        step = int(step_text) if slash else 1
        if base == "*":
            start, end = low, high
        elif re.fullmatch(r"\d+-\d+", base):
            start, end = (int(n) for n in base.split("-"))
        elif base.isdigit():
            start = int(base)
            end = high if slash else start
        else:
            raise ValueError(f"not a number, range or *: {part!r}")
        if not low <= start <= end <= high:
            raise ValueError(f"{part!r} is outside {low}-{high} or reversed")
        values.update(range(start, end + 1, step))
    return values


@dataclass(frozen=True)
class CronJob:
    line: int
    fields: tuple[set[int], ...]
    command: str


def cron_environment(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if CRON_ENV_LINE.match(line.strip()))
    return {name.strip(): value.strip() for name, value in pairs}


def cron_jobs(path: Path) -> list[CronJob]:
    """The job lines of a user crontab: 5 time fields and a command (no @reboot-style shortcuts)."""
    jobs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or CRON_ENV_LINE.match(stripped):
            continue
        parts = stripped.split(None, 5)
        if len(parts) < 6:
            raise ValueError(f"line {number}: not 5 time fields and a command: {line!r}")
        fields = tuple(
            cron_field_values(p, low, high) for p, (_, low, high) in zip(parts[:5], CRON_FIELDS, strict=True)
        )
        jobs.append(CronJob(number, fields, parts[5]))
    return jobs


def every_five_minutes(fields: tuple[set[int], ...]) -> bool:
    full = tuple(cron_field_values("*", low, high) for _, low, high in CRON_FIELDS)
    return fields[0] == set(range(0, 60, 5)) and fields[1:] == full[1:]


def workflow_scripts() -> dict[str, str]:
    return {
        f"{job_id}/{step.get('name', index)}": step["run"]
        for job_id, job in workflow()["jobs"].items()
        for index, step in enumerate(job["steps"])
        if "run" in step
    }


def gitlab_scripts() -> dict[str, str]:
    return {
        f"{job_id}/{key}[{index}]": line
        for job_id, job in gitlab().items()
        if isinstance(job, dict)
        for key in ("before_script", "script", "after_script")
        for index, line in enumerate(job.get(key, []))
    }


def unit_scripts() -> dict[str, str]:
    return {
        f"{SERVICE.name}/{key}": value
        for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecStopPost")
        for value in unit_values(SERVICE, "Service", key)
    }


def cron_scripts() -> dict[str, str]:
    return {f"crontab line {job.line}": job.command for job in cron_jobs(CRONTAB)}


SCRIPTS = {
    "github-actions": workflow_scripts,
    "gitlab-ci": gitlab_scripts,
    "systemd": unit_scripts,
    "cron": cron_scripts,
}


def inventory_mode(environment: str) -> str:
    ramp = REPO_ROOT / "inventories" / environment / "group_vars" / "all" / "ramp.yml"
    assert ramp.is_file(), f"inventories/{environment} has no group_vars/all/ramp.yml"
    return yaml.safe_load(ramp.read_text())["mirror_ramp_mode"]


def github_environments() -> tuple[str, set[str]]:
    """The expression that picks the environment, and every environment it can pick."""
    wf = workflow()
    expression = wf["env"]["MIRROR_ENVIRONMENT"]
    match = re.fullmatch(r"\$\{\{ inputs\.environment \|\| '([\w-]+)' \}\}", expression)
    assert match, f"MIRROR_ENVIRONMENT is not `inputs.environment || 'default'`: {expression!r}"
    choice = wf["on"]["workflow_dispatch"]["inputs"]["environment"]
    return expression, {match.group(1), choice["default"], *choice["options"]}


def gitlab_environments() -> set[str]:
    variable = gitlab()["variables"]["MIRROR_ENVIRONMENT"]
    return {variable["value"], *variable["options"]}


def systemd_instances() -> set[str]:
    """The instances that the units and the README tell a user to enable."""
    text = "\n".join(path.read_text() for path in (SERVICE, TIMER, README))
    return set(re.findall(r"enable --now mirror-rollout@([\w-]+)\.timer", text))


def environments_of(example: str) -> dict[str, set[str]]:
    """What each placeholder of `-i inventories/<placeholder>` can be in one example."""
    if example == "github-actions":
        return {"${MIRROR_ENVIRONMENT}": github_environments()[1]}
    if example == "gitlab-ci":
        return {"$MIRROR_ENVIRONMENT": gitlab_environments()}
    if example == "systemd":
        return {"%i": systemd_instances()}
    return {}


INVENTORY_ARGUMENT = re.compile(r"""-i\s+["']?inventories/([^"'\s]+)""")


def inventories_named(example: str, script: str) -> set[str]:
    placeholders = environments_of(example)
    found: set[str] = set()
    for name in INVENTORY_ARGUMENT.findall(script):
        if name in placeholders:
            found |= placeholders[name]
        else:
            assert re.fullmatch(r"[\w-]+", name), f"{example}: cannot tell which inventory {name!r} is"
            found.add(name)
    return found


# ---------------------------------------------------------------------------------------------
# Tools


def offline_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which any HTTP(S) download fails at once: a dead proxy, an empty cache."""
    dead_proxy = "http://127.0.0.1:9"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), NO_PROXY="", no_proxy="")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = dead_proxy
    return env


def check_jsonschema(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), *args],
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def verify_units(directory: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify of the prod instance of the templates in directory."""
    instances = [str(directory / f"mirror-rollout@prod.{kind}") for kind in ("service", "timer")]
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *instances], capture_output=True, text=True, timeout=60
    )


def systemd_version() -> int:
    out = subprocess.run([SYSTEMD_ANALYZE, "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.match(r"systemd (\d+)", out).group(1))


# ---------------------------------------------------------------------------------------------
# Schemas and linters


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        pytest.param("vendor.github-workflows", WORKFLOW, id="github-workflows"),
        pytest.param("custom.github-workflows-require-timeout", WORKFLOW, id="github-jobs-have-timeouts"),
        pytest.param("vendor.gitlab-ci", GITLAB, id="gitlab-ci"),
    ],
)
def test_example_matches_its_vendored_schema_offline(tmp_path: Path, schema: str, path: Path) -> None:
    run = check_jsonschema(tmp_path, "--builtin-schema", schema, str(path))
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_offline_environment_really_blocks_downloads(tmp_path: Path) -> None:
    """Without this, the test above could pass by fetching a schema."""
    run = check_jsonschema(tmp_path, "--schemafile", "https://json.schemastore.org/github-workflow.json", str(WORKFLOW))
    assert run.returncode != 0
    assert "download" in (run.stdout + run.stderr).lower()


def _without_runs_on(wf: dict) -> None:
    del wf["jobs"]["rollout"]["runs-on"]


def _misspelt_cancel_in_progress(wf: dict) -> None:
    concurrency = wf["jobs"]["rollout"]["concurrency"]
    concurrency["cancel_in_progress"] = concurrency.pop("cancel-in-progress")


def _resource_group_not_a_string(gl: dict) -> None:
    gl["mirror-rollout"]["resource_group"] = 5


def _unknown_rule_when(gl: dict) -> None:
    gl["mirror-rollout"]["rules"][0]["when"] = "sometimes"


@pytest.mark.parametrize(
    ("schema", "path", "break_it"),
    [
        pytest.param("vendor.github-workflows", WORKFLOW, _without_runs_on, id="github-job-without-runs-on"),
        pytest.param("vendor.github-workflows", WORKFLOW, _misspelt_cancel_in_progress, id="github-misspelt-key"),
        pytest.param("vendor.gitlab-ci", GITLAB, _resource_group_not_a_string, id="gitlab-resource-group-type"),
        pytest.param("vendor.gitlab-ci", GITLAB, _unknown_rule_when, id="gitlab-unknown-when"),
    ],
)
def test_the_schema_check_rejects_a_broken_copy(tmp_path: Path, schema: str, path: Path, break_it) -> None:
    document = yaml.safe_load(path.read_text())
    break_it(document)
    broken = tmp_path / path.name
    broken.write_text(yaml.safe_dump(document, sort_keys=False))
    run = check_jsonschema(tmp_path, "--builtin-schema", schema, str(broken))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Schema validation errors" in run.stdout + run.stderr


def test_yaml_examples_pass_yamllint_strict() -> None:
    run = subprocess.run(
        [str(VENV_BIN / "yamllint"), "--strict", "-c", str(REPO_ROOT / ".yamllint"), str(WORKFLOW), str(GITLAB)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=NO_SYSTEMD_ANALYZE)
def test_units_pass_systemd_analyze_verify() -> None:
    """Works without a running systemd: verify loads the template from the instance path's directory.
    Warnings (unknown keys, bad values) leave the exit code at 0, so any output is a failure."""
    run = verify_units(EXAMPLES)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=NO_SYSTEMD_ANALYZE)
@pytest.mark.parametrize(
    ("unit", "old", "new", "complaint"),
    [
        pytest.param(TIMER, "OnCalendar=*:0/5", "OnCalendar=*:0/5:xx", "calendar", id="bad-calendar"),
        pytest.param(SERVICE, "Type=oneshot", "Type=oneshot\nProtectSytem=strict", "Unknown key", id="misspelt-key"),
        pytest.param(
            SERVICE, "ExecStart=/usr/bin/flock", "ExecStart=/nonexistent/flock", "not executable", id="no-binary"
        ),
    ],
)
def test_systemd_analyze_verify_rejects_a_broken_copy(
    tmp_path: Path, unit: Path, old: str, new: str, complaint: str
) -> None:
    """Proves that verify really checks here (it could be a no-op in a container)."""
    for path in (SERVICE, TIMER):
        text = path.read_text()
        if path == unit:
            assert old in text
            text = text.replace(old, new)
        (tmp_path / path.name).write_text(text)
    run = verify_units(tmp_path)
    assert complaint in run.stdout + run.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=NO_SYSTEMD_ANALYZE)
def test_service_hardening_keeps_exposure_low() -> None:
    if systemd_version() < 250:
        pytest.skip("systemd-analyze security --offline/--threshold need systemd 250 or later")
    run = subprocess.run(
        [
            SYSTEMD_ANALYZE,
            "security",
            "--offline=true",
            "--threshold=40",
            "--no-pager",
            str(EXAMPLES / "mirror-rollout@prod.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr


# ---------------------------------------------------------------------------------------------
# The crontab


@pytest.mark.parametrize(
    ("text", "low", "high", "values"),
    [
        pytest.param("*/5", 0, 59, set(range(0, 60, 5)), id="every-5"),
        pytest.param("*", 1, 12, set(range(1, 13)), id="star"),
        pytest.param("1,2,10-12", 0, 23, {1, 2, 10, 11, 12}, id="list-and-range"),
        pytest.param("0-30/10", 0, 59, {0, 10, 20, 30}, id="range-step"),
        pytest.param("7", 0, 7, {7}, id="sunday-as-7"),
    ],
)
def test_cron_field_parser_accepts(text: str, low: int, high: int, values: set[int]) -> None:
    assert cron_field_values(text, low, high) == values


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("60", id="out-of-range"),
        pytest.param("*/0", id="zero-step"),
        pytest.param("5-1", id="reversed-range"),
        pytest.param("*/x", id="bad-step"),
        pytest.param("", id="empty"),
        pytest.param("@hourly", id="shortcut"),
    ],
)
def test_cron_field_parser_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        cron_field_values(text, 0, 59)


def test_crontab_lines_parse_and_run_every_five_minutes_under_flock() -> None:
    jobs = cron_jobs(CRONTAB)
    assert jobs, "the crontab has no job line"
    environment = cron_environment(CRONTAB)
    assert environment.get("ANSIBLE_CONFIG") == "/opt/mirror-rollout/ansible.cfg"
    for job in jobs:
        assert every_five_minutes(job.fields), f"line {job.line} does not run every 5 minutes"
        # cron turns an unescaped % into a newline and feeds the rest to stdin.
        assert not re.search(r"(?<!\\)%", job.command), f"line {job.line}: unescaped %"
        (inventory,) = inventories_named("cron", job.command)
        assert re.search(rf"\bflock -n /run/lock/mirror-rollout-{inventory}\.lock ", job.command), job.command
        syntax = subprocess.run(
            [environment.get("SHELL", "/bin/sh"), "-n", "-c", job.command], capture_output=True, text=True
        )
        assert syntax.returncode == 0, syntax.stderr


def test_crontab_command_runs_one_pass_and_skips_while_the_lock_is_held(tmp_path: Path) -> None:
    """The crontab's own command, with its paths moved into tmp_path and a fake ansible-playbook."""
    (job,) = cron_jobs(CRONTAB)
    (tmp_path / "opt" / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "lock").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "etc" / "prod.env").write_text("MIRROR_PROMETHEUS_TOKEN=token-from-env-file\n")
    marker = tmp_path / "ran"
    fake_playbook = tmp_path / "opt" / ".venv" / "bin" / "ansible-playbook"
    fake_playbook.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$*" "$PWD" "$K8S_AUTH_KUBECONFIG" "$MIRROR_PROMETHEUS_TOKEN" "$ANSIBLE_CONFIG" > "$MARKER"\n'
    )
    fake_logger = tmp_path / "bin" / "logger"
    fake_logger.write_text('#!/bin/sh\ncat >> "$LOG"\n')
    for script in (fake_playbook, fake_logger):
        script.chmod(0o755)
    command = (
        job.command.replace("/opt/mirror-rollout", str(tmp_path / "opt"))
        .replace("/run/lock/", f"{tmp_path}/lock/")
        .replace("/etc/mirror-rollout/", f"{tmp_path}/etc/")
    )
    cron_env = cron_environment(CRONTAB)
    env = {
        "HOME": str(tmp_path),
        "LOGNAME": "mirror-rollout",
        **cron_env,
        "PATH": f"{tmp_path / 'bin'}:{cron_env['PATH']}",
        "MARKER": str(marker),
        "LOG": str(tmp_path / "log"),
    }

    def run() -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = subprocess.run([cron_env["SHELL"], "-c", command], env=env, capture_output=True, text=True, timeout=60)
        return done, time.monotonic() - started

    done, _ = run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.read_text().splitlines() == [
        "rollout.yml -i inventories/prod",
        str(tmp_path / "opt"),
        f"{tmp_path}/etc/prod/kubeconfig",
        "token-from-env-file",
        "/opt/mirror-rollout/ansible.cfg",
    ]

    marker.unlink()
    with open(tmp_path / "lock" / "mirror-rollout-prod.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done, took = run()
    assert not marker.exists(), "a pass ran while the lock was held"
    assert took < 10, f"the pass waited {took:.1f}s for the lock instead of giving up"


# ---------------------------------------------------------------------------------------------
# Overlap guards


def test_github_rollout_job_is_guarded_per_environment_and_the_stop_never_waits() -> None:
    wf = workflow()
    expression, _ = github_environments()
    rollout, stop = wf["jobs"]["rollout"], wf["jobs"]["emergency-stop"]
    assert "concurrency" not in wf, "a workflow-wide group would make the emergency stop wait"
    assert rollout["concurrency"] == {"group": f"mirror-rollout-{expression}", "cancel-in-progress": False}
    assert rollout["environment"] == expression
    assert "concurrency" not in stop
    assert rollout["timeout-minutes"] <= 60 and stop["timeout-minutes"] <= 60

    (schedule,) = wf["on"]["schedule"]
    fields = tuple(
        cron_field_values(p, low, high) for p, (_, low, high) in zip(schedule["cron"].split(), CRON_FIELDS, strict=True)
    )
    assert every_five_minutes(fields)
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"action", "environment", "service", "restart"}
    assert inputs["restart"] == {**inputs["restart"], "type": "boolean", "default": False}
    assert inputs["action"]["options"] == ["rollout", "emergency-stop"]
    assert rollout["if"] == "github.event_name == 'schedule' || inputs.action == 'rollout'"
    assert stop["if"] == "github.event_name == 'workflow_dispatch' && inputs.action == 'emergency-stop'"
    assert wf["defaults"]["run"]["shell"] == "bash"

    (upload,) = [step for step in rollout["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()" and upload["with"]["path"] == "build/reports"
    setup = [step for step in rollout["steps"] if step.get("uses", "").startswith("actions/setup-python@")]
    assert setup and setup[0]["with"]["python-version"] == "3.11"


def test_gitlab_rollout_job_is_guarded_per_environment_and_the_stop_never_waits() -> None:
    gl = gitlab()
    rollout, stop = gl["mirror-rollout"], gl["mirror-emergency-stop"]
    assert rollout["resource_group"] == "mirror-rollout-$MIRROR_ENVIRONMENT"
    assert rollout["interruptible"] is False
    assert {"if": '$CI_PIPELINE_SOURCE == "schedule"'} in rollout["rules"]
    assert "resource_group" not in stop
    assert {"if": '$CI_PIPELINE_SOURCE == "schedule"', "when": "manual", "allow_failure": True} in stop["rules"]
    for job in (rollout, stop):
        assert job["extends"] == ".mirror-ansible"
    assert gl[".mirror-ansible"]["environment"]["name"] == "$MIRROR_ENVIRONMENT"
    assert rollout["artifacts"]["paths"] == ["build/reports/"] and rollout["artifacts"]["when"] == "always"


def test_systemd_units_are_oneshot_flock_guarded_and_hardened() -> None:
    def one(path: Path, section: str, key: str) -> str:
        (value,) = unit_values(path, section, key)
        return value

    assert one(SERVICE, "Service", "Type") == "oneshot"
    assert one(SERVICE, "Service", "WorkingDirectory") == "/opt/mirror-rollout"
    argv = shlex.split(one(SERVICE, "Service", "ExecStart"))
    assert argv[:2] == ["/usr/bin/flock", "-n"]
    assert "/run/lock/mirror-rollout-%i.lock" in argv
    conflict_code = argv[argv.index("-E") + 1] if "-E" in argv else "1"
    assert conflict_code in one(SERVICE, "Service", "SuccessExitStatus").split()
    for key, value in {"NoNewPrivileges": "true", "ProtectSystem": "strict", "PrivateTmp": "true"}.items():
        assert one(SERVICE, "Service", key) == value, key
    writable = one(SERVICE, "Service", "ReadWritePaths").split()
    # ProtectSystem=strict makes /run read-only: without /run/lock, flock cannot create its lock.
    assert "/run/lock" in writable and "/opt/mirror-rollout/build" in writable

    assert one(TIMER, "Timer", "OnCalendar") == "*:0/5"
    assert one(TIMER, "Timer", "Persistent") == "false"
    delay = one(TIMER, "Timer", "RandomizedDelaySec")
    assert re.fullmatch(r"\d+s", delay) and int(delay[:-1]) <= 60, delay
    assert one(TIMER, "Install", "WantedBy") == "timers.target"


def test_unit_command_runs_one_pass_and_skips_while_the_lock_is_held(tmp_path: Path) -> None:
    """The unit's own ExecStart=, with %i = prod, the lock in tmp_path and a fake ansible-playbook."""
    (exec_start,) = unit_values(SERVICE, "Service", "ExecStart")
    marker = tmp_path / "ran"
    fake_playbook = tmp_path / "ansible-playbook"
    fake_playbook.write_text('#!/bin/sh\nprintf "%s\\n" "$*" > "$MARKER"\n')
    fake_playbook.chmod(0o755)
    command = (
        exec_start.replace("%i", "prod")
        .replace("/run/lock/", f"{tmp_path}/")
        .replace("/opt/mirror-rollout/.venv/bin/ansible-playbook", str(fake_playbook))
    )
    assert str(fake_playbook) in command and str(tmp_path / "mirror-rollout-prod.lock") in command
    success = {"0", *unit_values(SERVICE, "Service", "SuccessExitStatus")[0].split()}
    env = dict(os.environ, MARKER=str(marker))

    done = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "rollout.yml -i inventories/prod\n"

    marker.unlink()
    with open(tmp_path / "mirror-rollout-prod.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        done = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    assert not marker.exists(), "a pass ran while the lock was held"
    assert took < 10, f"the pass waited {took:.1f}s for the lock instead of giving up"
    assert done.returncode != 0 and str(done.returncode) in success, "a skipped pass would mark the unit failed"


def test_every_guard_takes_the_same_lock_file_on_a_host() -> None:
    """A hand run, the cron line and the unit exclude one another only if they take one file."""
    locks = set(re.findall(r"/run/lock/mirror-rollout-[\w%-]+\.lock", CRONTAB.read_text() + README.read_text()))
    unit_lock = "/run/lock/mirror-rollout-%i.lock"
    assert unit_lock in unit_values(SERVICE, "Service", "ExecStart")[0]
    assert {lock.replace("%i", "prod") for lock in locks} == {unit_lock.replace("%i", "prod")}


# ---------------------------------------------------------------------------------------------
# Scheduled mode, only


@pytest.mark.parametrize("example", list(SCRIPTS))
def test_every_run_uses_a_scheduled_mode_inventory(example: str) -> None:
    scripts = SCRIPTS[example]()
    rollouts = {label: script for label, script in scripts.items() if "rollout.yml" in script}
    assert rollouts, f"{example} never runs rollout.yml"
    for label, script in rollouts.items():
        assert re.search(r"ansible-playbook\s+rollout\.yml\s", script), label
        environments = inventories_named(example, script)
        assert environments, f"{label}: no -i inventories/<env>"
        modes = {environment: inventory_mode(environment) for environment in environments}
        assert set(modes.values()) == {"scheduled"}, f"{label} may run a non-scheduled inventory: {modes}"
        assert "mirror_ramp_mode" not in script, f"{label} overrides the inventory's mode"
        assert not re.search(r"restart=(true|yes|1)\b", script), f"{label} restarts on every pass"
    for label, script in scripts.items():
        if "ansible-playbook" in script:
            for environment in inventories_named(example, script):
                assert (REPO_ROOT / "inventories" / environment).is_dir(), f"{label}: no inventories/{environment}"


# ---------------------------------------------------------------------------------------------
# The kubeconfig is never printed

PRINTS = re.compile(r"\b(cat|less|more|head|tail|base64|xxd|od|strings|tee|echo|printf|yq|jq)\b")
KUBECONFIG_EXPANSION = re.compile(r"\$\{?\w*kubeconfig", re.IGNORECASE)
TO_A_FILE = re.compile(r">>?\s*(?![&\s]|/dev/(?:std|tty|fd))\S")
XTRACE = re.compile(r"\bset\s+-\w*x|\bset\s+-o\s+xtrace|\b(?:ba|da|k|z)?sh\s+-\w*x\b")
ENV_DUMP = re.compile(r"(?:^|[;&|(]\s*)(?:env|printenv|export\s+-p|declare\s+-p|set)\s*(?:$|[;&|)])", re.MULTILINE)
KUBECTL_CONFIG_VIEW = re.compile(r"\bconfig\s+view\b")


def kubeconfig_leaks(script: str) -> list[str]:
    """How a shell script could print the kubeconfig (or every variable, the kubeconfig included)."""
    problems = []
    if XTRACE.search(script):
        problems.append("turns on xtrace, which prints every expanded command")
    if ENV_DUMP.search(script):
        problems.append("prints the whole environment")
    if KUBECTL_CONFIG_VIEW.search(script):
        problems.append("prints the kubeconfig through `kubectl config view`")
    for line in script.splitlines():
        for segment in re.split(r"\|\||&&|[;|]", line):
            if KUBECONFIG_EXPANSION.search(segment) and PRINTS.search(segment) and not TO_A_FILE.search(segment):
                problems.append(f"prints the kubeconfig or its content: {segment.strip()}")
    return problems


@pytest.mark.parametrize(
    "script",
    [
        pytest.param('cat "$K8S_AUTH_KUBECONFIG"', id="cat-file"),
        pytest.param('echo "$KUBECONFIG_CONTENT"', id="echo-content"),
        pytest.param('printf "%s" "$KUBECONFIG_CONTENT" >&2', id="printf-to-stderr"),
        pytest.param('base64 "${MIRROR_KUBECONFIG}" | head', id="base64"),
        pytest.param('tee "$kubeconfig" <<<"$KUBECONFIG_CONTENT"', id="tee-to-stdout"),
        pytest.param("set -x\nchmod 0600 file", id="xtrace"),
        pytest.param("set -euxo pipefail", id="xtrace-combined"),
        pytest.param("bash -x run.sh", id="bash-x"),
        pytest.param("printenv", id="printenv"),
        pytest.param("true && env", id="env-dump"),
        pytest.param("kubectl config view --raw", id="kubectl-config-view"),
    ],
)
def test_leak_check_flags(script: str) -> None:
    assert kubeconfig_leaks(script)


@pytest.mark.parametrize(
    "script",
    [
        pytest.param('printf \'%s\\n\' "$KUBECONFIG_CONTENT" > "$kubeconfig"', id="write-to-file"),
        pytest.param('echo "K8S_AUTH_KUBECONFIG=$kubeconfig" >> "$GITHUB_ENV"', id="path-to-env-file"),
        pytest.param('chmod 0600 "$MIRROR_KUBECONFIG"', id="chmod"),
        pytest.param('echo "MIRROR_KUBECONFIG is not set" >&2', id="names-the-variable"),
        pytest.param("sh -c 'set -a && . ./prod.env && set +a'", id="set-a"),
    ],
)
def test_leak_check_passes(script: str) -> None:
    assert kubeconfig_leaks(script) == []


@pytest.mark.parametrize("example", list(SCRIPTS))
def test_no_example_prints_the_kubeconfig(example: str) -> None:
    problems = {label: kubeconfig_leaks(script) for label, script in SCRIPTS[example]().items()}
    assert {label: found for label, found in problems.items() if found} == {}


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))
    else:
        yield path, node


def test_github_secrets_reach_steps_only_through_env_and_debug_stays_off() -> None:
    wf = workflow()
    secret_uses = [(path, value) for path, value in _walk(wf) if isinstance(value, str) and "secrets." in value]
    assert secret_uses
    for path, value in secret_uses:
        assert len(path) >= 2 and path[-2] == "env", f"secret used outside an env mapping at {path}: {value}"
        assert re.fullmatch(r"\$\{\{ secrets\.\w+ \}\}", value), value
    for path, _ in _walk(wf):
        assert not {"ACTIONS_STEP_DEBUG", "ACTIONS_RUNNER_DEBUG"} & set(map(str, path)), path


def test_gitlab_debug_trace_stays_off() -> None:
    for path, value in _walk(gitlab()):
        if {"CI_DEBUG_TRACE", "CI_DEBUG_SERVICES"} & set(map(str, path)):
            raise AssertionError(f"{path} = {value!r}: debug tracing prints every variable")


def _run_github_step(step: dict, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """A `run:` step as GitHub runs it under `shell: bash`."""
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("job_id", ["rollout", "emergency-stop"])
def test_github_kubeconfig_step_writes_a_private_file_prints_nothing_and_is_cleaned_up(
    tmp_path: Path, job_id: str
) -> None:
    steps = workflow()["jobs"][job_id]["steps"]
    (write,) = [step for step in steps if "${{ secrets.KUBECONFIG }}" in step.get("env", {}).values()]
    (secret_var,) = [name for name, value in write["env"].items() if value == "${{ secrets.KUBECONFIG }}"]
    github_env = tmp_path / "github_env"
    github_env.touch()
    runner_temp = tmp_path / "runner_temp"
    runner_temp.mkdir()
    base = {
        "PATH": os.environ["PATH"],
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_ENV": str(github_env),
        "MIRROR_ENVIRONMENT": "prod",
    }

    done = _run_github_step(write, {**base, secret_var: FAKE_KUBECONFIG}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fake-secret" not in done.stdout + done.stderr
    (line,) = github_env.read_text().splitlines()
    name, _, path = line.partition("=")
    assert name == "K8S_AUTH_KUBECONFIG" and Path(path).parent == runner_temp
    assert Path(path).read_text().strip() == FAKE_KUBECONFIG.strip()
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600

    (remove,) = [step for step in steps if step.get("if") == "always()" and "rm -f" in step.get("run", "")]
    done = _run_github_step(remove, base, tmp_path)
    assert done.returncode == 0 and not Path(path).exists()

    done = _run_github_step(write, {**base, secret_var: ""}, tmp_path)
    assert done.returncode != 0 and "::error::" in done.stderr


def test_gitlab_kubeconfig_lines_make_the_file_private_and_print_nothing(tmp_path: Path) -> None:
    lines = [line for line in gitlab()[".mirror-ansible"]["before_script"] if "KUBECONFIG" in line]
    assert lines
    script = "\n".join(lines) + '\nprintf "%s" "$K8S_AUTH_KUBECONFIG" > "$OUT"\n'
    kubeconfig = tmp_path / "file-variable"
    kubeconfig.write_text(FAKE_KUBECONFIG)
    kubeconfig.chmod(0o644)
    out = tmp_path / "out"
    base = {"PATH": os.environ["PATH"], "MIRROR_ENVIRONMENT": "prod", "OUT": str(out)}

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = run({**base, "MIRROR_KUBECONFIG": str(kubeconfig)})
    assert done.returncode == 0, done.stderr
    assert "fake-secret" not in done.stdout + done.stderr
    assert out.read_text() == str(kubeconfig)
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600

    done = run(base)
    assert done.returncode != 0 and "File variable" in done.stderr


# ---------------------------------------------------------------------------------------------
# Only files of this repository

KNOWN_DIRECTORIES = "examples|playbooks|inventories|roles|plugins|filter_plugins|tests|docs|scripts|molecule"
REFERENCE = re.compile(
    r"(?<![\w@./$-])(?:/opt/mirror-rollout/|\$CI_PROJECT_DIR/|\$\{\{ github\.workspace \}\}/)?"
    rf"((?:{KNOWN_DIRECTORIES})/[\w@./-]*|(?:[\w@.-]+/)*[\w@.-]+\.(?:yml|yaml|txt|cfg|toml|md|service|timer|py|j2))"
)

# A GitHub expression names contexts (inputs.service), not files; github.workspace/ is kept above.
GITHUB_EXPRESSION = re.compile(r"\$\{\{(?! github\.workspace \}\}/).*?\}\}")


def references(text: str) -> set[str]:
    """Repository paths named in a text: project directories, files by extension, and anything
    under the install directory /opt/mirror-rollout, $CI_PROJECT_DIR or github.workspace."""
    text = GITHUB_EXPRESSION.sub("", text)
    return {match.rstrip(".") for match in REFERENCE.findall(text)}


def test_reference_finder_reads_what_the_examples_write() -> None:
    text = (
        "ExecStart=/usr/bin/flock -n /run/lock/x.lock /opt/mirror-rollout/.venv/bin/ansible-playbook rollout.yml"
        " -i inventories/%i\nANSIBLE_CONFIG: $CI_PROJECT_DIR/ansible.cfg\nsee examples/scheduled/README.md.\n"
        "uses: actions/checkout@v4\nMIRROR_SERVICE: ${{ inputs.service }}\nsystemctl enable --now mirror-rollout@prod.timer /etc/mirror-rollout/prod.env"
    )
    assert references(text) == {
        "rollout.yml",
        "inventories/",
        "ansible.cfg",
        "examples/scheduled/README.md",
        "mirror-rollout@prod.timer",
    }


@pytest.mark.parametrize("path", [*EXAMPLE_FILES, README], ids=lambda path: path.name)
def test_example_names_only_files_of_this_repository(path: Path) -> None:
    text = path.read_text()
    missing = set()
    for reference in references(text):
        # An instance of a template unit (mirror-rollout@prod.timer) is its template's file.
        template = re.sub(r"@[\w-]+\.(service|timer)$", r"@.\1", reference)
        exists = any((base / template).exists() for base in (REPO_ROOT, EXAMPLES))
        if not (exists or reference in TO_BE_WRITTEN or reference in COPY_DESTINATIONS):
            missing.add(reference)
    assert missing == set()
    if re.search(r"pip install[^\n]*\s-e \.(\s|$)", text):
        assert (REPO_ROOT / "pyproject.toml").is_file()


def test_readme_covers_every_example() -> None:
    text = README.read_text()
    for path in EXAMPLE_FILES:
        assert f"`{path.name}`" in text, path.name
    for example in ("concurrency:", "resource_group", "flock -n", "restart=true", "playbooks/emergency-stop.yml"):
        assert example in text, example
