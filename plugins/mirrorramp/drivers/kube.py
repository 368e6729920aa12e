"""A driver for a route object of the Kubernetes API: the mirror lives in the object, the ramp
state in its annotation.

The route API (routes.RouteApi: virtualservice for the istio driver, httproute for the
gateway-api driver) says where the mirror lives; this module only reads and patches. Every
write is one JSON patch that also sets metadata.resourceVersion to the value read: the API
server refuses it with 409 when another writer came first, so two runs never both advance. Every
write carries the field manager FIELD_MANAGER: managedFields book the state annotation and the
route list (spec.http, spec.rules: atomic lists) to the ramp, so a server-side apply of the
manifests by another manager meets a conflict there instead of taking them silently (a forced
apply still takes them, and with them the mirror).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirrorramp import httproute, virtualservice
from mirrorramp.drivers.base import TargetSnapshot
from mirrorramp.errors import ConfigError, ConflictError, DriverError
from mirrorramp.routes import (
    MIRROR_RULE_NAME,
    STATE_ANNOTATION,
    RouteApi,
    mirror_drift,
    route_api_for_kind,
)
from mirrorramp.state import RampState

FIELD_MANAGER = "mirror-ramp"


@dataclass(frozen=True)
class KubeConnection:
    """The connection options of kubernetes.core; None falls back to K8S_AUTH_* and kubeconfig."""

    kubeconfig: str | None = None
    context: str | None = None
    host: str | None = None
    api_key: str | None = None
    validate_certs: bool | None = None
    ca_cert: str | None = None
    timeout: float = 30.0

    def __repr__(self) -> str:  # never show the token
        return f"KubeConnection(host={self.host!r}, context={self.context!r}, kubeconfig={self.kubeconfig!r})"

    def with_environment(self) -> KubeConnection:
        """Fill unset options from the K8S_AUTH_* variables, as kubernetes.core does."""

        def env(name: str) -> str | None:
            return os.environ.get(f"K8S_AUTH_{name}") or None

        verify = self.validate_certs
        if verify is None and env("VERIFY_SSL") is not None:
            verify = env("VERIFY_SSL").lower() in ("1", "true", "yes", "on")
        return KubeConnection(
            kubeconfig=self.kubeconfig or env("KUBECONFIG"),
            context=self.context or env("CONTEXT"),
            host=self.host or env("HOST"),
            api_key=self.api_key or env("API_KEY"),
            validate_certs=verify,
            ca_cert=self.ca_cert or env("SSL_CA_CERT"),
            timeout=self.timeout,
        )


def api_client(conn: KubeConnection):
    """A kubernetes ApiClient for `conn` (host + token, a kubeconfig, or in-cluster)."""
    from kubernetes import client, config  # imported here: only the Kubernetes drivers need it

    conn = conn.with_environment()
    default_kubeconfig = Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]).expanduser()
    try:
        if conn.kubeconfig or (not conn.host and default_kubeconfig.exists()):
            configuration = client.Configuration()
            config.load_kube_config(
                config_file=str(conn.kubeconfig or default_kubeconfig),
                context=conn.context,
                client_configuration=configuration,
                persist_config=False,
            )
        elif conn.host:
            configuration = client.Configuration()
            configuration.host = conn.host
        else:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
    except (config.ConfigException, OSError, ValueError) as e:
        raise ConfigError(f"cannot load the Kubernetes connection ({conn!r}): {e}") from e
    if conn.host:
        configuration.host = conn.host
    if conn.api_key:
        configuration.api_key = {"authorization": f"Bearer {conn.api_key}"}
    if conn.validate_certs is not None:
        configuration.verify_ssl = conn.validate_certs
    if conn.ca_cert:
        configuration.ssl_ca_cert = conn.ca_cert
    # urllib3's default would retry a timed-out read 3 times: a hung API server would hold the run
    # (and an emergency stop) for minutes. One retry, then a clear error.
    configuration.retries = 1
    return client.ApiClient(configuration)


class KubeRouteDriver:
    """Reads and patches one route object (of `route_api`) through the Kubernetes API."""

    def __init__(
        self,
        route_api: RouteApi,
        api_client,
        namespace: str,
        name: str,
        version: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        from kubernetes import client

        self._route_api = route_api
        self._api = client.CustomObjectsApi(api_client)
        self._namespace = namespace
        self._name = name
        self._version = version or route_api.VERSION
        self._timeout = timeout
        self._last: dict | None = None
        self._preloaded: dict | DriverError | None = None
        self.description = f"{route_api.KIND} {namespace}/{name}"
        self.atomic = True  # one JSON patch sets the mirror rule and the state annotation

    def _call(self, what: str, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self._timeout, **kwargs)
        except ApiException as e:
            if e.status == 409:
                raise ConflictError(f"{self.description} changed while this run worked on it (409 Conflict)") from e
            reason = _status_message(e)
            raise DriverError(f"{what} {self.description} failed: HTTP {e.status} {reason}") from e
        except (HTTPError, OSError) as e:
            unknown = "" if what == "reading" else "; the write may have landed: the next run reads it back"
            raise DriverError(f"{what} {self.description} failed: {type(e).__name__}: {e}{unknown}") from e

    def _list_key(self) -> tuple[str, str, str, str]:
        """What one LIST serves: the objects of one API group, version, plural and namespace."""
        api = self._route_api
        return (api.GROUP, self._version, api.PLURAL, self._namespace)

    def preload(self, route: dict | DriverError) -> None:
        """The object as a LIST of its namespace returned it: the next read uses it, not a GET.
        Or the LIST's failure to reach the API server: the next read fails with it at once.

        Only the next one: a read after a write (the check that it landed) or after a conflict
        asks the API server again.
        """
        self._preloaded = route

    def read(self) -> TargetSnapshot:
        route, self._preloaded = self._preloaded, None
        if isinstance(route, DriverError):
            raise DriverError(f"reading {self.description} failed: not tried, the LIST before it failed: {route}")
        if route is None:
            group, version, plural, namespace = self._list_key()
            route = self._call(
                "reading", self._api.get_namespaced_custom_object, group, version, namespace, plural, self._name
            )
        self._last = route
        annotations = (route.get("metadata") or {}).get("annotations") or {}
        raw = annotations.get(STATE_ANNOTATION)
        state = RampState.from_json(raw) if raw else RampState.initial()
        percent = self._route_api.read_mirror_percent(route)
        return TargetSnapshot(
            state=state,
            percent=percent,
            version=str(route["metadata"].get("resourceVersion", "")),
            mirror_settings=self._route_api.mirror_settings(route),
            mirror_drift=mirror_drift(self._route_api, route, percent),
        )

    def write(self, current: TargetSnapshot, state: RampState, percent: float, *, dry_run: bool) -> TargetSnapshot:
        if self._last is None or str(self._last["metadata"].get("resourceVersion", "")) != current.version:
            raise DriverError(f"{self.description}: write without a matching read")
        route = self._last
        pointer = self._route_api.mirror_rule_pointer(route)
        new_rule = _at_pointer(self._route_api.with_mirror_percent(route, percent), pointer)
        patch: list[dict[str, Any]] = [
            # Guards: the rule we computed from is still where it was; the object is unchanged.
            {"op": "test", "path": f"{pointer}/name", "value": MIRROR_RULE_NAME},
            {"op": "replace", "path": "/metadata/resourceVersion", "value": current.version},
            {"op": "replace", "path": pointer, "value": new_rule},
        ]
        state_json = state.to_json()
        if (route.get("metadata") or {}).get("annotations") is None:
            patch.append({"op": "add", "path": "/metadata/annotations", "value": {STATE_ANNOTATION: state_json}})
        else:
            key = STATE_ANNOTATION.replace("~", "~0").replace("/", "~1")
            patch.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": state_json})
        kwargs: dict[str, Any] = {"_content_type": "application/json-patch+json", "field_manager": FIELD_MANAGER}
        if dry_run:
            kwargs["dry_run"] = "All"
        group, version, plural, namespace = self._list_key()
        result = self._call(
            "patching",
            self._api.patch_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            self._name,
            patch,
            **kwargs,
        )
        if not dry_run:
            self._last = result
        return TargetSnapshot(
            state=state,
            percent=self._route_api.read_mirror_percent(result),
            version=str(result["metadata"].get("resourceVersion", "")),
            mirror_settings=self._route_api.mirror_settings(result),
        )


class IstioDriver(KubeRouteDriver):
    """The istio driver: the mirror in a VirtualService."""

    def __init__(self, api_client, namespace: str, name: str, version: str | None = None, timeout: float = 15.0):
        super().__init__(virtualservice, api_client, namespace, name, version, timeout)


class GatewayApiDriver(KubeRouteDriver):
    """The gateway-api driver: the mirror in an HTTPRoute's RequestMirror filters."""

    def __init__(self, api_client, namespace: str, name: str, version: str | None = None, timeout: float = 15.0):
        super().__init__(httproute, api_client, namespace, name, version, timeout)


