"""Webhook events against a real HTTP receiver on 127.0.0.1: bodies, limits, retries, budget, secrets."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mirrorramp.errors import ConfigError
from mirrorramp.machine import Action, decide
from mirrorramp.model import GateResult, Verdict
from mirrorramp.notify import DEFAULT_EVENTS, EVENT_KINDS, Event, Notifier, event_from_decision, event_kind, slack_body
from mirrorramp.plan import parse_steps
from mirrorramp.state import RampState

T0 = 1_700_000_000.0
PLAN = parse_steps([{"percent": p, "hold": "1d"} for p in (1, 5, 10, 20)])
BREACH = GateResult("mirror-5xx-ratio", "threshold", "sum(rate(x[600s]))", Verdict.FAIL, 0.3, 0.05, "<=")
SECRET = "/services/T0SECRET/B0SECRET/xoxtokenvalue123"
# Small timeouts so that the whole file runs in a few seconds.
FAST = {"timeout": 0.3, "backoff": 0.02}


# -- a real receiver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # read the request, never answer (until the test ends)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """Answers each path with its scripted replies in order; the last one repeats."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.received: list[Received] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                earlier = [r for r in receiver.received if r.path == self.path]
                receiver.received.append(Received(self.path, dict(self.headers), body, time.monotonic()))
                replies = receiver.scripts.get(self.path, [Reply()])
                reply = replies[min(len(earlier), len(replies) - 1)]
                if reply.hang:
                    receiver.release.wait(10)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str, *replies: Reply) -> str:
        if replies:
            self.scripts[path] = list(replies)
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.release.set()
    receiver.server.shutdown()
    receiver.server.server_close()
    receiver.thread.join(5)


def closed_port_url(path: str = "/hook") -> str:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def make_event(kind: str = "advanced", **changes: object) -> Event:
    event = Event(
        kind=kind,
        environment="prod",
        service="demo-service",
        namespace="shop",
        step=2,
        steps=4,
        percent_before=1.0,
        percent=5.0,
        reason="step 1 (1%) held 1d with passing gates: now step 2 of 4 (5%), holding 1d",
        at=T0,
    )
    return replace(event, **changes)  # type: ignore[arg-type]


def rollback_event() -> Event:
    """A rollback decided by the real state machine, so the event carries what decide() says."""
    ramping = RampState(status="ramping", step_index=1, percent=5.0, step_started_at=T0 - 60, updated_at=T0 - 60)
    decision = decide(ramping, PLAN, [BREACH], T0)
    assert decision.action is Action.ROLLBACK
    event = event_from_decision(
        decision,
        environment="prod",
        service="demo-service",
        namespace="shop",
        steps=len(PLAN),
        percent_before=5.0,
        percent=0.0,
        at=T0,
    )
    assert event is not None
    return event


def timed(notifier: Notifier, event: Event) -> tuple[list[str], float]:
    started = time.monotonic()
    warnings = notifier.post(event)
    return warnings, time.monotonic() - started


# -- events ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        pytest.param(Action.START, "started", id="start"),
        pytest.param(Action.ADVANCE, "advanced", id="advance"),
        pytest.param(Action.HOLD, "held", id="hold"),
        pytest.param("wait", "waiting_for_approval", id="wait-by-value"),
        pytest.param(Action.ROLLBACK, "rolled_back", id="rollback"),
        pytest.param(Action.COMPLETE, "completed", id="complete"),
        pytest.param(Action.STOP, "stopped", id="stop"),
        pytest.param(Action.PAUSE, "paused", id="pause"),
        pytest.param(Action.RESUME, "resumed", id="resume"),
        pytest.param(Action.RESTART, "restarted", id="restart"),
        pytest.param(Action.STAY, None, id="stay-announces-nothing"),
    ],
)
def test_each_action_maps_to_its_event_kind(action, kind):
    assert event_kind(action) == kind


