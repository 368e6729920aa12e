"""Webhook events of a ramp: Slack incoming-webhook JSON, or the plain event as JSON.

Delivery is bounded and never raises: per-request (connect, read) timeouts, a few attempts with
short jittered backoff, and one time budget per event shared fairly by the receivers, so a hung
receiver cannot starve the next one. Problems come back as warnings. Webhook URLs are secrets
(Slack's embed a token): only scheme://host:port appears in a message, a warning or a repr.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from mirrorramp.errors import ConfigError
from mirrorramp.http_retry import backoff_delay, redact, retry_after, safe_url
from mirrorramp.machine import Action, Decision, when
from mirrorramp.model import GateResult
from mirrorramp.state import json_safe
from mirrorramp.wording import number

log = logging.getLogger(__name__)

# action value -> (event kind, emoji). By value, so that "wait" (Action.WAIT, being added) maps
# without importing a name that may not exist yet.
_KINDS = {
    "start": ("started", ":arrow_forward:"),
    "advance": ("advanced", ":arrow_double_up:"),
    "hold": ("held", ":hourglass_flowing_sand:"),
    "wait": ("waiting_for_approval", ":raised_hand:"),
    "rollback": ("rolled_back", ":rotating_light:"),
    "stop": ("stopped", ":octagonal_sign:"),
    "complete": ("completed", ":white_check_mark:"),
    "pause": ("paused", ":double_vertical_bar:"),
    "resume": ("resumed", ":arrow_forward:"),
    "restart": ("restarted", ":arrows_counterclockwise:"),
    "reconcile": ("reconciled", ":warning:"),
}
_EMOJI = dict(_KINDS.values())
EVENT_KINDS = tuple(_EMOJI)
# Holds happen on every scheduled run: announcing each would drown the channel.
DEFAULT_EVENTS = frozenset(EVENT_KINDS) - {"held"}
FORMATS = ("slack", "json")
_MIN_TRY = 0.05  # seconds: less than this left is not worth opening a connection


def redact_url(url: str) -> str:
    """A webhook URL as a message may show it: scheme, host and port (its path is the token)."""
    return safe_url(url, keep_path=False)


def event_kind(action: Action | str) -> str | None:
    """The event kind announcing `action`; None for STAY (nothing happened to announce) and LEFT
    (the stop, rollback or pause that made this run leave was announced by the run that made it)."""
    kind_and_emoji = _KINDS.get(str(action))
    return kind_and_emoji[0] if kind_and_emoji else None


@dataclass(frozen=True)
class Event:
    """One announcement. `step` is 1-based (None before the first); `gate` is the failing gate."""

    kind: str
    environment: str
    service: str
    namespace: str
    step: int | None
    steps: int
    percent_before: float
    percent: float
    reason: str
    at: float
    gate: GateResult | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind {self.kind!r} is not one of {', '.join(EVENT_KINDS)}")

    @property
    def title(self) -> str:
        return f"{self.environment}/{self.service}: {self.kind.replace('_', ' ')}"

    def as_dict(self) -> dict[str, Any]:
        """The plain JSON body: NaN/Inf gate values spelt "NaN"/"+Inf" (bare NaN is not JSON)."""
        gate = self.gate.as_dict() if self.gate is not None else None
        summary = f"{self.environment}/{self.service}: {self.reason}"
        return json_safe({**asdict(self), "gate": gate, "summary": summary, "at_iso": when(self.at)})


def event_from_decision(
    decision: Decision,
    *,
    environment: str,
    service: str,
    namespace: str,
    steps: int,
    percent_before: float,
    percent: float,
    at: float,
    dry_run: bool = False,
) -> Event | None:
    """The event announcing `decision` (steps: the plan's length), None when it announces nothing."""
    kind = event_kind(decision.action)
    if kind is None:
        return None
    index = decision.state.step_index
    return Event(
        kind=kind,
        environment=environment,
        service=service,
        namespace=namespace,
        step=index + 1 if index is not None else None,
        steps=steps,
        percent_before=percent_before,
        percent=percent,
        reason=decision.reason,
        at=at,
        gate=decision.breach,
        dry_run=dry_run,
    )


def slack_body(event: Event) -> dict[str, Any]:
    """Slack incoming-webhook JSON, within Block Kit's limits (header 150, field 2000, text 3000)."""
    title = f"{_EMOJI[event.kind]} {event.title}"
    moved = f"{event.percent_before:g}% → {event.percent:g}%" if event.percent_before != event.percent else ""
    fields = [
        ("Environment", event.environment),
        ("Service", f"{event.namespace}/{event.service}"),
        ("Step", f"{event.step} of {event.steps}" if event.step is not None else f"not started ({event.steps} steps)"),
        ("Mirror", moved or f"{event.percent:g}%"),
    ]
    if event.gate is not None:
        gate = event.gate
        limit = f"{gate.operator or 'threshold'} {number(gate.threshold, missing='none')}"
        fields += [("Gate", gate.name), ("Value", f"{number(gate.value, missing='none')} (must be {limit})")]
    footer = when(event.at) + (" · dry run" if event.dry_run else "")
    return {
        "text": _cut(_escape(f"{title}: {event.reason}"), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150), "emoji": True}},
            {"type": "section", "text": _mrkdwn(event.reason or event.title)},
            {"type": "section", "fields": [_mrkdwn(f"*{name}*\n{value}", 2000) for name, value in fields][:10]},
            {"type": "context", "elements": [_mrkdwn(footer)]},
        ],
    }


