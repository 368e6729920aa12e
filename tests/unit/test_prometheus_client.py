"""PrometheusClient against a loopback server that answers with recorded Prometheus answers."""

from __future__ import annotations

import base64
import json
import logging
import math
import socket
import ssl
import subprocess
import threading
import time
import traceback

import pytest

from mirrorramp.errors import ConfigError, MirrorRampError, PrometheusError, QueryRejectedError
from mirrorramp.http_retry import backoff_delay
from mirrorramp.prometheus import BACKOFF_CAP_SECONDS, AlertRule, PrometheusClient
from tests.support.prometheus_server import Reply, ScriptedPrometheus, fixture, free_port

TOKEN = "s3cr3t-bearer-token-0123"
PASSWORD = "hunter2-url-password"


@pytest.fixture
def server():
    scripted = ScriptedPrometheus().start()
    yield scripted
    scripted.stop()


def client_for(url: str, **kwargs) -> PrometheusClient:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("backoff", 0.01)
    return PrometheusClient(url, **kwargs)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize(
    ("name", "result_type", "values"),
    [
        ("vector", "vector", [24.976]),
        ("empty", "vector", []),
        ("nan", "vector", [math.nan]),
        ("inf", "vector", [math.inf]),
        ("scalar", "scalar", [42.0]),
        ("multi_series", "vector", None),
        ("matrix", "matrix", None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_query_parses_recorded_answers(server, name, result_type, values):
    server.default = fixture(name)
    result = client_for(server.url).query("q")
    assert result.result_type == result_type
    if values is not None:
        got = [value for _, value in result.samples]
        assert len(got) == len(values) and all(same(a, b) for a, b in zip(got, values, strict=True))
    if name == "multi_series":
        assert len(result.samples) == 2
        assert {labels["destination_workload"] for labels, _ in result.samples} == {
            "user-service-v1",
            "user-service-v2",
        }


def test_query_sends_the_query_and_the_time(server):
    server.default = fixture("vector")
    client_for(server.url).query('up{job="x"}', at=1700000000.5)
    request = server.requests[-1]
    assert request.path == "/api/v1/query"
    assert request.params == {"query": 'up{job="x"}', "time": "1700000000.500"}


@pytest.mark.parametrize(
    ("name", "status", "error_text"),
    [
        ("bad_data_400", 400, 'bad_data: invalid parameter "query": 1:75: parse error: unclosed left parenthesis'),
        ("execution_422", 422, "execution: found duplicate series for the match group"),
    ],
    ids=["400-bad-data", "422-execution"],
)
def test_rejected_query_is_a_config_error_not_retried(server, name, status, error_text):
    server.default = fixture(name)
    client = client_for(server.url, retries=3)
    with pytest.raises(QueryRejectedError) as caught:
        client.query("sum(rate(x[5m])")
    error = caught.value
    # A configuration error, not "Prometheus could not answer" (which is missing evidence).
    assert isinstance(error, ConfigError) and not isinstance(error, PrometheusError)
    assert (error.query, error.status, error.gate) == ("sum(rate(x[5m])", status, None)
    assert error.prometheus_message.startswith(error_text)
    assert str(error).startswith(f"Prometheus rejected the query: HTTP {status} {error_text}")
    assert str(error).endswith("; the query: sum(rate(x[5m])")
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("reply", "path"),
    [
        (Reply(400, "<html><center>400 Bad Request</center></html>"), "/api/v1/query"),
        (Reply(422, {"message": "not the API's error answer"}), "/api/v1/query"),
        (fixture("bad_data_400"), "/api/v1/rules"),
    ],
    ids=["proxy-400-page", "422-not-prometheus", "rules-400"],
)
def test_a_400_that_is_not_prometheus_refusing_a_query_is_no_answer(server, reply, path):
    """Only Prometheus' own error answer to a query says the query is wrong; a proxy's 400, or
    one for the rule list, is Prometheus not answering (final: no retry)."""
    server.queue(reply)
    client = client_for(server.url, retries=3)
    with pytest.raises(PrometheusError, match=f"HTTP {reply.status}: ") as caught:
        client.query("q") if path == "/api/v1/query" else client.alert_rules()
    assert not isinstance(caught.value, ConfigError)
    assert [r.path for r in server.requests] == [path]


@pytest.mark.parametrize(
    "failure",
    [
        Reply(500, {"status": "error", "errorType": "internal", "error": "boom"}),
        Reply(502, "<html>bad gateway</html>"),
        Reply(503, "Service Unavailable"),
        Reply(429, "slow down", headers={"Retry-After": "0"}),
    ],
    ids=["500", "502", "503", "429"],
)
def test_transient_failure_then_success(server, failure):
    server.queue(failure, fixture("vector"))
    result = client_for(server.url, retries=2).query("q")
    assert result.samples[0][1] == 24.976
    assert len(server.requests) == 2


def test_retries_are_bounded_and_the_last_error_is_named(server):
    server.queue(Reply(500, "first"), Reply(503, "second"), Reply(502, "last one"))
    with pytest.raises(PrometheusError) as caught:
        client_for(server.url, retries=2).query("q")
    message = str(caught.value)
    assert f"{server.url}/api/v1/query" in message
    assert "3 attempt(s)" in message
    assert "HTTP 502: last one" in message
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [401, 403, 404], ids=["401", "403", "404"])
def test_other_client_errors_are_final(server, status):
    server.queue(Reply(status, "nope"))
    with pytest.raises(PrometheusError, match=f"HTTP {status}: nope") as caught:
        client_for(server.url, retries=3).query("q")
    assert not isinstance(caught.value, QueryRejectedError)
    assert len(server.requests) == 1


def test_timeout_is_retried_then_reported(server):
    server.queue(Reply(200, fixture("vector").body, delay=1.0), Reply(200, fixture("vector").body, delay=1.0))
    started = time.monotonic()
    with pytest.raises(PrometheusError, match=r"2 attempt\(s\); last error: timed out after 0.2s"):
        client_for(server.url, timeout=0.2, retries=1).query("q")
    assert time.monotonic() - started < 1.5
    assert len(server.requests) == 2


def test_timeout_then_success(server):
    server.queue(Reply(200, fixture("vector").body, delay=1.0), fixture("vector"))
    result = client_for(server.url, timeout=0.3, retries=1).query("q")
    assert result.samples[0][1] == 24.976


def test_connection_refused():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(PrometheusError) as caught:
        client_for(url, retries=2).query("q")
    message = str(caught.value)
    assert f"{url}/api/v1/query: no answer after 3 attempt(s)" in message
    assert "Connection refused" in message
    assert time.monotonic() - started < 2


def test_backoff_grows_with_jitter_and_is_capped():
    client = client_for("http://127.0.0.1:1", backoff=0.5)
    for attempt, (low, high) in enumerate([(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.5, 5.0), (2.5, 5.0)]):
        delays = {backoff_delay(client.backoff, attempt, BACKOFF_CAP_SECONDS) for _ in range(20)}
        assert all(low <= d <= high for d in delays)
        assert len(delays) > 1  # jitter


def test_not_json_success_is_an_error(server):
    server.queue(Reply(200, "<html>login page</html>"))
    with pytest.raises(PrometheusError, match="the answer is not JSON"):
        client_for(server.url).query("q")


def test_alert_rules_with_their_own_labels_from_recorded_rules(server):
    server.queue(fixture("rules"))
    assert client_for(server.url).alert_rules() == (
        AlertRule("MirrorErrorRatioCritical", {"destination_workload": "user-service-v2", "severity": "critical"}),
    )
    assert server.requests[-1].path == "/api/v1/rules"
    assert server.requests[-1].params == {"type": "alert"}


def test_ready(server):
    assert client_for(server.url).ready() is True
    assert client_for(f"http://127.0.0.1:{free_port()}").ready() is False


@pytest.mark.parametrize(
    "url", ["", "ftp://prometheus", "prometheus:9090", "http://"], ids=["empty", "ftp", "no-scheme", "no-host"]
)
def test_refuses_a_url_that_is_not_http(url):
    with pytest.raises(PrometheusError, match="is not an http"):
        PrometheusClient(url)


def test_token_is_sent_as_a_bearer_header(server):
    server.default = fixture("vector")
    client_for(server.url, token=TOKEN).query("q")
    assert server.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def _failures(server: ScriptedPrometheus):
    refused = f"http://user:{PASSWORD}@127.0.0.1:{free_port()}"
    scripted = server.url.replace("http://", f"http://user:{PASSWORD}@")
    yield "refused", refused, []
    yield "400", scripted, [Reply(400, {"status": "error", "errorType": "bad_data", "error": f"bad {TOKEN}"})]
    yield "401", scripted, [Reply(401, f"token {TOKEN} is not valid")]
    yield "500-exhausted", scripted, [Reply(500, "x"), Reply(500, f"echo Bearer {TOKEN}")]
    yield "timeout", scripted, [Reply(200, "{}", delay=1.0), Reply(200, "{}", delay=1.0)]
    yield "not-json", scripted, [Reply(200, f"Authorization: Bearer {TOKEN}")]


def test_token_and_password_never_in_messages_reprs_or_logs(server, caplog):
    caplog.set_level(logging.DEBUG)
    for name, url, replies in _failures(server):
        server.queue(*replies)
        client = client_for(url, token=TOKEN, timeout=0.3, retries=1)
        for text in (repr(client), str(client)):
            assert TOKEN not in text and PASSWORD not in text, name
        assert "token=<set>" in repr(client)
        with pytest.raises(MirrorRampError) as caught:
            client.query("q")
        seen = [str(caught.value), repr(caught.value), "".join(traceback.format_exception(caught.value))]
        for text in seen:
            assert TOKEN not in text, name
            assert PASSWORD not in text, name
        if name == "400":  # Prometheus refused the query: its own message, redacted
            assert isinstance(caught.value, QueryRejectedError) and "bad <redacted>" in str(caught.value), name
        else:
            assert isinstance(caught.value, PrometheusError) and "127.0.0.1" in str(caught.value), name
        assert "user:" not in str(caught.value), name
    assert TOKEN not in caplog.text and PASSWORD not in caplog.text
    assert "retrying" in caplog.text  # the retries were logged, without the secrets


# -- kept-alive connections and TLS (http.client) ---------------------------------------------


class KeepAliveServer:
    """A raw HTTP/1.1 server on loopback that keeps connections alive (the scripted server speaks
    HTTP/1.0 and closes each one): it answers every GET with the recorded vector, counts the
    connections it accepted, and closes a connection after its answer when `close_after_answer`
    (without saying so: the client finds its kept-alive connection closed). Optional TLS."""

    def __init__(self, tls: ssl.SSLContext | None = None, close_after_answer: bool = False) -> None:
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.answered = 0
        self.authorization: list[str | None] = []
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._body = json.dumps(fixture("vector").body).encode()

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> KeepAliveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            if self._tls:
                conn = self._tls.wrap_socket(conn, server_side=True)
            conn.settimeout(5)
            reader = conn.makefile("rb")
            while not self._stopping.is_set():
                request_line = reader.readline()
                if not request_line:
                    return
                headers = {}
                while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.authorization.append(headers.get("authorization"))
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(self._body)}\r\n\r\n".encode()
                    + self._body
                )
                self.answered += 1
                if self.close_after_answer:
                    return
        except (OSError, ssl.SSLError):
            return  # the client refused our certificate, or went away
        finally:
            conn.close()


