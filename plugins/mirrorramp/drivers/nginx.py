"""The nginx driver: the mirror share lives in an nginx include, the ramp state in a state file.

The include holds the `split_clients "${request_id}"` table that picks the mirrored requests and
the JSON answered by the config-version endpoint (`location = /__mirror_config`), so the endpoint
always tells what nginx has really loaded. A change is: render, `nginx -t`, `nginx -s reload`,
then poll the endpoint until it reports the new version. A reload that fails at bind time
returns 0 and keeps the old config: only the endpoint shows it, so it is never trusted blindly.

The state file `<state_dir>/<service>.json` is {"version": N, "state": {RampState}}; N is the
optimistic-concurrency token, checked and bumped under an flock, written tmp + fsync + rename.

    python -m mirrorramp.drivers.nginx --render-include 5   # prints the include for 5 %
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.errors import ConfigError, ConflictError, DriverError
from mirrorramp.files import write_atomically
from mirrorramp.state import RampState

REQUIRED_OPTIONS = ("include_path", "state_dir", "config_url", "prefix", "conf")
DEFAULT_NGINX = "/usr/sbin/nginx"
CONFIRMATIONS = 3


def check_percent(percent: float) -> float:
    """`percent` as nginx can say it: 0..100 in steps of 0.01 (split_clients' resolution)."""
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent):
        raise ConfigError(f"nginx mirror percent is {percent!r}, expected a number from 0 to 100")
    if not 0 <= percent <= 100:
        raise ConfigError(f"nginx mirror percent is {percent!r}, expected a number from 0 to 100")
    hundredths = round(percent * 100)
    if abs(hundredths - percent * 100) > 1e-6:
        raise ConfigError(f"nginx mirror percent {percent!r}: split_clients takes at most two decimals (e.g. 0.25)")
    return hundredths / 100


def _percent_text(percent: float) -> str:
    return f"{percent:.2f}".rstrip("0").rstrip(".")


def config_version(percent: float) -> str:
    """The version the endpoint reports for `percent`: a digest of the sampling table."""
    return hashlib.sha256(f"split_clients request_id {_percent_text(percent)}%".encode()).hexdigest()[:16]


def render_include(percent: float) -> str:
    """The include for `percent` (0: no request is mirrored)."""
    percent = check_percent(percent)
    version = config_version(percent)
    number = int(percent) if percent == int(percent) else percent
    endpoint = json.dumps({"version": version, "percent": number}, sort_keys=True)
    table = f"    {_percent_text(percent)}% 1;\n" if percent > 0 else ""
    return (
        "# Managed by mirror-ramp (the nginx driver): the mirrored share and the config version.\n"
        "# Do not edit by hand; the ramp rewrites it. Loaded at the http level of nginx.conf.\n"
        'split_clients "${request_id}" $mirror_selected {\n'
        f"{table}"
        "    * 0;\n"
        "}\n"
        "# Answered by location = /__mirror_config: always what nginx has loaded.\n"
        "map $request_id $mirror_config_json {\n"
        f"    default '{endpoint}';\n"
        "}\n"
    )


@dataclass(frozen=True)
class LiveConfig:
    version: str
    percent: float


