"""The ramp's gates: parse them, check their queries up front, and evaluate them.

A gate is PASS only on evidence. No data, NaN, +Inf, several series where one is expected,
too few requests, or Prometheus not answering is INCONCLUSIVE, never PASS. A query Prometheus
refuses to run (400 bad_data, 422 execution) is no verdict at all: it raises QueryRejectedError
(a ConfigError) naming the gate, up front (check_queries) as in a running ramp (evaluate).

The `gates` argument:

    min_requests: 100              # requests the mirror must serve in the window (the task passes its own
                                   # min_requests argument here; the task refuses it inside gates)
    request_query: "<promql>"      # optional; default promql.REQUEST_COUNT
    thresholds:                    # PASS when <value of query> <operator> <value>
      - {name: error-ratio, query: "<promql with ${placeholders}>", operator: "<", value: 0.05}
      - {name: p99, metric: p99_latency, operator: "<", value: 1000, severity: warning}
    alerts:                        # FAIL if the alert fired at any time in the window; INCONCLUSIVE
                                   # while no loaded alert rule could fire one with these labels
      - {name: no-critical-alert, alertname: MirrorErrorRatioCritical}
      - {name: any-critical, matchers: {severity: critical, destination_workload: "${mirror_workload}"}}
    comparisons:                   # the mirror against the primary
      - {name: error-delta, metric: error_ratio, max_delta: 0.01}
      - {name: latency-ratio, metric: p99_latency, max_ratio: 1.5}
    judges:                        # the mirror against its baseline, a statistical test (judge.py)
      - {name: judge-latency, metric: latency}      # tolerance 0.10, confidence 0.99, min_samples 200
      - {name: judge-errors, metric: error_ratio}   # tolerance 0.25 and min_difference 0.001
"""

from __future__ import annotations

import math
import operator as op
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from mirrorramp import judge, promql
from mirrorramp.errors import ConfigError, PrometheusError, QueryRejectedError
from mirrorramp.model import NOT_CHECKED, GateResult, Verdict
from mirrorramp.prometheus import AlertRule, PrometheusClient, QueryResult, concurrently
from mirrorramp.promql import QueryContext
from mirrorramp.wording import interval

# The PASS condition of a threshold gate: passes when `value <operator> threshold`.
OPERATORS: dict[str, Callable[[float, float], bool]] = {"<": op.lt, "<=": op.le, ">": op.gt, ">=": op.ge}
DEFAULT_MIN_REQUESTS = 100
DEFAULT_SEVERITY = "critical"
TRAFFIC_GATE = "traffic"
# comparison metric -> (the limit's key, what the value is)
COMPARISON_LIMITS: dict[str, tuple[str, str]] = {
    "error_ratio": ("max_delta", "mirror minus primary 5xx ratio"),
    "p99_latency": ("max_ratio", "mirror p99 / primary p99"),
}


@dataclass(frozen=True)
class ThresholdGate:
    name: str
    query: str
    operator: str
    value: float
    severity: str = DEFAULT_SEVERITY


@dataclass(frozen=True)
class AlertGate:
    name: str
    # label -> exact value; may use ${placeholders}; "alertname" among them if given.
    matchers: dict[str, str]
    severity: str = DEFAULT_SEVERITY

    @property
    def alertname(self) -> str | None:
        return self.matchers.get("alertname")


@dataclass(frozen=True)
class ComparisonGate:
    name: str
    metric: str
    limit: float
    severity: str = DEFAULT_SEVERITY
    operator: str = "<="

    @property
    def query(self) -> str:
        return promql.COMPARISON_QUERIES[self.metric]


@dataclass(frozen=True)
class JudgeGate:
    """The mirror against its baseline (judge.py): `metric` error_ratio or latency."""

    name: str
    metric: str
    settings: judge.Settings = field(default_factory=judge.Settings)
    severity: str = DEFAULT_SEVERITY


@dataclass(frozen=True)
class GateSet:
    thresholds: tuple[ThresholdGate, ...] = ()
    alerts: tuple[AlertGate, ...] = ()
    comparisons: tuple[ComparisonGate, ...] = ()
    min_requests: int = DEFAULT_MIN_REQUESTS
    request_query: str = promql.REQUEST_COUNT
    judges: tuple[JudgeGate, ...] = ()


