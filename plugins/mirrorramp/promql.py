"""PromQL for the gates: `${name}` templates, safe quoting, and the project's default queries.

Templates use `${name}` placeholders (the braced form of string.Template) because Ansible
renders Jinja `{{ }}` before the action plugin sees its arguments. A bare `$` (a regex anchor
such as `=~"/api/.*$"`) is left as it is; `$$` is a literal `$`.

Each value is escaped for the place it goes: every placeholder is safe inside a double-quoted
PromQL string, and `${mirror_workload}` is also regex-escaped, for use after `=~`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mirrorramp.durations import parse_duration, prometheus_duration
from mirrorramp.errors import ConfigError

# The placeholders a gate query may use, and what each one means.
PLACEHOLDERS: dict[str, str] = {
    "service": "the service name",
    "namespace": "the namespace of the workloads",
    "environment": "the environment (local, dev, staging, prod)",
    "primary_workload": "the primary workload, for an exact match (=)",
    "mirror_workload": "the mirror workloads as an escaped regex alternation, for =~",
    "mirror_workload_exact": "the single mirror workload, for an exact match (=)",
    "baseline_workload": "the judge's baseline: the baseline shadow's workload, else the primary (=)",
    "window": "the analysis window as a PromQL range, e.g. 600s",
}

# `$$`, `${...}` or `$identifier`; any other `$` is literal PromQL (a regex anchor).
_PLACEHOLDER_RE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^{}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The metacharacters of RE2 (Prometheus' regex engine); anything else stands for itself.
_REGEX_META_RE = re.compile(r"([\\.+*?()|\[\]{}^$])")


def is_label_name(name: str) -> bool:
    return bool(_LABEL_NAME_RE.match(name))


def escape_string(value: str) -> str:
    """Escape `value` for the inside of a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_regex(value: str) -> str:
    """Escape the RE2 metacharacters of `value`, so that it matches only itself."""
    return _REGEX_META_RE.sub(r"\\\1", value)


def quote(value: str) -> str:
    """`value` as a double-quoted PromQL string literal."""
    return f'"{escape_string(value)}"'


def label_matchers(matchers: Mapping[str, str], regex: Iterable[str] = ()) -> str:
    """`{a="x",b=~"y"}` from a mapping; labels named in `regex` match with `=~`.

    Values are quoted, not regex-escaped: a `regex` value is the caller's regex.
    """
    regex_labels = set(regex)
    parts = []
    for name, value in matchers.items():
        if not isinstance(name, str) or not is_label_name(name):
            raise ConfigError(f"label name {name!r} is not a valid Prometheus label name ([A-Za-z_][A-Za-z0-9_]*)")
        operator = "=~" if name in regex_labels else "="
        parts.append(f"{name}{operator}{quote(str(value))}")
    return "{" + ",".join(parts) + "}"


@dataclass(frozen=True)
class QueryContext:
    """What a gate query is about: one service, its primary and its mirror workloads."""

    service: str
    namespace: str
    environment: str
    primary_workload: str
    mirror_workloads: tuple[str, ...]
    window_seconds: float = 300.0
    # The baseline shadow's workload (the primary's version, mirrored the same share); None: the
    # judge gates compare against the primary itself.
    baseline_workload: str | None = None

    def __post_init__(self) -> None:
        for name in ("service", "namespace", "environment", "primary_workload"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"query context: {name} must be a non-empty string, got {value!r}")
        workloads = self.mirror_workloads
        if isinstance(workloads, str) or not workloads or not all(isinstance(w, str) and w for w in workloads):
            raise ConfigError(f"query context: mirror_workloads must be a non-empty list of names, got {workloads!r}")
        object.__setattr__(self, "mirror_workloads", tuple(workloads))
        object.__setattr__(self, "window_seconds", parse_duration(self.window_seconds, name="window"))
        baseline = self.baseline_workload
        if baseline is not None and (not isinstance(baseline, str) or not baseline):
            raise ConfigError(
                f"query context: baseline_workload must be a non-empty string or absent, got {baseline!r}"
            )

    @property
    def baseline(self) -> str:
        """The workload the judge gates compare the mirror with."""
        return self.baseline_workload or self.primary_workload

    @classmethod
    def of(cls, context: QueryContext | Mapping) -> QueryContext:
        """`context` as a QueryContext; a mapping holds the same keys (mirror_workloads a list)."""
        if isinstance(context, QueryContext):
            return context
        if not isinstance(context, Mapping):
            raise ConfigError(f"query context: got {type(context).__name__}, expected a mapping")
        known = (
            "service",
            "namespace",
            "environment",
            "primary_workload",
            "mirror_workloads",
            "window_seconds",
            "baseline_workload",
        )
        unknown = sorted(str(k) for k in context if k not in known)
        missing = [k for k in known[:5] if k not in context]
        if unknown or missing:
            raise ConfigError(
                f"query context: unknown keys {unknown}, missing keys {missing}; expected {', '.join(known)}"
            )
        return cls(**context)

    @property
    def window(self) -> str:
        """The window as a PromQL range ("600s")."""
        return prometheus_duration(self.window_seconds)

    def with_window(self, window_seconds: float) -> QueryContext:
        return QueryContext(
            self.service,
            self.namespace,
            self.environment,
            self.primary_workload,
            self.mirror_workloads,
            window_seconds,
            self.baseline_workload,
        )

    def values(self, *, raw: bool = False) -> dict[str, str | None]:
        """The placeholder values, escaped for the inside of a double-quoted PromQL string.

        raw=True: unescaped, for label_matchers (which quotes them itself); there
        `${mirror_workload}` is the single workload, matched exactly. None: the placeholder
        needs exactly one mirror workload and this service has several.
        """
        text = (lambda v: v) if raw else escape_string
        exact = text(self.mirror_workloads[0]) if len(self.mirror_workloads) == 1 else None
        return {
            "service": text(self.service),
            "namespace": text(self.namespace),
            "environment": text(self.environment),
            "primary_workload": text(self.primary_workload),
            "mirror_workload": exact if raw else text("|".join(map(escape_regex, self.mirror_workloads))),
            "mirror_workload_exact": exact,
            "baseline_workload": text(self.baseline),
            "window": self.window,
        }