def test_every_action_but_stay_has_an_event_kind():
    # Fails when an Action is added without deciding how it is announced.
    silent = (Action.STAY, Action.LEFT)
    assert [a for a in Action if a not in silent and event_kind(a) is None] == []


def test_a_rollback_event_carries_the_gate_and_a_1_based_step():
    event = rollback_event()
    assert (event.kind, event.step, event.steps, event.percent_before, event.percent) == ("rolled_back", 2, 4, 5, 0)
    assert event.gate is not None
    assert (event.gate.name, event.gate.value, event.gate.threshold, event.gate.operator) == (
        "mirror-5xx-ratio",
        0.3,
        0.05,
        "<=",
    )
    assert "mirror removed" in event.reason


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="'rollback' is not one of started"):
        make_event("rollback")


# -- bodies ---------------------------------------------------------------------------------------


def test_the_slack_body_has_a_fallback_text_a_header_and_fields(receiver):
    url = receiver.url("/slack")
    assert Notifier([url], **FAST).post(make_event()) == []
    (request,) = receiver.at("/slack")
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert body["text"].startswith(":arrow_double_up: prod/demo-service: advanced: step 1 (1%) held 1d")
    assert [block["type"] for block in body["blocks"]] == ["header", "section", "section", "context"]
    assert body["blocks"][0]["text"] == {
        "type": "plain_text",
        "text": ":arrow_double_up: prod/demo-service: advanced",
        "emoji": True,
    }
    fields = [f["text"] for f in body["blocks"][2]["fields"]]
    assert fields == ["*Environment*\nprod", "*Service*\nshop/demo-service", "*Step*\n2 of 4", "*Mirror*\n1% → 5%"]
    assert body["blocks"][3]["elements"][0]["text"] == "2023-11-14T22:13:20Z"


def test_a_slack_rollback_shows_the_gate_value_against_its_threshold(receiver):
    url = receiver.url("/slack")
    assert Notifier([url], **FAST).post(rollback_event()) == []
    body = receiver.at("/slack")[0].json()
    fields = [f["text"] for f in body["blocks"][2]["fields"]]
    # "<" is markup to Slack: it must arrive escaped.
    assert fields[-2:] == ["*Gate*\nmirror-5xx-ratio", "*Value*\n0.3 (must be &lt;= 0.05)"]
    assert body["text"].startswith(":rotating_light: prod/demo-service: rolled back: rolled back from step 2 (5%)")
    assert "<" not in json.dumps(body)


def test_slack_limits_are_kept_by_truncating():
    huge = make_event(
        "rolled_back",
        service="s" * 200,
        reason="x" + "<" * 5000,
        gate=replace(BREACH, name="g" * 5000, value=float("nan")),
    )
    body = slack_body(huge)
    header, section, fields, context = body["blocks"]
    assert len(header["text"]["text"]) <= 150
    assert len(body["text"]) <= 3000 and body["text"].endswith("…")
    assert len(section["text"]["text"]) <= 3000
    assert len(fields["fields"]) <= 10
    assert all(len(f["text"]) <= 2000 for f in fields["fields"])
    assert all(len(e["text"]) <= 3000 for e in context["elements"])
    # Cut between entities, never inside one ("&am…").
    assert section["text"]["text"].removesuffix("…").endswith("&lt;")
    assert "*Value*\nNaN (must be &lt;= 0.05)" in [f["text"] for f in fields["fields"]]


def test_the_json_format_posts_the_plain_event(receiver):
    url = receiver.url("/json")
    event = replace(rollback_event(), gate=replace(BREACH, value=float("inf")))
    assert Notifier([url], format="json", **FAST).post(event) == []
    body = receiver.at("/json")[0].json()
    assert body == event.as_dict()
    assert {k: body[k] for k in ("kind", "environment", "service", "namespace", "step", "steps")} == {
        "kind": "rolled_back",
        "environment": "prod",
        "service": "demo-service",
        "namespace": "shop",
        "step": 2,
        "steps": 4,
    }
    assert (body["percent_before"], body["percent"], body["dry_run"]) == (5.0, 0.0, False)
    assert (body["at"], body["at_iso"]) == (T0, "2023-11-14T22:13:20Z")
    # +Inf is not JSON: it is spelt as Prometheus spells it.
    assert {k: body["gate"][k] for k in ("name", "value", "threshold", "operator")} == {
        "name": "mirror-5xx-ratio",
        "value": "+Inf",
        "threshold": 0.05,
        "operator": "<=",
    }
    assert body["summary"].startswith("prod/demo-service: rolled back from step 2 (5%)")