@pytest.fixture
def keep_alive_server():
    started: list[KeepAliveServer] = []

    def start(**kwargs) -> KeepAliveServer:
        started.append(KeepAliveServer(**kwargs).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_queries_reuse_one_kept_alive_connection(keep_alive_server):
    server = keep_alive_server()
    client = client_for(server.url)
    for _ in range(3):
        assert client.query("q").samples[0][1] == 24.976
    assert (server.connections, server.answered) == (1, 3)
    client.close()


def test_a_kept_alive_connection_the_server_closed_is_reopened_not_counted_as_a_failure(keep_alive_server):
    server = keep_alive_server(close_after_answer=True)
    client = client_for(server.url, retries=0)  # no retry: the reconnect alone must carry it
    for _ in range(3):
        assert client.query("q").samples[0][1] == 24.976
        time.sleep(0.05)  # the server's close reaches the idle connection first
    assert (server.connections, server.answered) == (3, 3)


def test_a_connection_that_fails_fresh_is_not_retried_inline():
    """Only a reused connection may be stale; a new one refused is an attempt like any other."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusError, match=r"no answer after 1 attempt\(s\); last error: connection failed"):
        client_for(url, retries=0).query("q")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl), its key, and a TLS server context."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            *subject,
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return str(cert), context


@pytest.mark.parametrize(
    ("use_ca_cert", "validate_certs", "answers"),
    [(True, True, True), (True, False, True), (False, True, False), (False, False, True)],
    ids=["ca_cert", "ca_cert-wins-over-validate-false", "unknown-ca-refused", "validate-false"],
)
def test_tls_options_are_honoured(keep_alive_server, certificate, use_ca_cert, validate_certs, answers):
    cert, server_context = certificate
    server = keep_alive_server(tls=server_context)
    client = client_for(
        server.url, ca_cert=cert if use_ca_cert else None, validate_certs=validate_certs, token=TOKEN, retries=1
    )
    if answers:
        assert client.query("q").samples[0][1] == 24.976
        assert client.query("q").samples[0][1] == 24.976
        assert server.connections == 1  # kept alive over TLS too
        assert server.authorization == [f"Bearer {TOKEN}"] * 2
        return
    with pytest.raises(PrometheusError) as caught:
        client.query("q")
    message = "".join(traceback.format_exception(caught.value))
    assert "certificate verify failed" in message
    assert TOKEN not in message and server.authorization == []  # the token never left


def test_password_in_the_url_is_sent_as_basic_auth_unless_a_token_is_given(keep_alive_server):
    server = keep_alive_server()
    with_password = server.url.replace("http://", f"http://user:{PASSWORD}@")
    client_for(with_password).query("q")
    client_for(with_password, token=TOKEN).query("q")
    basic = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert server.authorization == [basic, f"Bearer {TOKEN}"]


def test_a_redirect_is_not_followed_and_says_where_it_points(server):
    server.queue(Reply(301, "moved", headers={"Location": f"http://user:{PASSWORD}@other.example/prom?x=1"}))
    with pytest.raises(PrometheusError) as caught:
        client_for(server.url, token=TOKEN).query("q")
    assert "HTTP 301: moved (redirected to http://other.example/prom: set the Prometheus URL" in str(caught.value)
    assert PASSWORD not in str(caught.value) and len(server.requests) == 1


def test_plain_http_goes_through_the_proxy_the_environment_names(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    server.default = fixture("vector")
    assert client_for("http://prometheus.invalid:9090").query("q").samples[0][1] == 24.976
    # The proxy got the request for Prometheus' host (an absolute URL), which it could not resolve.
    assert server.requests[-1].path == "/api/v1/query"
    assert server.requests[-1].headers["Host"] == "prometheus.invalid:9090"
