"""One Prometheus query per gate for every service of a run, instead of one per service.

The runners of a fleet (runner.run_all) evaluate their gates exactly as one runner alone does:
gates.evaluate sends each service's own queries. BatchedPrometheus answers those it knows,
the default queries of every service over the run's window, from one grouped query per metric
(promql.grouped_query), and the judges' counts from one query per part and window
(promql.judge_query, the same `sum by` over every service's candidate and baseline; a judge
counts over its step so far, so services whose steps started in the same minute share one),
sent on first demand and kept for one pass. Everything else goes to Prometheus as before:
custom PromQL, a service with several mirror workloads, the whole-step look over another window. The query check of a new ramp (gates.check_queries) is answered
the same way when its window is the run's: the grouped query was accepted, or each one-service
query is sent, so a query Prometheus rejects is still caught before the mirror goes on.

Equal answers, not an approximation: a grouped query is the one-service expression aggregated
by (namespace, workload) instead of into one series, so each of its series is the value the
one-service query gives. tests/integration/test_gates_prometheus.py compares them on a real
Prometheus. A grouped query that Prometheus rejects falls back to the one-service queries (a
limit on a long query need not stop one service's); one of those that Prometheus rejects too
raises QueryRejectedError, named after the gate by gates, exactly as without batching: never an
inconclusive verdict. A grouped query that finds Prometheus unreachable answers every service
with that error (no data, never a pass) without a retry per service.

Safe to share between the threads of a pass (gates.evaluate sends a pass's independent queries
at once): each grouped query is sent by the first thread that needs it, while the others wait
for its answer, and a comparison sends its mirror and primary groups at once.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from functools import partial

from mirrorramp import promql
from mirrorramp.errors import ConfigError, PrometheusError, QueryRejectedError
from mirrorramp.gates import AlertGate, GateSet, alert_query, judge_queries, judge_workloads
from mirrorramp.prometheus import AlertRule, PrometheusClient, QueryResult, concurrently
from mirrorramp.promql import QueryContext

# ("mirror" | "primary", metric), ("alerts", gate name) or ("judge", part, window)
Group = tuple[str, ...]
Route = Callable[[str, float | None], QueryResult]
# A group's answer in a pass: the answer and its series by (namespace, workload); None when
# Prometheus refused the grouped query; the error when it did not answer.
Fetched = tuple[QueryResult, dict] | PrometheusError | None
_EMPTY = QueryResult("vector", [])


def _divide(a: float, b: float) -> float:
    """a / b as PromQL computes it (IEEE 754): x/0 is +-Inf, 0/0 and NaN/x are NaN."""
    if b == 0 or math.isnan(a) or math.isnan(b):
        if math.isnan(a) or math.isnan(b) or a == 0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


class BatchedPrometheus:
    """A PrometheusClient for many services at once (query, alert_rules, ready)."""

    def __init__(
        self,
        client: PrometheusClient,
        gateset: GateSet,
        contexts: Iterable[QueryContext],
        window_seconds: float,
    ) -> None:
        self._client = client
        self.safe_url = client.safe_url
        self._queries: dict[Group, str] = {}
        self._routes: dict[str, Route] = {}
        # Per pass: (group, at) -> its answer, set by the thread that sent it. Guarded by _lock
        # (the dict, and _queries, which judge groups join on first demand).
        self._answers: dict[tuple[Group, float | None], Future[Fetched]] = {}
        self._lock = threading.Lock()
        self._rules: tuple[AlertRule, ...] | PrometheusError | None = None
        self._rules_lock = threading.Lock()  # the rule list is listed once per pass
        self._judged: tuple[set[str], set[str]] = (set(), set())  # (namespaces, workloads)
        single = [QueryContext.of(c).with_window(window_seconds) for c in contexts]
        single = [c for c in single if len(c.mirror_workloads) == 1]
        if not single:
            return
        window = single[0].window
        namespaces = {c.namespace for c in single}
        sides = {"mirror": {c.mirror_workloads[0] for c in single}, "primary": {c.primary_workload for c in single}}
        for side, workloads in sides.items():
            for metric in promql.GROUPED_METRICS:
                self._queries[(side, metric)] = promql.grouped_query(metric, namespaces, workloads, window)
        # The judges' counts: per part and window, every service's candidate and baseline.
        judged = {w for c in single for candidates, baseline in [judge_workloads(c)] for w in (*candidates, baseline)}
        self._judged = (namespaces, judged)
        for context in single:
            try:
                self._route(gateset, context)
            except ConfigError:
                continue  # a template this context cannot fill: its own query says why

    # -- which one-service query is answered by which grouped one -----------------------------

    def _route(self, gateset: GateSet, context: QueryContext) -> None:
        mirror = (context.namespace, context.mirror_workloads[0])
        primary = (context.namespace, context.primary_workload)
        if gateset.request_query == promql.REQUEST_COUNT:
            self._routes[promql.render(promql.REQUEST_COUNT, context)] = self._series(
                ("mirror", "request_count"), mirror
            )
        for gate in gateset.thresholds:
            for metric, template in promql.DEFAULT_QUERIES.items():
                if gate.query == template:
                    self._routes[promql.render(template, context, gate.name)] = self._series(("mirror", metric), mirror)
        for gate in gateset.comparisons:
            combine = operator.sub if gate.metric == "error_ratio" else _divide
            self._routes[promql.render(gate.query, context, gate.name)] = self._combined(
                gate.metric, mirror, primary, combine
            )
        for gate in gateset.alerts:
            self._routes[alert_query(gate, context)] = self._alerts(gate, context)
        candidates, baseline = judge_workloads(context)
        keys = {(context.namespace, w) for w in (*candidates, baseline)}
        for gate in gateset.judges:
            for part, query in judge_queries(gate, context).items():
                any_window, _ = promql.judge_query_any_window(query)
                self._routes[any_window] = self._counts(part, keys)

    def _counts(self, part: str, keys: set[tuple[str, str]]) -> Route:
        """The series of this service's workloads in the answer of the grouped query of the same
        part and window: what the one-service judge query (the same sum by, over fewer
        workloads) returns."""

        def answer(query: str, at: float | None) -> QueryResult:
            _, window = promql.judge_query_any_window(query)
            group = ("judge", part, window)
            with self._lock:
                if group not in self._queries:
                    self._queries[group] = promql.judge_query(part, *self._judged, window)
            fetched = self._fetch(group, at)
            if fetched is None:
                return self._client.query(query, at=at)
            result, _ = fetched
            samples = [s for s in result.samples if tuple(s[0].get(k, "") for k in promql.GROUP_LABELS) in keys]
            return QueryResult("vector", samples, result.warnings)

        return answer

    def _lookup(self, group: Group, key: tuple[str, str], at: float | None) -> QueryResult | None:
        """The one series of `key` in the group's answer, as the one-service query returns it
        (no labels; empty when the workload has none). None: the grouped query was refused."""
        return self._series_of(self._fetch(group, at), key)

    @staticmethod
    def _series_of(fetched: tuple[QueryResult, dict] | None, key: tuple[str, str]) -> QueryResult | None:
        if fetched is None:
            return None
        result, by_key = fetched
        return QueryResult("vector", [({}, by_key[key])] if key in by_key else [], result.warnings)

    def _series(self, group: Group, key: tuple[str, str]) -> Route:
        def answer(query: str, at: float | None) -> QueryResult:
            found = self._lookup(group, key, at)
            return found if found is not None else self._client.query(query, at=at)

        return answer

    def _combined(
        self, metric: str, mirror: tuple[str, str], primary: tuple[str, str], combine: Callable[[float, float], float]
    ) -> Route:
        """`(mirror) <op> (primary)`: empty when either side is, as the PromQL binary operator."""

        def answer(query: str, at: float | None) -> QueryResult:
            mirror_side, primary_side = self._fetch_all([("mirror", metric), ("primary", metric)], at)
            a, b = self._series_of(mirror_side, mirror), self._series_of(primary_side, primary)
            if a is None or b is None:
                return self._client.query(query, at=at)
            warnings = a.warnings + b.warnings
            if not a.samples or not b.samples:
                return QueryResult("vector", [], warnings)
            return QueryResult("vector", [({}, combine(a.samples[0][1], b.samples[0][1]))], warnings)

        return answer

    def _alerts(self, gate: AlertGate, context: QueryContext) -> Route:
        """The firing alerts that carry this service's labels, from the group's alerts."""
        rendered = {label: promql.render(value, context, gate.name, raw=True) for label, value in gate.matchers.items()}
        fixed = {label: rendered[label] for label, value in gate.matchers.items() if not promql.placeholders(value)}
        group: Group = ("alerts", gate.name)
        selector = promql.label_matchers({"alertstate": "firing", **fixed})
        self._queries[group] = f"max_over_time(ALERTS{selector}[{context.window}])"

        def answer(query: str, at: float | None) -> QueryResult:
            fetched = self._fetch(group, at)
            if fetched is None:
                return self._client.query(query, at=at)
            result, _ = fetched
            samples = [s for s in result.samples if all(s[0].get(k) == v for k, v in rendered.items())]
            return QueryResult("vector", samples, result.warnings)

        return answer

    def _fetch(self, group: Group, at: float | None) -> tuple[QueryResult, dict] | None:
        """The group's answer for this pass: sent once; None when Prometheus refused it (each
        service then sends its own query, whose refusal is the gate's error)."""
        return self._fetch_all([group], at)[0]

    def _fetch_all(self, groups: list[Group], at: float | None) -> list[tuple[QueryResult, dict] | None]:
        """_fetch of each group; those no thread has sent yet in this pass go out at once."""
        futures, unsent = [], []
        with self._lock:
            for group in groups:
                key = (group, at)
                if key not in self._answers:
                    query = self._queries[group]
                    self._answers[key] = Future()
                    unsent.append((query, self._answers[key]))
                futures.append(self._answers[key])
        concurrently([partial(self._send, query, at, future) for query, future in unsent])
        answers = []
        for future in futures:
            fetched = future.result()
            if isinstance(fetched, PrometheusError):
                raise PrometheusError(str(fetched))
            answers.append(fetched)
        return answers

    def _send(self, query: str, at: float | None, future: Future[Fetched]) -> None:
        """Send a grouped query; its answer (or any error) goes to `future`, for every thread
        that waits on it."""
        try:
            result = self._client.query(query, at=at)
        except QueryRejectedError:
            future.set_result(None)  # e.g. a regex over too many names: one query each
        except PrometheusError as e:
            future.set_result(e)
        except BaseException as e:  # any error: a thread waiting on this answer must not wait forever
            future.set_exception(e)
        else:
            by_key = {tuple(labels.get(label, "") for label in promql.GROUP_LABELS): v for labels, v in result.samples}
            future.set_result((result, by_key) if result.result_type == "vector" else None)

    # -- the client's interface ----------------------------------------------------------------

    def new_pass(self) -> None:
        """Forget the answers: the next pass looks at Prometheus again."""
        with self._lock:
            self._answers.clear()
        with self._rules_lock:
            self._rules = None

    def query(self, query: str, at: float | None = None) -> QueryResult:
        route = self._routes.get(query)
        if route is None and (any_window := promql.judge_query_any_window(query)) is not None:
            route = self._routes.get(any_window[0])
        if route is None:
            return self._client.query(query, at=at)
        return route(query, at)

    def alert_rules(self) -> tuple[AlertRule, ...]:
        """The loaded alert rules, listed once per pass."""
        with self._rules_lock:
            if self._rules is None:
                try:
                    self._rules = self._client.alert_rules()
                except PrometheusError as e:
                    self._rules = e
            rules = self._rules
        if isinstance(rules, PrometheusError):
            raise PrometheusError(str(rules))
        return rules

    def ready(self) -> bool:
        return self._client.ready()

    def close(self) -> None:
        self._client.close()
