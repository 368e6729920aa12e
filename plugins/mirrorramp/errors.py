"""The engine's exceptions: one small hierarchy, turned into one result dict at the boundary."""

from __future__ import annotations


class MirrorRampError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(MirrorRampError):
    """Bad input: names the argument, the value and what is allowed. Nothing was changed."""


class PrometheusError(MirrorRampError):
    """Prometheus could not give an answer (unreachable, timeout, HTTP error)."""


class QueryError(PrometheusError):
    """Prometheus rejected the query itself (400 bad_data, 422 execution)."""


class DriverError(MirrorRampError):
    """The target (VirtualService, nginx) could not be read or changed."""


class ConflictError(DriverError):
    """Another run changed the target first (optimistic concurrency lost)."""