def _at_pointer(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901) made by a route API: /spec/http/3, /spec/rules/0."""
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def preload_namespaces(drivers: Iterable[KubeRouteDriver]) -> None:
    """One LIST per namespace and route API for all `drivers`, instead of a GET each.

    Each driver's next read uses its object from the list. A LIST the server refuses, or one
    without the object, leaves that driver to its own GET, which reports its own error; a LIST
    that gets no answer fails those reads at once.
    """
    by_list: dict[tuple[str, str, str, str], list[KubeRouteDriver]] = defaultdict(list)
    for driver in drivers:
        by_list[driver._list_key()].append(driver)
    for (group, version, plural, namespace), same_list in by_list.items():
        if len(same_list) < 2:
            continue  # a GET costs no more than a LIST
        first = same_list[0]
        try:
            listed = first._call("listing", first._api.list_namespaced_custom_object, group, version, namespace, plural)
        except DriverError as e:
            if _answered(e):
                continue  # the server said no (RBAC may allow get, not list): a GET each
            # No answer at all (timed out, refused): a GET each would wait as long, one after the
            # other; the pass fails now for these services and the next run tries again.
            for driver in same_list:
                driver.preload(e)
            continue
        items = {(item.get("metadata") or {}).get("name"): item for item in listed.get("items") or []}
        for driver in same_list:
            if driver._name in items:
                driver.preload(items[driver._name])


def list_live_routes(
    api_client, collections: Iterable[tuple[str | None, str, str | None]], timeout: float = 15.0
) -> list[dict]:
    """The live routes of each route collection, (apiVersion, kind, namespace) as
    routes.route_collections gives them: one LIST each, of every namespace where the namespace is
    None. What mirror_apply_manifests reads to keep the mirrors the ramp set."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = client.CustomObjectsApi(api_client)
    live: list[dict] = []
    for api_version, kind, namespace in collections:
        route_api = route_api_for_kind(kind)
        assert route_api is not None  # route_collections yields route kinds only
        group, _, version = (api_version or "").rpartition("/")
        group, version = group or route_api.GROUP, version or route_api.VERSION
        where = f"in {namespace}" if namespace else "in every namespace"
        try:
            if namespace:
                listed = api.list_namespaced_custom_object(
                    group, version, namespace, route_api.PLURAL, _request_timeout=timeout
                )
            else:
                listed = api.list_cluster_custom_object(group, version, route_api.PLURAL, _request_timeout=timeout)
        except ApiException as e:
            raise DriverError(f"listing {kind} {where} failed: HTTP {e.status} {_status_message(e)}") from e
        except (HTTPError, OSError) as e:
            raise DriverError(f"listing {kind} {where} failed: {type(e).__name__}: {e}") from e
        live.extend(listed.get("items") or [])
    return live


def _answered(error: DriverError) -> bool:
    """The API server answered (an HTTP status), as opposed to no answer (a timeout, a refused connection)."""
    from kubernetes.client.exceptions import ApiException

    return isinstance(error.__cause__, ApiException)


def _status_message(e) -> str:
    """The `message` of a Kubernetes Status body, else the HTTP reason."""
    try:
        return json.loads(e.body).get("message") or e.reason
    except (TypeError, ValueError, AttributeError):
        return str(e.reason)
