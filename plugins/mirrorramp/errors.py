"""The engine's exceptions: one small hierarchy, turned into one result dict at the boundary."""

from __future__ import annotations


class MirrorRampError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(MirrorRampError):
    """Bad input: names the argument, the value and what is allowed. Nothing was changed."""


class PrometheusError(MirrorRampError):
    """Prometheus could not give an answer (unreachable, timeout, HTTP error)."""


class QueryRejectedError(ConfigError):
    """Prometheus refused to run a query (400 bad_data, 422 execution): the query is wrong, so
    it is a configuration error, never missing evidence. Not a PrometheusError: nothing that
    treats an unreachable Prometheus as "no data" catches it. Never retried.

    The client raises it without a gate (it does not know them); gates raise it again with
    `for_gate`. `query` is the whole query, `prometheus_message` Prometheus' own error text
    ("bad_data: ... parse error ..."); the message shortens both if long.
    """

    def __init__(self, query: str, status: int, prometheus_message: str, gate: str | None = None) -> None:
        self.query = query
        self.status = status
        self.prometheus_message = prometheus_message
        self.gate = gate
        who = f"gate {gate!r}: Prometheus rejected its query" if gate else "Prometheus rejected the query"
        super().__init__(
            f"{who}: HTTP {status} {_shorten(prometheus_message, _MESSAGE_LIMIT)}; "
            f"the query: {_shorten(query, _QUERY_LIMIT)}"
        )

    def for_gate(self, gate: str) -> QueryRejectedError:
        """The same rejection, naming the gate whose query it was."""
        return QueryRejectedError(self.query, self.status, self.prometheus_message, gate)

    def __reduce__(self):
        return type(self), (self.query, self.status, self.prometheus_message, self.gate)


# A 422's text lists the clashing series in full before its reason ("...; many-to-many matching
# not allowed"): the message keeps its start and its end.
_MESSAGE_LIMIT = 600
_QUERY_LIMIT = 300


def _shorten(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters: its start and its end around " ... "."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    keep = limit - len(" ... ")
    head = keep * 2 // 3
    return f"{text[:head]} ... {text[len(text) - (keep - head) :]}"


class DriverError(MirrorRampError):
    """The target (VirtualService, Envoy route file) could not be read or changed."""


class ConflictError(DriverError):
    """Another run changed the target first (optimistic concurrency lost)."""