def placeholders(template: str) -> list[str]:
    """The placeholder names used in `template`, in order (bad ones included, as written)."""
    found = []
    for match in _PLACEHOLDER_RE.finditer(template):
        if match.group("braced") is not None:
            found.append(match.group("braced"))
        elif match.group("bare") is not None and match.group("bare") in PLACEHOLDERS:
            found.append(match.group("bare"))
    return found


def check_template(template: str, gate: str) -> None:
    """Raise ConfigError naming `gate` if `template` uses a placeholder that does not exist."""
    for match in _PLACEHOLDER_RE.finditer(template):
        braced, bare = match.group("braced"), match.group("bare")
        if braced is not None and braced not in PLACEHOLDERS:
            raise ConfigError(
                f"gate {gate!r}: unknown placeholder ${{{braced}}}; known: "
                + ", ".join(f"${{{name}}}" for name in PLACEHOLDERS)
            )
        if bare is not None and bare in PLACEHOLDERS:
            raise ConfigError(f"gate {gate!r}: write ${{{bare}}} (with braces), not ${bare}")


def render(template: str, context: QueryContext | Mapping, gate: str = "query", *, raw: bool = False) -> str:
    """Fill the `${name}` placeholders of `template` from `context`.

    An unknown placeholder raises ConfigError naming `gate` and the placeholder.
    """
    if not isinstance(template, str):
        raise ConfigError(f"gate {gate!r}: the query must be a string, got {type(template).__name__}")
    check_template(template, gate)
    context = QueryContext.of(context)
    values = context.values(raw=raw)

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped") is not None:
            return "$"
        if match.group("bare") is not None:
            return match.group(0)
        name = match.group("braced")
        value = values[name]
        if value is None:
            raise ConfigError(
                f"gate {gate!r}: ${{{name}}} needs exactly one mirror workload, this service has "
                f"{len(context.mirror_workloads)}; match several with "
                'destination_workload=~"${mirror_workload}"'
            )
        return value

    return _PLACEHOLDER_RE.sub(substitute, template)


# The project's default gate queries (the shape Flagger uses for Istio), over the mirror
# workload's own `reporter="destination"` series: mirrored requests produce nothing else.
_MIRROR = (
    'reporter="destination",destination_workload_namespace="${namespace}",destination_workload=~"${mirror_workload}"'
)
_PRIMARY = (
    'reporter="destination",destination_workload_namespace="${namespace}",destination_workload="${primary_workload}"'
)


def _error_ratio(selector: str) -> str:
    # `or vector(0)`: with traffic but no 5xx yet the 5xx series does not exist; without
    # traffic the denominator is empty and so is the answer (no data, never a pass).
    return (
        f'(sum(rate(istio_requests_total{{{selector},response_code=~"5.."}}[${{window}}])) or vector(0))'
        f" / sum(rate(istio_requests_total{{{selector}}}[${{window}}]))"
    )


def _p99_latency(selector: str) -> str:
    return (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(istio_request_duration_milliseconds_bucket{{{selector}}}[${{window}}])))"
    )


# Share of 5xx responses served by the mirror workload, 0..1.
ERROR_RATIO = _error_ratio(_MIRROR)
# p99 latency of the mirror workload, milliseconds.
P99_LATENCY_MS = _p99_latency(_MIRROR)
# Requests served by the mirror workload over the window.
REQUEST_COUNT = f"sum(increase(istio_requests_total{{{_MIRROR}}}[${{window}}]))"
# Mirror minus primary 5xx ratio (a positive delta: the mirror fails more often).
ERROR_RATIO_DELTA = f"({ERROR_RATIO}) - ({_error_ratio(_PRIMARY)})"
# Mirror p99 over primary p99 (2.0: the mirror is twice as slow).
P99_LATENCY_RATIO = f"({P99_LATENCY_MS}) / ({_p99_latency(_PRIMARY)})"