# -- which events ---------------------------------------------------------------------------------


def test_held_is_opt_in(receiver):
    url = receiver.url("/hook")
    everything_but_held = set(EVENT_KINDS) - {"held"}
    assert everything_but_held == DEFAULT_EVENTS
    assert Notifier([url], **FAST).post(make_event("held")) == []
    assert receiver.received == []
    assert Notifier([url], events={"held"}, **FAST).post(make_event("held")) == []
    assert Notifier([url], events={"held"}, **FAST).post(make_event("advanced")) == []
    assert [r.json()["blocks"][0]["text"]["text"] for r in receiver.received] == [
        ":hourglass_flowing_sand: prod/demo-service: held"
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"format": "teams"}, "notify format: got 'teams', expected one of slack, json", id="format"),
        pytest.param(
            {"events": ["rollback"]}, "notify events: unknown ['rollback']; allowed: started, advanced", id="event"
        ),
        pytest.param({"urls": ["ftp://hooks.example.com/x"]}, "notify[0] must be an http", id="scheme"),
        pytest.param({"urls": ["https:///no-host"]}, "notify[0] must be an http", id="no-host"),
        pytest.param({"attempts": 0}, "notify attempts: got 0, expected an integer >= 1", id="attempts"),
        pytest.param({"timeout": 0}, "must be > 0 seconds", id="timeout"),
        pytest.param({"budget": -1}, "must be > 0 seconds", id="budget"),
    ],
)
def test_bad_settings_are_refused_with_the_value_and_what_is_allowed(options, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Notifier(**options)


# -- delivery: retries ----------------------------------------------------------------------------


def test_a_500_is_retried_then_delivered(receiver):
    url = receiver.url("/flaky", Reply(500, b"oops"), Reply(200))
    assert Notifier([url], **FAST).post(make_event()) == []
    assert len(receiver.at("/flaky")) == 2


def test_a_5xx_that_persists_is_retried_up_to_the_attempts(receiver):
    url = receiver.url("/down", Reply(503, b"maintenance"))
    (warning,) = Notifier([url], attempts=3, **FAST).post(make_event())
    assert len(receiver.at("/down")) == 3
    assert warning.endswith("advanced event not delivered: HTTP 503: maintenance (after 3 attempts)")


@pytest.mark.parametrize("status", [400, 403, 404], ids=["400", "403", "404"])
def test_a_4xx_is_not_retried_and_the_answer_is_in_the_warning(receiver, status):
    url = receiver.url("/refuses", Reply(status, b"invalid_payload"))
    (warning,) = Notifier([url], **FAST).post(make_event())
    assert len(receiver.at("/refuses")) == 1
    assert f"HTTP {status}: invalid_payload" in warning


def test_a_redirect_is_not_followed(receiver):
    target = receiver.url("/elsewhere")
    url = receiver.url("/moved", Reply(307, b"", {"Location": target}))
    (warning,) = Notifier([url], **FAST).post(make_event())
    assert "HTTP 307" in warning
    assert receiver.at("/elsewhere") == []


def test_429_waits_as_long_as_retry_after_says(receiver):
    url = receiver.url("/busy", Reply(429, b"slow down", {"Retry-After": "0.3"}), Reply(200))
    assert Notifier([url], backoff=0, timeout=1).post(make_event()) == []
    first, second = receiver.at("/busy")
    assert second.at - first.at >= 0.3


def test_a_retry_after_beyond_the_budget_gives_up_at_once(receiver):
    url = receiver.url("/busy", Reply(429, b"", {"Retry-After": "30"}))
    (warning,), elapsed = timed(Notifier([url], budget=2, **FAST), make_event())
    assert elapsed < 0.5
    assert len(receiver.at("/busy")) == 1
    assert "HTTP 429" in warning and "a retry in 30s would exceed the budget" in warning


# -- delivery: time bounds ------------------------------------------------------------------------


def test_a_receiver_that_hangs_is_bounded_by_the_timeout_and_the_budget(receiver):
    url = receiver.url("/hangs", Reply(hang=True))
    (warning,), elapsed = timed(Notifier([url], attempts=5, budget=1.0, **FAST), make_event())
    assert 0.6 <= elapsed < 1.3  # several 0.3 s attempts, stopped by the 1 s budget
    assert "no answer within 0.3s" in warning
    assert 2 <= len(receiver.at("/hangs")) < 5


def test_a_closed_port_fails_fast_with_the_reason():
    (warning,), elapsed = timed(Notifier([closed_port_url()], attempts=2, **FAST), make_event())
    assert elapsed < 1
    assert "connection failed (Connection refused) (after 2 attempts)" in warning


def test_failing_receivers_do_not_keep_the_event_from_the_next_ones(receiver):
    urls = [
        receiver.url("/bad-request", Reply(400)),
        closed_port_url(),
        receiver.url("/down", Reply(500)),
        receiver.url("/good"),
    ]
    warnings = Notifier(urls, **FAST).post(make_event())
    assert len(warnings) == 3
    assert len(receiver.at("/good")) == 1


def test_a_hung_receiver_leaves_the_next_one_its_share_of_the_budget(receiver):
    urls = [receiver.url("/hangs", Reply(hang=True)), receiver.url("/good")]
    # The read timeout alone (5 s) would spend the whole budget on the first receiver.
    warnings, elapsed = timed(Notifier(urls, timeout=5, budget=1.0), make_event())
    assert elapsed < 1.3
    assert len(receiver.at("/good")) == 1
    (warning,) = warnings
    assert "no answer within 0.5s" in warning


def test_receivers_past_the_budget_are_skipped_with_a_warning(receiver):
    urls = [receiver.url(f"/hook{i}") for i in range(3)]
    warnings = Notifier(urls, budget=0.04, **FAST).post(make_event())
    assert receiver.received == []
    assert len(warnings) == 3
    assert all("skipped: the 0.04s budget for one event was spent" in w for w in warnings)


# -- secrets --------------------------------------------------------------------------------------


def test_webhook_urls_never_appear_in_warnings_logs_or_repr(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    urls = [
        # A receiver that echoes the path, as Express does: "Cannot POST /services/...".
        receiver.url(SECRET, Reply(404, f"Cannot POST {SECRET}".encode())),
        receiver.url("/hook?token=querytoken42", Reply(500)),
        closed_port_url(SECRET),
    ]
    notifier = Notifier(urls, attempts=2, **FAST)
    warnings = notifier.post(make_event())
    assert len(warnings) == 3
    assert "POST" in caplog.text and "<redacted>" in caplog.text  # urllib3's request lines were logged
    pieces = ["T0SECRET", "B0SECRET", "xoxtokenvalue123", "querytoken42"]
    for text in [*warnings, caplog.text, repr(notifier), str(notifier)]:
        assert not [piece for piece in pieces if piece in text], text
    assert repr(notifier).startswith("Notifier(urls=['http://127.0.0.1:")
    assert all(w.startswith("webhook http://127.0.0.1:") for w in warnings)


def test_a_refused_url_is_not_echoed_in_the_error():
    with pytest.raises(ConfigError) as error:
        Notifier(["hooks.slack.com/services/T0SECRET/B0SECRET/xoxtokenvalue123"])
    assert "SECRET" not in str(error.value)