class Notifier:
    """Posts events to webhooks. For a rollback the runner posts only after the mirror is
    removed and verified, so a slow receiver can delay the report, never the rollback."""

    def __init__(
        self,
        urls: Sequence[str] = (),
        *,
        format: str = "slack",
        events: Iterable[str] = DEFAULT_EVENTS,
        timeout: float | tuple[float, float] = (3.05, 5.0),
        attempts: int = 3,
        budget: float = 10.0,
        backoff: float = 0.5,
    ) -> None:
        if format not in FORMATS:
            raise ConfigError(f"notify format: got {format!r}, expected one of {', '.join(FORMATS)}")
        wanted = (events,) if isinstance(events, str) else tuple(events)
        if unknown := [kind for kind in wanted if kind not in EVENT_KINDS]:
            raise ConfigError(f"notify events: unknown {unknown!r}; allowed: {', '.join(EVENT_KINDS)}")
        for index, url in enumerate(urls):
            parts = urlsplit(str(url))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"notify[{index}] must be an http:// or https:// URL with a host")
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        if not all(isinstance(t, int | float) and t > 0 for t in (connect, read, budget)) or backoff < 0:
            raise ConfigError("notify timeouts and budget must be > 0 seconds, backoff >= 0")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"notify attempts: got {attempts!r}, expected an integer >= 1")
        self._urls = tuple(str(url) for url in urls)
        self.format = format
        self.events = frozenset(wanted)
        self.timeout = (float(connect), float(read))
        self.attempts = attempts
        self.budget = float(budget)
        self.backoff = backoff
        self._session = requests.Session()
        for url in self._urls:
            parts = urlsplit(url)
            _LOGGED_SECRETS.add(parts.path + (f"?{parts.query}" if parts.query else ""))
        _LOGGED_SECRETS.difference_update(("", "/"))

    def __repr__(self) -> str:
        receivers = [redact_url(url) for url in self._urls]
        return f"Notifier(urls={receivers}, format={self.format!r}, events={sorted(self.events)})"

    def post(self, event: Event) -> list[str]:
        """Deliver `event` to every receiver if its kind is wanted; return one warning per failure."""
        if not self._urls or event.kind not in self.events:
            return []
        try:
            body = slack_body(event) if self.format == "slack" else event.as_dict()
            data = json.dumps(body, allow_nan=False).encode()
        except (TypeError, ValueError) as e:  # e.g. an odd value in a gate's extra: report, never raise
            return [f"webhooks: {event.kind} event not sent: it cannot be encoded as JSON ({e})"]
        deadline = time.monotonic() + self.budget
        warnings = []
        for index, url in enumerate(self._urls):
            # Fair shares: what one receiver leaves unused goes to the ones after it.
            share = (deadline - time.monotonic()) / (len(self._urls) - index)
            if share < _MIN_TRY:
                problem = f"skipped: the {self.budget:g}s budget for one event was spent"
            else:
                problem = self._deliver(url, data, time.monotonic() + share)
            if problem:
                warnings.append(f"webhook {redact_url(url)}: {event.kind} event not delivered: {problem}")
        return warnings

    def _deliver(self, url: str, data: bytes, until: float) -> str:
        """POST until delivered, a final answer, or `until`; return "" or the last error."""
        last = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            left = until - time.monotonic()
            if left < _MIN_TRY:
                return f"{last}; gave up after {attempt - 1} attempt(s), its share of the budget spent"
            retry_after_s = None
            try:
                response = self._session.post(
                    url,
                    data=data,
                    headers={"Content-Type": "application/json"},
                    timeout=(min(self.timeout[0], left), min(self.timeout[1], left)),
                    allow_redirects=False,  # a redirected POST turns into a GET, and is one more hop to bound
                )
            except requests.ConnectTimeout:
                last = f"no connection within {min(self.timeout[0], left):.2g}s"
            except requests.Timeout:  # it may have arrived: a retry may announce twice, better than never
                last = f"no answer within {min(self.timeout[1], left):.2g}s"
            except requests.ConnectionError as e:
                last = f"connection failed ({_os_reason(e)})"
            except requests.RequestException as e:  # its text names the URL: only the type is safe
                return f"request failed ({type(e).__name__})"
            else:
                if response.status_code < 300:
                    return ""
                last = f"HTTP {response.status_code}: {_scrub(response.text, url) or response.reason or 'no body'}"
                if response.status_code != 429 and response.status_code < 500:
                    return last  # the receiver refused this body: the same one again would be refused too
                retry_after_s = retry_after(response)
            if attempt == self.attempts:
                break
            delay = retry_after_s if retry_after_s is not None else backoff_delay(self.backoff, attempt - 1)
            if delay > until - time.monotonic() - _MIN_TRY:
                return f"{last}; a retry in {delay:.2g}s would exceed the budget ({attempt} attempt(s))"
            log.debug("mirror_ramp: webhook %s: %s; retrying in %.2fs", redact_url(url), last, delay)
            time.sleep(delay)
        return f"{last} (after {self.attempts} attempts)"