# -- parsing ---------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(entry: Mapping, key: str, where: str, *, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}: got {value!r}, expected a non-empty string")
    return value


def _entries(raw: Mapping, key: str) -> list[Mapping]:
    entries = raw.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"gates.{key}: got {type(entries).__name__}, expected a list of gates")
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"gates.{key}[{i}]: got {entry!r}, expected a mapping")
    return entries


# The keys the parser reads, per kind of gate entry and in the gates mapping itself; any other is
# refused. The preflight allows exactly these (filter mirror_ramp_input_options).
GATE_ENTRY_KEYS: dict[str, tuple[str, ...]] = {
    "thresholds": ("name", "query", "metric", "operator", "value", "severity"),
    "alerts": ("name", "alertname", "matchers", "severity"),
    "comparisons": ("name", "metric", "max_delta", "max_ratio", "severity"),
    "judges": ("name", "metric", "tolerance", "confidence", "min_samples", "min_difference", "severity"),
}
GATES_KEYS = ("min_requests", "request_query", *GATE_ENTRY_KEYS)


def _no_unknown_keys(entry: Mapping, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in entry if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")


def _severity(entry: Mapping, where: str) -> str:
    return _text(entry, "severity", where, required=False) or DEFAULT_SEVERITY


def _parse_threshold(entry: Mapping, where: str) -> ThresholdGate:
    _no_unknown_keys(entry, GATE_ENTRY_KEYS["thresholds"], where)
    name = _text(entry, "name", where)
    if ("query" in entry) == ("metric" in entry):
        raise ConfigError(f"{where}: give either query (PromQL) or metric ({', '.join(promql.DEFAULT_QUERIES)})")
    if "metric" in entry:
        metric = entry["metric"]
        if metric not in promql.DEFAULT_QUERIES:
            raise ConfigError(f"{where}.metric: got {metric!r}, expected one of {', '.join(promql.DEFAULT_QUERIES)}")
        query = promql.DEFAULT_QUERIES[metric]
    else:
        query = _text(entry, "query", where)
        promql.check_template(query, name)
    operator = entry.get("operator")
    if operator not in OPERATORS:
        raise ConfigError(
            f"{where}.operator: got {operator!r}, expected one of {', '.join(OPERATORS)} "
            "(the condition under which the gate passes)"
        )
    value = entry.get("value")
    if not _is_number(value):
        raise ConfigError(f"{where}.value: got {value!r}, expected a finite number")
    return ThresholdGate(name, query, operator, float(value), _severity(entry, where))


def _parse_alert(entry: Mapping, where: str) -> AlertGate:
    _no_unknown_keys(entry, GATE_ENTRY_KEYS["alerts"], where)
    name = _text(entry, "name", where)
    matchers_raw = entry.get("matchers") or {}
    if not isinstance(matchers_raw, Mapping):
        raise ConfigError(f"{where}.matchers: got {matchers_raw!r}, expected a mapping of label: value")
    matchers: dict[str, str] = {}
    for label, value in matchers_raw.items():
        if not isinstance(label, str) or not promql.is_label_name(label):
            raise ConfigError(f"{where}.matchers: label {label!r} is not a valid Prometheus label name")
        if label == "alertstate":
            raise ConfigError(f"{where}.matchers.alertstate: not allowed, the gate matches firing alerts itself")
        if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
            raise ConfigError(f"{where}.matchers.{label}: got {value!r}, expected a non-empty string")
        promql.check_template(str(value), name)
        matchers[label] = str(value)
    alertname = _text(entry, "alertname", where, required=False)
    if alertname is not None:
        if matchers.get("alertname", alertname) != alertname:
            raise ConfigError(f"{where}: alertname {alertname!r} and matchers.alertname disagree")
        matchers = {"alertname": alertname, **matchers}
    if not matchers:
        raise ConfigError(f"{where}: give alertname or matchers (a mapping of label: value)")
    return AlertGate(name, matchers, _severity(entry, where))


def _parse_comparison(entry: Mapping, where: str) -> ComparisonGate:
    _no_unknown_keys(entry, GATE_ENTRY_KEYS["comparisons"], where)
    name = _text(entry, "name", where)
    metric = entry.get("metric")
    if metric not in COMPARISON_LIMITS:
        raise ConfigError(f"{where}.metric: got {metric!r}, expected one of {', '.join(COMPARISON_LIMITS)}")
    limit_key, _ = COMPARISON_LIMITS[metric]
    other_key = next(k for k, _ in COMPARISON_LIMITS.values() if k != limit_key)
    if other_key in entry:
        raise ConfigError(f"{where}.{other_key}: not used with metric {metric}; give {limit_key}")
    limit = entry.get(limit_key)
    if not _is_number(limit):
        raise ConfigError(f"{where}.{limit_key}: got {limit!r}, expected a finite number")
    if metric == "error_ratio" and not 0 <= limit <= 1:
        raise ConfigError(f"{where}.max_delta: got {limit!r}, expected 0 <= max_delta <= 1 (a ratio difference)")
    if metric == "p99_latency" and limit <= 0:
        raise ConfigError(f"{where}.max_ratio: got {limit!r}, expected a ratio > 0 (1.5: 50% slower)")
    return ComparisonGate(name, metric, float(limit), _severity(entry, where))


def _parse_judge(entry: Mapping, where: str) -> JudgeGate:
    _no_unknown_keys(entry, GATE_ENTRY_KEYS["judges"], where)
    name = _text(entry, "name", where)
    metric = entry.get("metric")
    if metric not in judge.METRICS:
        raise ConfigError(f"{where}.metric: got {metric!r}, expected one of {', '.join(judge.METRICS)}")
    if metric != "error_ratio" and "min_difference" in entry:
        raise ConfigError(f"{where}.min_difference: only for metric error_ratio (an absolute 5xx-ratio floor)")
    defaults = judge.Settings()
    tolerance = entry.get("tolerance", judge.DEFAULT_TOLERANCES[metric])
    if not _is_number(tolerance) or not 0 <= tolerance <= 10:
        raise ConfigError(f"{where}.tolerance: got {tolerance!r}, expected 0 <= tolerance <= 10 (0.25: 25% worse)")
    confidence = entry.get("confidence", defaults.confidence)
    if not _is_number(confidence) or not 0.5 <= confidence < 1:
        raise ConfigError(f"{where}.confidence: got {confidence!r}, expected 0.5 <= confidence < 1 (0.99)")
    min_samples = entry.get("min_samples", defaults.min_samples)
    if not isinstance(min_samples, int) or isinstance(min_samples, bool) or min_samples < 1:
        raise ConfigError(f"{where}.min_samples: got {min_samples!r}, expected an integer >= 1")
    min_difference = entry.get("min_difference", defaults.min_difference)
    if not _is_number(min_difference) or not 0 <= min_difference < 1:
        raise ConfigError(
            f"{where}.min_difference: got {min_difference!r}, expected 0 <= min_difference < 1 (0.001: 0.1 point)"
        )
    settings = judge.Settings(float(tolerance), float(confidence), min_samples, float(min_difference))
    return JudgeGate(name, metric, settings, _severity(entry, where))


def parse_gates(raw: Mapping | None) -> GateSet:
    """The action plugin's `gates` argument as a GateSet; ConfigError names the bad entry."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"gates: got {type(raw).__name__}, expected a mapping")
    _no_unknown_keys(raw, GATES_KEYS, "gates")
    min_requests = raw.get("min_requests", DEFAULT_MIN_REQUESTS)
    if not isinstance(min_requests, int) or isinstance(min_requests, bool) or min_requests < 0:
        raise ConfigError(f"gates.min_requests: got {min_requests!r}, expected an integer >= 0")
    request_query = raw.get("request_query", promql.REQUEST_COUNT)
    if not isinstance(request_query, str) or not request_query.strip():
        raise ConfigError(f"gates.request_query: got {request_query!r}, expected a PromQL string")
    promql.check_template(request_query, TRAFFIC_GATE)

    thresholds = tuple(_parse_threshold(e, f"gates.thresholds[{i}]") for i, e in enumerate(_entries(raw, "thresholds")))
    alerts = tuple(_parse_alert(e, f"gates.alerts[{i}]") for i, e in enumerate(_entries(raw, "alerts")))
    comparisons = tuple(
        _parse_comparison(e, f"gates.comparisons[{i}]") for i, e in enumerate(_entries(raw, "comparisons"))
    )
    judges = tuple(_parse_judge(e, f"gates.judges[{i}]") for i, e in enumerate(_entries(raw, "judges")))
    seen: set[str] = {TRAFFIC_GATE}
    kinds = (("thresholds", thresholds), ("alerts", alerts), ("comparisons", comparisons), ("judges", judges))
    for kind, gates in kinds:
        for i, gate in enumerate(gates):
            if gate.name in seen:
                raise ConfigError(
                    f"gates.{kind}[{i}].name: {gate.name!r} is used twice (or is the reserved name "
                    f"{TRAFFIC_GATE!r}); gate names must be unique"
                )
            seen.add(gate.name)
    return GateSet(thresholds, alerts, comparisons, min_requests, request_query, judges)


# -- rendering -------------------------------------------------------------------------------


def alert_matchers(gate: AlertGate, context: QueryContext) -> dict[str, str]:
    """The gate's label matchers with their ${placeholders} filled in."""
    return {label: promql.render(value, context, gate.name, raw=True) for label, value in gate.matchers.items()}


def alert_query(gate: AlertGate, context: QueryContext) -> str:
    """max_over_time over the window: an alert that fired and resolved since the last run
    still counts, not only one firing now."""
    selector = promql.label_matchers({"alertstate": "firing", **alert_matchers(gate, context)})
    return f"max_over_time(ALERTS{selector}[{context.window}])"


def _could_fire(rule: AlertRule, matchers: Mapping[str, str]) -> bool:
    """Whether `rule` could fire an alert with these labels. A label the rule sets itself must be
    equal; one it leaves to its expression's series, or sets from a template, could be anything."""
    for label, value in matchers.items():
        if label == "alertname":
            if rule.name != value:
                return False
        elif label in rule.labels and "{{" not in rule.labels[label] and rule.labels[label] != value:
            return False
    return True


def no_rule_could_fire(matchers: Mapping[str, str], rules: tuple[AlertRule, ...]) -> str | None:
    """Why no loaded rule could fire an alert the gate matches, or None when one could. Without
    such a rule the gate could never fail: its "nothing fired" would be no evidence at all (a
    service whose rules were never applied, a typo in a label)."""
    if any(_could_fire(rule, matchers) for rule in rules):
        return None
    wanted = promql.label_matchers(dict(matchers))
    if "alertname" in matchers and all(rule.name != matchers["alertname"] for rule in rules):
        return f"no alert rule {matchers['alertname']} loaded"
    return f"none of the {len(rules)} loaded alert rules could fire an alert with {wanted}"


def _rendered_queries(gateset: GateSet, context: QueryContext) -> dict[str, str]:
    """gate name -> its query, rendered; a bad template raises ConfigError before any call."""
    queries = {TRAFFIC_GATE: promql.render(gateset.request_query, context, TRAFFIC_GATE)}
    for gate in (*gateset.thresholds, *gateset.comparisons):
        queries[gate.name] = promql.render(gate.query, context, gate.name)
    for gate in gateset.alerts:
        queries[gate.name] = alert_query(gate, context)
    return queries


def judge_workloads(context: QueryContext) -> tuple[tuple[str, ...], str]:
    """(the candidate workloads, the baseline workload) a judge compares: the mirror workloads
    other than the baseline, against the baseline shadow or else the primary."""
    baseline = context.baseline
    return tuple(w for w in context.mirror_workloads if w != baseline), baseline


def judge_queries(gate: JudgeGate, context: QueryContext) -> dict[str, str]:
    """part -> the judge's query for this service (promql.judge_query over its workloads)."""
    candidates, baseline = judge_workloads(context)
    return {
        part: promql.judge_query(part, (context.namespace,), (*candidates, baseline), context.window)
        for part in promql.JUDGE_METRIC_PARTS[gate.metric]
    }


def _query(client: PrometheusClient, gate: str, query: str, at: float | None = None) -> QueryResult:
    """The gate's query sent; a query Prometheus refuses raises QueryRejectedError naming `gate`."""
    try:
        return client.query(query, at=at)
    except QueryRejectedError as e:
        raise e.for_gate(gate) from e


def check_queries(gateset: GateSet, client: PrometheusClient, context: QueryContext | Mapping) -> list[str]:
    """Send every gate's query once, before anything is changed.

    A query Prometheus rejects (syntax, 400 bad_data; 422 execution) raises QueryRejectedError,
    one that does not give an instant value ConfigError, both naming the gate. An unreachable
    Prometheus raises PrometheusError. Returns warnings: alert gates that no loaded alert rule
    could fire (yet).
    """
    queries = _rendered_queries(gateset, QueryContext.of(context))
    for name, query in queries.items():
        result = _query(client, name, query)
        if result.result_type not in ("vector", "scalar"):
            raise ConfigError(
                f"gate {name!r}: the query returns a {result.result_type}, a gate needs an instant vector "
                f"or a scalar (aggregate a range with e.g. sum(rate(...[${{window}}]))); the query: {query}"
            )
    for gate in gateset.judges:
        for query in judge_queries(gate, QueryContext.of(context)).values():
            _query(client, gate.name, query)
    warnings = []
    if gateset.alerts:
        rules = client.alert_rules()
        context = QueryContext.of(context)
        for gate in gateset.alerts:
            why = no_rule_could_fire(alert_matchers(gate, context), rules)
            if why:
                warnings.append(f"gate {gate.name!r}: {why} in Prometheus; the gate stays inconclusive until one is")
    return warnings


# -- evaluation ------------------------------------------------------------------------------


@dataclass
class _Answer:
    """One query's outcome: a single finite value, or why there is none."""

    value: float | None = None
    reason: str = ""
    extra: dict = field(default_factory=dict)
    unreachable: bool = False
    empty: bool = False


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _single_value(client: PrometheusClient, gate: str, query: str, at: float | None) -> _Answer:
    try:
        result = _query(client, gate, query, at)
    except PrometheusError as e:
        return _Answer(reason=f"Prometheus unreachable: {e}", unreachable=True)
    return _value_of(result)


def _value_of(result: QueryResult) -> _Answer:
    if result.result_type not in ("vector", "scalar"):
        return _Answer(reason=f"the query returns a {result.result_type}, a gate needs an instant value")
    if not result.samples:
        return _Answer(reason="no data: the query returned an empty vector", empty=True)
    if len(result.samples) > 1:
        series = [labels for labels, _ in result.samples[:5]]
        return _Answer(
            reason=f"the query returned {len(result.samples)} series, a gate needs one "
            "(aggregate with sum(), max() ...)",
            extra={"series": series},
        )
    value = result.samples[0][1]
    if math.isnan(value):
        return _Answer(reason="no data: the value is NaN (nothing to divide: no requests in the window?)")
    if math.isinf(value):
        return _Answer(reason=f"the value is {'+' if value > 0 else '-'}Inf (a division by zero?)")
    return _Answer(value=value)


def _traffic(gateset: GateSet, client: PrometheusClient, query: str, at: float | None) -> tuple[GateResult, bool]:
    """The traffic check, and whether Prometheus was unreachable."""
    base = {"name": TRAFFIC_GATE, "kind": "traffic", "query": query, "operator": ">="}
    threshold = float(gateset.min_requests)
    answer = _single_value(client, TRAFFIC_GATE, query, at)
    if answer.empty:
        answer = _Answer(value=0.0, extra={"note": "no series: the mirror workload served nothing in the window"})
    if answer.value is None:
        result = GateResult(
            **base,
            verdict=Verdict.INCONCLUSIVE,
            threshold=threshold,
            reason=f"request count: {answer.reason}",
        )
        return result, answer.unreachable
    if answer.value >= threshold:
        verdict, reason = Verdict.PASS, f"{_fmt(answer.value)} requests >= {gateset.min_requests}"
    else:
        verdict, reason = (
            Verdict.INCONCLUSIVE,
            f"too few requests: {_fmt(answer.value)} < {gateset.min_requests}",
        )
    return GateResult(
        **base, verdict=verdict, value=answer.value, threshold=threshold, reason=reason, extra=answer.extra
    ), False


def _compare(
    name: str,
    kind: str,
    query: str,
    answer: _Answer,
    operator: str,
    threshold: float,
    severity: str,
    what: str,
) -> GateResult:
    common = {
        "name": name,
        "kind": kind,
        "query": query,
        "threshold": threshold,
        "operator": operator,
        "severity": severity,
    }
    if answer.value is None:
        return GateResult(**common, verdict=Verdict.INCONCLUSIVE, reason=answer.reason, extra=answer.extra)
    passed = OPERATORS[operator](answer.value, threshold)
    relation = operator if passed else f"is not {operator}"
    return GateResult(
        **common,
        verdict=Verdict.PASS if passed else Verdict.FAIL,
        value=answer.value,
        reason=f"{what} {_fmt(answer.value)} {relation} {_fmt(threshold)}",
    )


def _alert_result(gate: AlertGate, query: str, verdict: Verdict, reason: str, **more) -> GateResult:
    # An alert gate passes when nothing fired: value 0 <= 0; a firing alert is value 1.
    return GateResult(
        name=gate.name,
        kind="alert",
        query=query,
        verdict=verdict,
        threshold=0.0,
        operator="<=",
        severity=gate.severity,
        reason=reason,
        **more,
    )


def _alert(
    gate: AlertGate,
    client: PrometheusClient,
    query: str,
    at: float | None,
    rules: tuple[AlertRule, ...] | None,
    rules_error: str,
    context: QueryContext,
) -> GateResult:
    window = context.window
    if rules is None:
        return _alert_result(gate, query, Verdict.INCONCLUSIVE, rules_error)
    why = no_rule_could_fire(alert_matchers(gate, context), rules)
    if why:
        return _alert_result(gate, query, Verdict.INCONCLUSIVE, why)
    try:
        result = _query(client, gate.name, query, at)
    except PrometheusError as e:
        return _alert_result(gate, query, Verdict.INCONCLUSIVE, f"Prometheus unreachable: {e}")
    if result.result_type != "vector":
        return _alert_result(gate, query, Verdict.INCONCLUSIVE, f"the query returns a {result.result_type}")
    if not result.samples:
        return _alert_result(gate, query, Verdict.PASS, f"not firing in the last {window}", value=0.0)
    alerts = [labels for labels, _ in result.samples]
    names = sorted({labels.get("alertname", "?") for labels in alerts})
    return _alert_result(
        gate,
        query,
        Verdict.FAIL,
        f"{', '.join(names)} fired in the last {window} ({len(alerts)} alert series)",
        value=1.0,
        extra={"alerts": alerts},
    )


def judge_summary(judgement: judge.Judgement) -> str:
    """The judge's row: `shift 1.08x [0.97, 1.21] tol 1.25 n=812/9034` (ratio for errors)."""
    what, unit = ("shift", "x") if judgement.metric == "latency" else ("ratio", "")
    shown = interval(judgement.estimate, judgement.lower, judgement.upper, unit)
    return (
        f"{judgement.metric} {what} {shown} tol {judgement.tolerance:g} "
        f"n={judgement.n_candidate:.0f}/{judgement.n_baseline:.0f}"
    )


def _counts(result: QueryResult, context: QueryContext, label: str = "") -> dict[str, dict[str, float]]:
    """workload -> {label value (or ""): count} of this service's namespace; NaN counts dropped."""
    counts: dict[str, dict[str, float]] = {}
    for labels, value in result.samples:
        if labels.get("destination_workload_namespace") != context.namespace or math.isnan(value):
            continue
        per_workload = counts.setdefault(labels.get("destination_workload", ""), {})
        key = labels.get(label, "") if label else ""
        per_workload[key] = per_workload.get(key, 0.0) + value
    return counts


def _side_total(counts: dict[str, dict[str, float]], workloads: tuple[str, ...]) -> float:
    return sum(v for w in workloads for v in counts.get(w, {}).values())


def _side_buckets(counts: dict[str, dict[str, float]], workloads: tuple[str, ...]) -> dict[float, float]:
    cumulative: dict[float, float] = {}
    for w in workloads:
        for le, value in counts.get(w, {}).items():
            try:
                bound = float(le)
            except ValueError:
                continue
            cumulative[bound] = cumulative.get(bound, 0.0) + value
    return cumulative


def _judgement(
    gate: JudgeGate, answers: dict[str, QueryResult], context: QueryContext
) -> Callable[[], judge.Judgement] | str:
    """The judge of this service's counts, or why there is no data (a side without requests)."""
    candidates, baseline = judge_workloads(context)
    if gate.metric == "error_ratio":
        errors, requests = _counts(answers["errors"], context), _counts(answers["requests"], context)
        counts = (
            _side_total(errors, candidates),
            _side_total(requests, candidates),
            _side_total(errors, (baseline,)),
            _side_total(requests, (baseline,)),
        )
        sizes = (counts[1], counts[3])

        def judged() -> judge.Judgement:
            return judge.judge_error_ratio(*counts, gate.settings)
    else:
        buckets = _counts(answers["buckets"], context, "le")
        candidate, base = _side_buckets(buckets, candidates), _side_buckets(buckets, (baseline,))
        shared = set(candidate) & set(base)  # a histogram needs the same buckets on both sides
        if not shared and (candidate or base):
            shared = set(candidate) | set(base)
        bounds, c = judge.bucket_counts({le: candidate.get(le, 0.0) for le in shared})
        _, b = judge.bucket_counts({le: base.get(le, 0.0) for le in shared})
        sizes = (sum(c), sum(b))

        def judged() -> judge.Judgement:
            return judge.judge_latency(bounds, c, b, gate.settings)

    if sizes[0] <= 0 or sizes[1] <= 0:
        side = "candidate" if sizes[0] <= 0 else "baseline"
        return f"no requests at the {side} in the window"
    return judged


def _judge(
    gate: JudgeGate,
    client: PrometheusClient,
    context: QueryContext,
    at: float | None,
) -> GateResult:
    """One judge gate: its counts queried, the verdict (judge.py). Prometheus unreachable, or no
    data at a side, is INCONCLUSIVE."""
    queries = judge_queries(gate, context)
    common = {"name": gate.name, "kind": "judge", "query": "\n".join(queries.values()), "severity": gate.severity}
    try:
        sent = concurrently([partial(_query, client, gate.name, query, at) for query in queries.values()])
        answers = dict(zip(queries, sent, strict=True))
    except PrometheusError as e:
        return GateResult(**common, verdict=Verdict.INCONCLUSIVE, reason=f"Prometheus unreachable: {e}")
    if any(result.result_type != "vector" for result in answers.values()):
        return GateResult(**common, verdict=Verdict.INCONCLUSIVE, reason="the query did not return a vector")
    judged = _judgement(gate, answers, context)
    if isinstance(judged, str):
        return GateResult(**common, verdict=Verdict.INCONCLUSIVE, reason=f"no data: {judged}")
    judgement = judged()
    extra = {
        "metric": gate.metric,
        "estimate": judgement.estimate,
        "lower": judgement.lower,
        "upper": judgement.upper,
        "tolerance": judgement.tolerance,
        "n_candidate": judgement.n_candidate,
        "n_baseline": judgement.n_baseline,
        "confidence": gate.settings.confidence,
        "window": context.window,
        "summary": judge_summary(judgement),
        **judgement.extra,
    }
    return GateResult(
        **common,
        verdict=judgement.verdict,
        value=judgement.estimate,
        threshold=judgement.tolerance,
        operator="<=",
        reason=judgement.reason,
        extra=extra,
    )


def evaluate(
    gateset: GateSet,
    client: PrometheusClient,
    context: QueryContext | Mapping,
    window_seconds: float,
    at: float | None = None,
    judge_window_seconds: float | None = None,
) -> list[GateResult]:
    """Check every gate over the last `window_seconds` (before `at`, default now).

    The traffic check comes first; with too few requests (or no answer) the threshold and
    comparison gates are INCONCLUSIVE without a query. Judge gates need no traffic check (a pass
    needs their own min_samples) and count over `judge_window_seconds` when given (the runner
    gives the whole step so far: judge.py's confidence sequence judges the data since the step
    started). Alert gates are checked whatever the traffic: a fired alert fails the step. One query per gate, the rule list once. A query
    Prometheus refuses raises QueryRejectedError naming the gate: a wrong query is not missing
    evidence, and holding on it would hold the step forever. The queries that do not wait for
    another's answer are sent at once (prometheus.concurrently); the verdicts are those of the
    same queries sent one after the other.
    """
    context = QueryContext.of(context).with_window(window_seconds)
    queries = _rendered_queries(gateset, context)

    traffic, unreachable = _traffic(gateset, client, queries[TRAFFIC_GATE], at)
    # What the traffic check allows goes out at once (prometheus.concurrently): the metric gates'
    # queries, the judges' counts and the rule list; then the alert gates a loaded rule could
    # fire. A pass waits for three answers in a row, not one per query. The results keep their
    # order, and a rejected query raises for the first gate in that order, as one after the other.
    checked = [*gateset.thresholds, *gateset.comparisons] if traffic.verdict is Verdict.PASS else []
    step_context = context if judge_window_seconds is None else context.with_window(judge_window_seconds)
    judged = [] if unreachable else list(gateset.judges)
    list_rules = bool(gateset.alerts) and not unreachable
    sent = concurrently(
        [
            *(partial(_single_value, client, gate.name, queries[gate.name], at) for gate in checked),
            *(partial(_judge, gate, client, step_context, at) for gate in judged),
            *([partial(_alert_rules, client)] if list_rules else []),
        ]
    )
    answers: dict[str, _Answer] = {gate.name: answer for gate, answer in zip(checked, sent, strict=False)}
    not_checked = _Answer(reason=f"{NOT_CHECKED}{traffic.reason}")

    results = [traffic]
    for gate in gateset.thresholds:
        results.append(
            _compare(
                gate.name,
                "threshold",
                queries[gate.name],
                answers.get(gate.name, not_checked),
                gate.operator,
                gate.value,
                gate.severity,
                "value",
            )
        )
    for gate in gateset.comparisons:
        what = COMPARISON_LIMITS[gate.metric][1]
        results.append(
            _compare(
                gate.name,
                "comparison",
                queries[gate.name],
                answers.get(gate.name, not_checked),
                gate.operator,
                gate.limit,
                gate.severity,
                what,
            )
        )

    if unreachable:
        for gate in gateset.judges:
            results.append(
                GateResult(
                    gate.name,
                    "judge",
                    "\n".join(judge_queries(gate, step_context).values()),
                    Verdict.INCONCLUSIVE,
                    severity=gate.severity,
                    reason=f"{NOT_CHECKED}{traffic.reason}",
                )
            )
    else:
        results.extend(sent[len(checked) : len(checked) + len(judged)])

    if gateset.alerts and unreachable:
        for gate in gateset.alerts:
            results.append(
                _alert_result(gate, queries[gate.name], Verdict.INCONCLUSIVE, f"{NOT_CHECKED}{traffic.reason}")
            )
    elif gateset.alerts:
        rules, rules_error = sent[-1]
        results.extend(
            concurrently(
                [
                    partial(_alert, gate, client, queries[gate.name], at, rules, rules_error, context)
                    for gate in gateset.alerts
                ]
            )
        )
    return results


def _alert_rules(client: PrometheusClient) -> tuple[tuple[AlertRule, ...] | None, str]:
    """The loaded alert rules, or None and why they could not be listed."""
    try:
        return client.alert_rules(), ""
    except PrometheusError as e:
        return None, f"could not list the alert rules: {e}"
