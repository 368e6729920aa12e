"""The engine's objects a RampRequest names: its driver, its Kubernetes API client, its Prometheus client.

DRIVERS holds one entry per value of the task's `driver` argument: adding a driver is adding
an entry (and its options to the argument spec).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mirrorramp.drivers.base import Driver
from mirrorramp.drivers.envoy import EnvoyDriver, check_percent
from mirrorramp.drivers.kube import GatewayApiDriver, IstioDriver, KubeConnection, api_client, preload_namespaces
from mirrorramp.httproute import check_percent as check_http_route_percent
from mirrorramp.prometheus import PrometheusClient

if TYPE_CHECKING:  # arguments.py reads DRIVERS: a run-time import back would be a cycle
    from mirrorramp.arguments import RampRequest


@dataclass(frozen=True)
class DriverKind:
    """What the engine needs to know of one driver before a run starts."""

    # The driver of one request; the second argument: the run's shared Kubernetes API client, or None.
    build: Callable[[RampRequest, Any], Driver]
    # Talks to a Kubernetes API server: a run of many services shares one client.
    uses_kubernetes: bool = False
    # Called with every driver of a run before each pass: one read for many services.
    preload: Callable[[Sequence[Any]], None] | None = None
    # Raises ConfigError for a percent the driver cannot set: refused before anything is read.
    check_percent: Callable[[float], float] | None = None


def build_api_client(request: RampRequest):
    """The Kubernetes API client of the task's connection options."""
    options = request.driver_options
    connection = KubeConnection(
        kubeconfig=options["kubeconfig"],
        context=options["context"],
        host=options["host"],
        api_key=options["api_key"],
        validate_certs=options["validate_certs"],
        ca_cert=options["ca_cert"],
    )
    return api_client(connection)


def _istio_driver(request: RampRequest, api: Any) -> Driver:
    options = request.driver_options
    return IstioDriver(
        api or build_api_client(request),
        request.config.namespace,
        options["virtual_service"] or request.config.service,
        version=options["api_version"],
    )


def _gateway_api_driver(request: RampRequest, api: Any) -> Driver:
    # api_version is networking.istio.io's: an HTTPRoute is read at its storage version, v1.
    return GatewayApiDriver(
        api or build_api_client(request),
        request.config.namespace,
        request.driver_options["virtual_service"] or request.config.service,
    )


def _envoy_driver(request: RampRequest, api: Any) -> Driver:
    del api  # a file-configured Envoy has no API server
    return EnvoyDriver.from_options(request.config.service, request.driver_options["envoy"])


DRIVERS: dict[str, DriverKind] = {
    "istio": DriverKind(build=_istio_driver, uses_kubernetes=True, preload=preload_namespaces),
    "gateway-api": DriverKind(
        build=_gateway_api_driver,
        uses_kubernetes=True,
        preload=preload_namespaces,
        check_percent=check_http_route_percent,
    ),
    "envoy": DriverKind(build=_envoy_driver, check_percent=check_percent),
}


def build_driver(request: RampRequest, api: Any = None) -> Driver:
    """The driver of the request's target; `api`: a Kubernetes API client to share."""
    return DRIVERS[request.driver_name].build(request, api)


def build_prometheus(request: RampRequest) -> PrometheusClient:
    p = request.prometheus
    return PrometheusClient(
        p["url"],
        token=p.get("token") or None,
        ca_cert=p.get("ca_cert") or None,
        validate_certs=p["validate_certs"],
        timeout=p["timeout"],
        retries=p["retries"],
    )