def _escape(text: str) -> str:
    # Slack reads &, < and > as markup (links, mentions): "<= 0.05" must be sent as "&lt;= 0.05".
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return re.sub(r"&[a-z]{0,3}$", "", text[: limit - 1]) + "…"  # never half an entity


def _mrkdwn(text: str, limit: int = 3000) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(_escape(text), limit)}


def _scrub(text: str, url: str) -> str:
    """The start of a receiver's answer, which may echo the path ("Cannot POST /hooks/T0/...")."""
    parts = urlsplit(url)
    pieces = [url, parts.path, parts.query, parts.username or "", parts.password or ""]
    pieces += [*parts.path.split("/"), *re.split("[&=]", parts.query)]
    return redact(" ".join(text.split())[:200], (p for p in pieces if len(p) >= 4))


def _os_reason(error: BaseException) -> str:
    """The OS's reason ("Connection refused"): the texts of requests and urllib3 name the URL."""
    seen: BaseException | None = error
    for _ in range(8):  # requests' error -> urllib3's MaxRetryError -> NewConnectionError -> OSError
        if seen is None or (isinstance(seen, OSError) and seen.strerror):
            break
        inner = getattr(seen, "reason", None) or (seen.args[0] if seen.args else None)
        seen = inner if isinstance(inner, BaseException) else seen.__cause__ or seen.__context__
    return seen.strerror if isinstance(seen, OSError) and seen.strerror else type(error).__name__


# urllib3 logs every request line at DEBUG ("POST /services/T0/B0/token"): the path is the secret.
_LOGGED_SECRETS: set[str] = set()


def _mask_request_lines(record: logging.LogRecord) -> bool:
    message, secrets = record.getMessage(), tuple(_LOGGED_SECRETS)  # a copy: a Notifier may add meanwhile
    if any(secret in message for secret in secrets):
        record.msg, record.args = redact(message, secrets), ()
    return True


logging.getLogger("urllib3.connectionpool").addFilter(_mask_request_lines)