# Named defaults a threshold gate may use instead of its own query (`metric: error_ratio`).
DEFAULT_QUERIES: dict[str, str] = {
    "error_ratio": ERROR_RATIO,
    "p99_latency": P99_LATENCY_MS,
    "request_count": REQUEST_COUNT,
}
# The comparison gates: metric -> the query of mirror against primary.
COMPARISON_QUERIES: dict[str, str] = {
    "error_ratio": ERROR_RATIO_DELTA,
    "p99_latency": P99_LATENCY_RATIO,
}

# -- many services in one query (batch.py) ---------------------------------------------------
# The default queries above, each over the workloads of every service at once and kept apart
# by these labels: one query per gate for a whole environment instead of one per service.
GROUP_LABELS = ("destination_workload_namespace", "destination_workload")
GROUPED_METRICS = ("request_count", "error_ratio", "p99_latency")


def _alternation(values: Iterable[str]) -> str:
    return escape_string("|".join(escape_regex(v) for v in sorted(set(values))))


def grouped_query(metric: str, namespaces: Iterable[str], workloads: Iterable[str], window: str) -> str:
    """The default `metric` query for every (namespace, workload) pair at once, by GROUP_LABELS.

    Each series holds what the one-service query gives for that workload alone: the same
    expression, aggregated by the two labels instead of into one series.
    """
    by = ", ".join(GROUP_LABELS)
    selector = (
        f'reporter="destination",destination_workload_namespace=~"{_alternation(namespaces)}",'
        f'destination_workload=~"{_alternation(workloads)}"'
    )
    requests = f"sum by ({by}) (rate(istio_requests_total{{{selector}}}[{window}]))"
    if metric == "request_count":
        return f"sum by ({by}) (increase(istio_requests_total{{{selector}}}[{window}]))"
    if metric == "error_ratio":
        # `or 0 * requests` stands for the one-service `or vector(0)`: a workload with traffic
        # and no 5xx series yet has a ratio of 0; one without traffic has none (no data).
        errors = f'sum by ({by}) (rate(istio_requests_total{{{selector},response_code=~"5.."}}[{window}]))'
        return f"({errors} or 0 * {requests}) / {requests}"
    if metric == "p99_latency":
        return (
            f"histogram_quantile(0.99, sum by (le, {by}) "
            f"(rate(istio_request_duration_milliseconds_bucket{{{selector}}}[{window}])))"
        )
    raise ConfigError(f"no grouped form of metric {metric!r}; known: {', '.join(GROUPED_METRICS)}")


# -- the judge gates (gates.JudgeGate, judge.py) ---------------------------------------------
# Counts, not rates: the judge needs how many requests each side served in the window.
# part -> (what it counts, extra grouping label or "")
JUDGE_PARTS: dict[str, tuple[str, str]] = {
    "errors": ('istio_requests_total{%s,response_code=~"5.."}', ""),
    "requests": ("istio_requests_total{%s}", ""),
    "buckets": ("istio_request_duration_milliseconds_bucket{%s}", "le"),
}
# metric -> the parts its judge needs
JUDGE_METRIC_PARTS: dict[str, tuple[str, ...]] = {"error_ratio": ("errors", "requests"), "latency": ("buckets",)}


def judge_query(part: str, namespaces: Iterable[str], workloads: Iterable[str], window: str) -> str:
    """`sum by (GROUP_LABELS[, le]) (increase(<part>[window]))` over `reporter="destination"`.

    The same query serves one service (one namespace, its candidate and baseline workloads) and a
    whole run (batch.py: every namespace and workload): each series is one workload's count.
    """
    metric, extra = JUDGE_PARTS[part]
    by = ", ".join((*GROUP_LABELS, extra) if extra else GROUP_LABELS)
    selector = (
        f'reporter="destination",destination_workload_namespace=~"{_alternation(namespaces)}",'
        f'destination_workload=~"{_alternation(workloads)}"'
    )
    return f"sum by ({by}) (increase({metric % selector}[{window}]))"


# Where a judge query's range goes in judge_query_any_window's form of it.
ANY_WINDOW = "${window}"


def judge_query_any_window(query: str) -> tuple[str, str] | None:
    """(the judge_query with its range replaced by ANY_WINDOW, the range), or None for a query
    of another shape. The judges count over the step so far, a window of each service's own:
    batch.py finds a service's judge query by this form, whatever the window."""
    suffix = "]))"
    if not (query.startswith("sum by (") and query.endswith(suffix) and "[" in query):
        return None
    start = query.rindex("[") + 1
    return f"{query[:start]}{ANY_WINDOW}{suffix}", query[start : -len(suffix)]