class NginxDriver:
    """Sets the mirror share of one nginx and keeps the ramp state of `service` beside it."""

    def __init__(
        self,
        service: str,
        include_path: str | Path,
        state_dir: str | Path,
        config_url: str,
        prefix: str | Path,
        conf: str | Path,
        nginx_binary: str = DEFAULT_NGINX,
        reload_timeout: float = 5.0,
        http_timeout: float = 3.0,
        lock_timeout: float = 10.0,
    ) -> None:
        self.service = service
        self.include_path = Path(include_path)
        self.state_dir = Path(state_dir)
        self.config_url = config_url
        self.prefix = Path(prefix)
        self.conf = Path(conf)
        self.nginx_binary = nginx_binary
        self.reload_timeout = reload_timeout
        self.http_timeout = http_timeout
        self.lock_timeout = lock_timeout
        self.description = f"nginx {service}"
        self.atomic = False  # the include and the state file are two writes: the include first

    @classmethod
    def from_options(cls, service: str, options: dict[str, Any]) -> NginxDriver:
        missing = [key for key in REQUIRED_OPTIONS if not options.get(key)]
        if missing:
            raise ConfigError(f"nginx driver options lack {', '.join(missing)} (needed: {', '.join(REQUIRED_OPTIONS)})")
        if not str(options["config_url"]).startswith(("http://", "https://")):
            raise ConfigError(f"nginx config_url is {options['config_url']!r}, expected an http(s):// URL")
        extra = {key: float(options[key]) for key in ("reload_timeout", "http_timeout") if options.get(key)}
        return cls(
            service=service,
            include_path=options["include_path"],
            state_dir=options["state_dir"],
            config_url=str(options["config_url"]),
            prefix=options["prefix"],
            conf=options["conf"],
            nginx_binary=options.get("nginx_binary") or DEFAULT_NGINX,
            **extra,
        )

    # -- paths ---------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.state_dir / f"{self.service}.json"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / f"{self.service}.lock"

    # -- reading -------------------------------------------------------------------------
    def live_config(self) -> LiveConfig:
        """What the config-version endpoint reports; a few quick retries (a reload can drop one)."""
        last: Exception | None = None
        for attempt in range(3):
            if attempt:
                time.sleep(0.1 * attempt)
            request = urllib.request.Request(self.config_url, headers={"Connection": "close"})
            try:
                with urllib.request.urlopen(request, timeout=self.http_timeout) as response:
                    data = json.loads(response.read())
                return LiveConfig(version=str(data["version"]), percent=float(data["percent"]))
            except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as e:
                last = e
        raise DriverError(f"{self.description}: cannot read the config-version endpoint {self.config_url}: {last}")

    def _stored(self) -> tuple[int, RampState]:
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0, RampState.initial()
        except OSError as e:
            raise DriverError(f"{self.description}: cannot read {self.state_path}: {e}") from e
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DriverError(f"{self.description}: {self.state_path} is not JSON ({e}); fix or remove it") from e
        counter = data.get("version") if isinstance(data, dict) else None
        if isinstance(counter, bool) or not isinstance(counter, int) or "state" not in data:
            raise DriverError(f"{self.description}: {self.state_path} lacks an integer version and a state")
        return counter, RampState.from_dict(data["state"])

    def _settings(self, live: LiveConfig) -> dict[str, Any]:
        return {"percent": live.percent, "config_version": live.version, "include": str(self.include_path)}

    def read(self) -> TargetSnapshot:
        counter, state = self._stored()
        live = self.live_config()
        return TargetSnapshot(
            state=state, percent=live.percent, version=str(counter), mirror_settings=self._settings(live)
        )

    # -- writing -------------------------------------------------------------------------
    def write(self, current: TargetSnapshot, state: RampState, percent: float, *, dry_run: bool) -> TargetSnapshot:
        percent = check_percent(percent)
        text = render_include(percent)
        if dry_run:
            counter, _ = self._stored()
            if str(counter) != current.version:
                raise ConflictError(self._conflict(current.version, counter))
            self._test_dry_run(text)
            wanted = LiveConfig(config_version(percent), percent)
            return TargetSnapshot(state, percent, current.version, self._settings(wanted))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            counter, _ = self._stored()
            if str(counter) != current.version:
                raise ConflictError(self._conflict(current.version, counter))
            live = self._apply(text, percent)
            new_counter = counter + 1
            document = {"version": new_counter, "state": state.to_dict()}
            write_atomically(self.state_path, json.dumps(document, sort_keys=True, indent=1) + "\n")
        return TargetSnapshot(state, live.percent, str(new_counter), self._settings(live))

    def _conflict(self, expected: str, found: int) -> str:
        return (
            f"{self.description}: the state file {self.state_path} is at version {found}, this run read "
            f"version {expected}: another run changed it first"
        )

    @contextlib.contextmanager
    def _locked(self):
        deadline = time.monotonic() + self.lock_timeout
        with open(self.lock_path, "a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise DriverError(f"{self.description}: cannot lock {self.lock_path}: {e}") from e
                    if time.monotonic() > deadline:
                        raise ConflictError(
                            f"{self.description}: {self.lock_path} stayed locked for {self.lock_timeout:g}s: "
                            "another run is writing"
                        ) from e
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _nginx(self, *args: str, conf: Path | None = None) -> subprocess.CompletedProcess:
        cmd = [self.nginx_binary, "-p", f"{self.prefix}/", "-c", str(conf or self.conf), *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DriverError(f"{self.description}: {' '.join(cmd)} failed: {e}") from e

    def _apply(self, text: str, percent: float) -> LiveConfig:
        """Make `text` the live include; on any failure the previous include is put back."""
        wanted = config_version(percent)
        try:
            previous = self.include_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            previous = None
        except OSError as e:
            raise DriverError(f"{self.description}: cannot read {self.include_path}: {e}") from e
        live = self.live_config()
        if previous == text and live.version == wanted:
            return live  # nothing to change: the state alone is written

        def restore() -> None:
            if previous is not None:
                write_atomically(self.include_path, previous)

        write_atomically(self.include_path, text)
        test = self._nginx("-t")
        if test.returncode != 0:
            restore()
            raise DriverError(
                f"{self.description}: nginx -t rejected the config for mirror {percent:g}% "
                f"(the previous include is back, mirror stays at {live.percent:g}%): {_last_lines(test.stderr)}"
            )
        error_log = self.prefix / "logs" / "error.log"
        log_offset = error_log.stat().st_size if error_log.exists() else 0
        reload = self._nginx("-s", "reload")
        if reload.returncode != 0:
            restore()
            raise DriverError(f"{self.description}: nginx -s reload failed: {_last_lines(reload.stderr)}")
        # Old workers may still accept a few connections after the new ones answer: the change
        # counts as live after CONFIRMATIONS fresh connections in a row report the new version.
        deadline = time.monotonic() + self.reload_timeout
        streak = 0
        while True:
            try:
                now = self.live_config()
            except DriverError:
                now = None
            streak = streak + 1 if now is not None and now.version == wanted else 0
            if streak >= CONFIRMATIONS:
                return now
            if time.monotonic() > deadline:
                break
            time.sleep(0.03 if streak else 0.05)
        restore()
        seen = f"version {now.version} (mirror {now.percent:g}%)" if now else "no answer"
        raise DriverError(
            f"{self.description}: the nginx reload did not take effect within {self.reload_timeout:g}s: the "
            f"config-version endpoint still reports {seen}, not {wanted}; the previous include is back"
            f"{_emergencies(error_log, log_offset)}"
        )

    def _test_dry_run(self, text: str) -> None:
        """`nginx -t` a copy of the main config that loads `text` instead of the live include."""
        try:
            main = self.conf.read_text(encoding="utf-8")
        except OSError as e:
            raise DriverError(f"{self.description}: cannot read {self.conf}: {e}") from e
        if str(self.include_path) not in main:
            raise DriverError(f"{self.description}: {self.conf} does not include {self.include_path} by its full path")
        with tempfile.TemporaryDirectory(prefix="mirror-dry-run-") as tmp:
            include = Path(tmp) / self.include_path.name
            include.write_text(text, encoding="utf-8")
            conf = Path(tmp) / self.conf.name
            conf.write_text(main.replace(str(self.include_path), str(include)), encoding="utf-8")
            test = self._nginx("-t", conf=conf)
        if test.returncode != 0:
            raise DriverError(f"{self.description}: nginx -t rejected the config (dry run): {_last_lines(test.stderr)}")


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(no output)"


def _emergencies(error_log: Path, offset: int) -> str:
    """nginx's own words on the failed reload: the [emerg]/[alert] lines logged since `offset`."""
    try:
        with open(error_log, encoding="utf-8", errors="replace") as handle:
            handle.seek(offset)
            lines = [line.strip() for line in handle if "[emerg]" in line or "[alert]" in line]
    except OSError:
        return ""
    return f"; {error_log}: {lines[-1]}" if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mirrorramp.drivers.nginx")
    parser.add_argument("--render-include", type=float, metavar="PERCENT", required=True, help="print the include")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render_include(args.render_include))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
