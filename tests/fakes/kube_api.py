"""A test double of the Kubernetes API server, faithful to what kubernetes.core and the
kubernetes python client ask of it (see shared/notes/kube-api-double.md).

Real HTTP/1.1 on 127.0.0.1 (plain http, bearer token), one thread per connection. Served:

- discovery: /version, /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>;
- get, list (label and field selectors, all-namespaces paths), create, replace, delete,
  deletecollection and patch (merge, JSON, strategic merge for built-in kinds, server-side
  apply), each write with ``dryRun=All``;
- uid, resourceVersion (one global counter), creationTimestamp and generation; optimistic
  concurrency on metadata.resourceVersion; no-op writes change nothing (same bytes back);
- custom resources (Istio, prometheus-operator) validated against the cloudcoil pydantic
  models, the way a structural CRD schema would: a wrong type is 422 Invalid naming the field;
  an unknown field is pruned with a ``Warning`` header (``fieldValidation=Warn``, the server
  default), pruned silently (``Ignore``) or refused with 400 (``Strict``), as a real server does;
- Gateway API HTTPRoute (gateway.networking.k8s.io, v1 and v1beta1, one store), core v1
  Services among the other built-in kinds;
- field ownership, ``metadata.managedFields`` (FieldsV1), as structured-merge-diff keeps it:
  every write has a field manager (``fieldManager``, else the User-Agent up to its first "/":
  "OpenAPI-Generator" for the python client and kubernetes.core). A create, replace or non-apply
  patch is an ``Update``: its manager takes every field whose value it changed, from whoever
  owned it, and never conflicts. A server-side apply (``Apply``) conflicts (409, "Apply failed
  with N conflict(s): conflict with "m" using <apiVersion>: .path", causes FieldManagerConflict)
  on every field it would change that another entry owns (the applier's own Update entry
  counts as another); ``force=true`` takes those fields; a field the applier applied before and
  leaves out now is removed unless another manager owns it. Maps are owned key by key; lists are
  atomic (owned and replaced whole) unless typed: HTTPRoute's header-modifier add/set and match
  headers/queryParams are maps by name, header-modifier remove and CORS lists are sets (all of
  them inside the atomic spec.rules, so owned with it), metadata finalizers a set,
  ownerReferences a map by uid, and the built-in kinds' keyed lists above maps by their key.
  So an HTTPRoute's spec.rules, where RequestMirror lives, has one owner at a time: whoever
  changed it last. A no-op write leaves managedFields (and their times) unchanged.
  kubernetes.core 6.2 sends a server-side apply (fieldManager, force=true|false) only for
  ``apply: true`` with ``server_side_apply``; ``apply: true`` alone is a merge patch carrying
  every list that differs from the live object (an Update by "OpenAPI-Generator"), and
  ``server_side_apply`` without ``apply: true`` is ignored (GET, then a strategic or merge patch).

Not modelled (a real server does these; tests must not rely on them here):

- watch (405), pagination (limit/continue are ignored), subresources (status, scale), OpenAPI;
- defaulting of built-in kinds (a Deployment gets no strategy, no template defaults, a Service
  no clusterIP); schema validation of built-in kinds beyond apiVersion, kind and metadata.name;
- Istio's validating webhook (e.g. mirrorPercentage above 100 is accepted here);
- strategic merge is a simplification: an RFC 7386 merge in which the usual lists of objects
  (containers, initContainers, env, volumes, volumeMounts, ports, imagePullSecrets, conditions,
  hostAliases) merge by their key, ``$patch: delete|replace`` is honoured, other directives
  (``$setElementOrder``, ``$retainKeys``, ``$deleteFromPrimitiveList``) are ignored;
- field ownership, simplified: a manager owns leaves only (no "." entries for maps, only for
  map-list items when rendered); Update entries are not split by apiVersion; managedFields sent
  by a client are ignored (never reset); the server-side-apply upgrade of client-side-apply
  ownership (``kubectl-client-side-apply``, ``before-first-apply``) is not modelled; status has no
  subresource to own it through; HTTPRoute is not schema-validated here
  (tests/support/crd_validation.py checks rendered routes against the upstream CRD);
- deleting a namespace removes it and everything in it at once (no Terminating phase);
- DELETE of a custom resource or a namespace returns the object; of another built-in kind, a
  Status of Success (as a real server does for kinds without graceful deletion).

On its own, for a program that must not import a test module (the scale benchmark):

    python -m tests.fakes.kube_api --work-dir DIR [--port N] [--request-log FILE]

serves on 127.0.0.1 (port 0, the default: a free one), writes DIR/kubeconfig (the URL and the
token; DIR/tmp is the TMPDIR its clients' discovery caches belong in), prints its URL on stdout
once it serves, and stops on SIGTERM or SIGINT. With --request-log it appends one JSON object
per line for every request, written before the answer goes out: ``at`` (time.time() at arrival,
comparable with other processes' clocks), ``seconds`` (to the answer), ``method``, ``path``
(without the query), ``kind`` (request_kind) and ``status``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import importlib
import json
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import jsonpatch
import jsonpointer
import pydantic
import yaml
from kubernetes import config as kube_config

KUBE_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# Namespaces a fresh cluster (with Istio installed) already has.
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "istio-system")

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update"]
NAMESPACE_VERBS = ["create", "delete", "get", "list", "patch", "update"]


@dataclass(frozen=True)
class ResourceType:
    """One group/resource, served at every version in `versions` (preferred first)."""

    group: str
    versions: tuple[str, ...]
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    builtin: bool = False
    status_subresource: bool = False
    # "module:Class" of the cloudcoil model per version (custom resources only).
    models: tuple[tuple[str, str], ...] = ()

    @property
    def qualified(self) -> str:
        """The group-qualified resource of error messages: `virtualservices.networking.istio.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def group_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def model_path(self, version: str) -> str | None:
        return dict(self.models).get(version)


def _istio(group: str, versions: tuple[str, ...], plural: str, kind: str, short: tuple[str, ...]):
    package = {
        "networking.istio.io": "networking",
        "security.istio.io": "security",
        "telemetry.istio.io": "telemetry",
    }[group]
    return ResourceType(
        group=group,
        versions=versions,
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        short_names=short,
        status_subresource=True,
        models=tuple((v, f"cloudcoil.models.istio.{package}.{v}:{kind}") for v in versions),
    )


def _prometheus(plural: str, kind: str, short: tuple[str, ...]) -> ResourceType:
    return ResourceType(
        group="monitoring.coreos.com",
        versions=("v1",),
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        short_names=short,
        models=(("v1", f"cloudcoil.models.prometheus_operator.v1:{kind}"),),
    )


ISTIO_NETWORKING_VERSIONS = ("v1", "v1beta1", "v1alpha3")

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        ("v1",),
        "namespaces",
        "namespace",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        builtin=True,
        status_subresource=True,
    ),
    ResourceType("", ("v1",), "configmaps", "configmap", "ConfigMap", short_names=("cm",), builtin=True),
    ResourceType(
        "",
        ("v1",),
        "services",
        "service",
        "Service",
        short_names=("svc",),
        builtin=True,
        status_subresource=True,
    ),
    ResourceType("", ("v1",), "secrets", "secret", "Secret", builtin=True),
    ResourceType(
        "apps",
        ("v1",),
        "deployments",
        "deployment",
        "Deployment",
        short_names=("deploy",),
        builtin=True,
        status_subresource=True,
    ),
    ResourceType(
        "autoscaling",
        ("v2",),
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        builtin=True,
        status_subresource=True,
    ),
    _istio("networking.istio.io", ISTIO_NETWORKING_VERSIONS, "virtualservices", "VirtualService", ("vs",)),
    _istio("networking.istio.io", ISTIO_NETWORKING_VERSIONS, "destinationrules", "DestinationRule", ("dr",)),
    _istio("networking.istio.io", ("v1alpha3",), "envoyfilters", "EnvoyFilter", ()),
    _istio("networking.istio.io", ISTIO_NETWORKING_VERSIONS, "gateways", "Gateway", ("gw",)),
    _istio("networking.istio.io", ISTIO_NETWORKING_VERSIONS, "serviceentries", "ServiceEntry", ("se",)),
    _istio("security.istio.io", ("v1",), "authorizationpolicies", "AuthorizationPolicy", ("ap",)),
    _istio("security.istio.io", ("v1",), "peerauthentications", "PeerAuthentication", ("pa",)),
    _istio("telemetry.istio.io", ("v1",), "telemetries", "Telemetry", ("telemetry",)),
    # Gateway API v1.6.1 standard channel: HTTPRoute is served at v1 and v1beta1 (one store).
    ResourceType(
        "gateway.networking.k8s.io",
        ("v1", "v1beta1"),
        "httproutes",
        "httproute",
        "HTTPRoute",
        status_subresource=True,
    ),
    _prometheus("servicemonitors", "ServiceMonitor", ("smon",)),
    _prometheus("podmonitors", "PodMonitor", ("pmon",)),
    _prometheus("prometheusrules", "PrometheusRule", ("promrule",)),
)

# Versions of each named group, preferred first (core "" is served under /api).
GROUP_VERSIONS: dict[str, tuple[str, ...]] = {}
for _rt in RESOURCE_TYPES:
    _known = GROUP_VERSIONS.setdefault(_rt.group, ())
    GROUP_VERSIONS[_rt.group] = _known + tuple(v for v in _rt.versions if v not in _known)
GROUP_VERSIONS["networking.istio.io"] = ISTIO_NETWORKING_VERSIONS

# Lists of objects that strategic merge (and our apply) merge by a key instead of replacing.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "hostAliases": "ip",
    "ports": "port",  # containerPort for container ports, see _merge_key()
}

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class ApiError(Exception):
    """An answer other than success: becomes a `Status` body with this code."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType, name: str, kind: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = kind or rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.qualified} "{name}" not found', details=_details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, f'{rt.qualified} "{name}" already exists', reason="AlreadyExists", details=_details(rt, name))


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details=_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[dict[str, str]], *, by_kind: bool = True) -> ApiError:
    """422 Invalid, worded as the API server words it: `Kind.group "name" is invalid: field: msg`."""
    subject = rt.qualified_kind if by_kind else rt.qualified
    parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(rt, name, rt.kind if by_kind else None)
    details["causes"] = causes
    return ApiError(422, f'{subject} "{name}" is invalid: {summary}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unsupported_media(accepted: Iterable[str]) -> ApiError:
    return ApiError(
        415,
        "the body of the request was in an unknown format - accepted media types include: " + ", ".join(accepted),
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def field_path(parts: Iterable[str | int]) -> str:
    """('spec', 'http', 0, 'mirrorPercentage') -> 'spec.http[0].mirrorPercentage'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


# ---------------------------------------------------------------------------------------------
# Patch semantics


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(list_name: str, items: list[Any]) -> str | None:
    key = MERGE_KEYS.get(list_name)
    if key is None or not all(isinstance(item, dict) for item in items):
        return None
    if list_name == "ports" and any("containerPort" in item for item in items):
        return "containerPort"
    return key


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str, merge: Callable) -> list[Any]:
    result = copy.deepcopy(current)
    for item in patch:
        index = next((i for i, old in enumerate(result) if old.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(merge({}, item))
        else:
            result[index] = merge(result[index], item)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A simplified strategic merge patch (see the module docstring for what it leaves out)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value)
        elif isinstance(value, list) and (merge_key := _merge_key(key, value)):
            current = result.get(key) if isinstance(result.get(key), list) else []
            result[key] = _merge_keyed_list(current, value, merge_key, strategic_merge_patch)
        else:
            result[key] = copy.deepcopy(value)
    return result


# ---------------------------------------------------------------------------------------------
# Field ownership (metadata.managedFields) and server-side apply
#
# A field path is a tuple of FieldsV1 path elements: "f:<name>" (a map key), "k:<json key>" (an
# item of a list of type map, by its key fields), "v:<json value>" (an item of a list of type
# set). A manager owns leaves: scalars, empty maps, whole atomic lists, set items, and the
# leaves inside map-list items. Lists are atomic unless LIST_TYPES (or, for built-in kinds,
# MERGE_KEYS) names them: the default of a CRD schema without x-kubernetes-list-type.

FieldPath = tuple[str, ...]

# Lists of type map or set, by the field names leading to them (list indices left out). Gateway
# API v1.6.1 standard HTTPRoute: every other list (rules, matches, filters, backendRefs,
# parentRefs, hostnames) is atomic, owned whole by whoever set it last.
_HEADER_MODIFIERS = ("requestHeaderModifier", "responseHeaderModifier")
_CORS_SETS = ("allowHeaders", "allowMethods", "allowOrigins", "exposeHeaders")
LIST_TYPES: dict[str, dict[tuple[str, str], tuple[str, tuple[str, ...]]]] = {
    "gateway.networking.k8s.io": {
        **{(modifier, verb): ("map", ("name",)) for modifier in _HEADER_MODIFIERS for verb in ("add", "set")},
        **{(modifier, "remove"): ("set", ()) for modifier in _HEADER_MODIFIERS},
        **{("cors", name): ("set", ()) for name in _CORS_SETS},
        ("matches", "headers"): ("map", ("name",)),
        ("matches", "queryParams"): ("map", ("name",)),
    },
}
# metadata lists of every kind (ObjectMeta).
METADATA_LIST_TYPES = {("metadata", "finalizers"): ("set", ()), ("metadata", "ownerReferences"): ("map", ("uid",))}
# ObjectMeta fields a manager can own; the rest of metadata is the server's.
OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


def list_type(rt: ResourceType, names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """("atomic" | "map" | "set", map keys) of the list reached by `names`."""
    if names[:1] == ("metadata",) and names in METADATA_LIST_TYPES:
        return METADATA_LIST_TYPES[names]
    if rt.builtin and names and names[-1] in MERGE_KEYS:
        if names[-1] == "ports":
            in_container = any(name.endswith("ontainers") for name in names)
            return "map", ("containerPort", "protocol") if in_container else ("port", "protocol")
        return "map", (MERGE_KEYS[names[-1]],)
    return LIST_TYPES.get(rt.group, {}).get(names[-2:], ("atomic", ()))


def _item_key(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    return json.dumps({k: item[k] for k in keys if k in item}, separators=(",", ":"), sort_keys=True)


def _is_keyed(value: Any, kind: str) -> bool:
    return kind == "map" and isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _collect(value: Any, rt: ResourceType, names: tuple[str, ...], path: FieldPath, out: set[FieldPath]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _collect(child, rt, (*names, key), (*path, f"f:{key}"), out)
        return
    if isinstance(value, list):
        kind, keys = list_type(rt, names)
        if _is_keyed(value, kind):
            for item in value:
                _collect(item, rt, names, (*path, f"k:{_item_key(item, keys)}"), out)
            return
        if kind == "set":
            out.update((*path, f"v:{json.dumps(item, separators=(',', ':'))}") for item in value)
            return
    out.add(path)


def fieldset(obj: dict[str, Any], rt: ResourceType) -> set[FieldPath]:
    """The leaves a manager can own in obj (apiVersion, kind, server metadata and a status
    served by its own subresource left out, as the API server leaves them out)."""
    out: set[FieldPath] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status" and rt.status_subresource):
            continue
        if key == "metadata":
            for meta_key in OWNED_METADATA:
                if meta_key in (value or {}):
                    _collect(value[meta_key], rt, ("metadata", meta_key), ("f:metadata", f"f:{meta_key}"), out)
            continue
        _collect(value, rt, (key,), (f"f:{key}",), out)
    return out


_MISSING = object()


def _step(container: Any, element: str) -> Any:
    kind, _, text = element.partition(":")
    if kind == "f":
        return container.get(text, _MISSING) if isinstance(container, dict) else _MISSING
    if not isinstance(container, list):
        return _MISSING
    wanted = json.loads(text)
    if kind == "k":
        for item in container:
            if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
                return item
        return _MISSING
    return wanted if wanted in container else _MISSING


def value_at(obj: Any, path: FieldPath) -> Any:
    for element in path:
        obj = _step(obj, element)
        if obj is _MISSING:
            break
    return obj


def remove_field(obj: dict[str, Any], path: FieldPath) -> None:
    """Remove the leaf at path, then the maps and map-list items it leaves empty."""
    parents = [obj]
    for element in path[:-1]:
        parents.append(_step(parents[-1], element))
        if parents[-1] is _MISSING:
            return
    for depth in range(len(path) - 1, -1, -1):
        container, element = parents[depth], path[depth]
        # The leaf by its path; a parent by identity (an emptied map-list item has lost its key).
        child = _step(container, element) if depth == len(path) - 1 else parents[depth + 1]
        if child is _MISSING:
            return
        if depth < len(path) - 1 and child not in ({}, []):
            return  # still holds fields of others
        if isinstance(container, dict):
            del container[element[2:]]
        else:
            del container[next(i for i, item in enumerate(container) if item is child or item == child)]
        if depth == 1 and container == {} and path[0] in ("f:spec", "f:metadata"):
            return  # keep the top-level map itself


def path_text(path: FieldPath) -> str:
    """A field path as the API server words it in a conflict: .spec.rules, .x[name="a"].y."""
    out = ""
    for element in path:
        kind, _, text = element.partition(":")
        if kind == "f":
            out += f".{text}"
        elif kind == "k":
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(text).items()) + "]"
        else:
            out += f"[={text}]"
    return out


def apply_merge(rt: ResourceType, live: Any, applied: Any, names: tuple[str, ...] = ()) -> Any:
    """Merge an apply configuration into the live object: maps merge by key, lists of type map
    by their keys and of type set by value; atomic lists and scalars are replaced."""
    if isinstance(applied, dict):
        result = copy.deepcopy(live) if isinstance(live, dict) else {}
        for key, value in applied.items():
            if value is not None:  # a null in an apply configuration sets nothing
                result[key] = apply_merge(rt, result.get(key), value, (*names, key))
        return result
    if isinstance(applied, list) and isinstance(live, list):
        kind, keys = list_type(rt, names)
        if _is_keyed(applied, kind) and _is_keyed(live, kind):
            merged = copy.deepcopy(live)
            for item in applied:
                index = next((i for i, old in enumerate(merged) if _item_key(old, keys) == _item_key(item, keys)), None)
                if index is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[index] = apply_merge(rt, merged[index], item, names)
            return merged
        if kind == "set":
            return copy.deepcopy(live) + [copy.deepcopy(item) for item in applied if item not in live]
    return copy.deepcopy(applied)


@dataclass(frozen=True)
class ManagedEntry:
    """One metadata.managedFields entry: what `manager` owns through `operation`."""

    manager: str
    operation: str  # "Apply" or "Update"
    api_version: str
    time: str
    fields: frozenset[FieldPath]

    def render(self) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for path in sorted(self.fields):
            node = tree
            for element in path:
                node = node.setdefault(element, {})
                if element.startswith("k:"):
                    node.setdefault(".", {})  # the item itself, as FieldsV1 marks it
        return {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": tree,
        }


def _retimed(entry: ManagedEntry, fields: set[FieldPath], api_version: str | None = None) -> ManagedEntry:
    """entry owning `fields`: a new time only when what it owns changed."""
    if frozenset(fields) == entry.fields and api_version in (None, entry.api_version):
        return entry
    return ManagedEntry(entry.manager, entry.operation, api_version or entry.api_version, _now(), frozenset(fields))


def record_update(
    entries: list[ManagedEntry],
    manager: str,
    api_version: str,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    rt: ResourceType,
) -> list[ManagedEntry]:
    """Ownership after an Update (create, replace, any patch but apply) by `manager`: it takes
    every field whose value it changed, from whoever owned it (an update never conflicts)."""
    new_fields = fieldset(new, rt)
    old_view = old or {}
    changed = {path for path in new_fields if value_at(old_view, path) != value_at(new, path)}
    # The writer's own entry keeps its place (the API server does not reorder managedFields): a
    # write that changes nothing must come back exactly as stored, entries and order included.
    out: list[ManagedEntry] = []
    found = False
    for entry in entries:
        if (entry.manager, entry.operation) == (manager, "Update"):
            found = True
            owned = (set(entry.fields) | changed) & new_fields
            if owned:
                out.append(_retimed(entry, owned, api_version))
            continue
        kept = (set(entry.fields) - changed) & new_fields
        if kept:
            out.append(_retimed(entry, kept))
    if not found and changed:
        out.append(ManagedEntry(manager, "Update", api_version, _now(), frozenset(changed)))
    return out


def apply_conflicts(
    entries: list[ManagedEntry], manager: str, applied_fields: set[FieldPath], live: Any, applied: Any
) -> list[tuple[ManagedEntry, FieldPath]]:
    """The fields the apply would change that another manager owns (the applier's own Update
    entry included, as the API server counts it)."""
    conflicts = []
    for entry in entries:
        if (entry.manager, entry.operation) == (manager, "Apply"):
            continue
        for path in sorted(entry.fields & applied_fields):
            if value_at(live, path) != value_at(applied, path):
                conflicts.append((entry, path))
    return conflicts


def conflict_error(rt: ResourceType, name: str, conflicts: list[tuple[ManagedEntry, FieldPath]]) -> ApiError:
    """409 as the API server words an apply conflict."""
    count = len(conflicts)
    if count == 1:
        entry, path = conflicts[0]
        summary = f'Apply failed with 1 conflict: conflict with "{entry.manager}" using {entry.api_version}: '
        summary += path_text(path)
    else:
        lines = [f'conflict with "{e.manager}" using {e.api_version}: {path_text(p)}' for e, p in conflicts]
        summary = f"Apply failed with {count} conflicts: " + "\n".join(lines)
    details = _details(rt, name)
    details["causes"] = [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{entry.manager}" using {entry.api_version}',
            "field": path_text(path),
        }
        for entry, path in conflicts
    ]
    return ApiError(409, summary, reason="Conflict", details=details)


# ---------------------------------------------------------------------------------------------
# Selectors


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !exists
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        return not present or value not in self.values  # notin


_LABEL_KEY = r"(?:[a-z0-9A-Z.\-]+/)?[a-z0-9A-Z]([a-z0-9A-Z_.\-]*[a-z0-9A-Z])?"
_LABEL_VALUE = r"(?:[a-z0-9A-Z]([a-z0-9A-Z_.\-]*[a-z0-9A-Z])?)?"
_SET_REQ = re.compile(rf"^\s*(?P<key>{_LABEL_KEY})\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)\s*$")
_EQ_REQ = re.compile(rf"^\s*(?P<key>{_LABEL_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_LABEL_VALUE})\s*$")
_EXISTS_REQ = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_LABEL_KEY})\s*$")


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


def parse_label_selector(selector: str) -> list[Requirement]:
    requirements = []
    for part in _split_selector(selector):
        if match := _SET_REQ.match(part):
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(Requirement(match["key"], match["op"], values))
        elif match := _EQ_REQ.match(part):
            op = "!=" if match["op"] == "!=" else "="
            requirements.append(Requirement(match["key"], op, (match["value"],)))
        elif match := _EXISTS_REQ.match(part):
            requirements.append(Requirement(match["key"], "!exists" if match["neg"] else "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}: found unexpected input")
    return requirements


def parse_field_selector(selector: str) -> list[tuple[str, str, str]]:
    out = []
    for part in _split_selector(selector):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not match:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        name, op, value = match.groups()
        if name not in ("metadata.name", "metadata.namespace"):
            raise bad_request(f'field label not supported: "{name}"')
        out.append((name, "!=" if op == "!=" else "=", value))
    return out


def _field_matches(obj: dict[str, Any], selectors: list[tuple[str, str, str]]) -> bool:
    for name, op, value in selectors:
        actual = obj.get("metadata", {}).get(name.split(".", 1)[1], "")
        if (actual == value) != (op == "="):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Custom resource validation (the structural schema of a CRD, approximated by cloudcoil models)

_MODEL_CACHE: dict[str, Any] = {}
_MODEL_LOCK = threading.Lock()

_TYPE_NAMES = {
    "float_type": "number",
    "float_parsing": "number",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "string_type": "string",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "list_type": "array",
    "tuple_type": "array",
}


def _model(path: str) -> Any:
    with _MODEL_LOCK:
        if path not in _MODEL_CACHE:
            module, cls = path.split(":")
            _MODEL_CACHE[path] = getattr(importlib.import_module(module), cls)
        return _MODEL_CACHE[path]


def load_preferred_models() -> None:
    """Import the model of every custom resource's preferred version now, not at its kind's first
    write: a real API server has its CRD schemas loaded before it serves, and the imports (5-7 s
    for Istio's networking v1 and for prometheus-operator's v1, on a quiet machine) landed inside
    the apply that a benchmark times. Other versions stay lazy (all of them took minutes)."""
    for rt in RESOURCE_TYPES:
        path = rt.model_path(rt.versions[0])
        if path is not None:
            _model(path)


def _walk_loc(obj: Any, loc: tuple[Any, ...], missing: bool) -> tuple[list[str | int], Any]:
    """Keep the parts of a pydantic error location that name fields of the input (union
    members and validator tags are dropped); a missing field is the last part of its loc."""
    parts: list[str | int] = []
    current = obj
    for index, part in enumerate(loc):
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            parts.append(part)
            current = current[part]
        elif missing and index == len(loc) - 1 and isinstance(current, dict):
            parts.append(part)
            current = None
    return parts, current


def _cause(error: dict[str, Any], obj: dict[str, Any]) -> dict[str, str]:
    parts, value = _walk_loc(obj, tuple(error["loc"]), error["type"] == "missing")
    path = field_path(parts)
    kind = error["type"]
    if kind in _TYPE_NAMES:
        got = _json_type(value)
        return {
            "reason": "FieldValueTypeInvalid",
            "message": f'Invalid value: "{got}": {path} in body must be of type {_TYPE_NAMES[kind]}: "{got}"',
            "field": path,
        }
    if kind == "missing":
        return {"reason": "FieldValueRequired", "message": "Required value", "field": path}
    if kind in ("literal_error", "enum"):
        expected = str(error.get("ctx", {}).get("expected", "")).replace("'", '"')
        return {
            "reason": "FieldValueNotSupported",
            "message": f"Unsupported value: {json.dumps(value)}: supported values: {expected}",
            "field": path,
        }
    return {
        "reason": "FieldValueInvalid",
        "message": f"Invalid value: {json.dumps(value)}: {path} in body {error['msg'].lower()}",
        "field": path,
    }


def _unknown_paths(given: Any, known: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(given, dict) and isinstance(known, dict):
        for key, value in given.items():
            if key not in known:
                yield (*path, key)
            else:
                yield from _unknown_paths(value, known[key], (*path, key))
    elif isinstance(given, list) and isinstance(known, list):
        for index, (value, known_value) in enumerate(zip(given, known, strict=False)):
            yield from _unknown_paths(value, known_value, (*path, index))


def _delete_path(obj: Any, path: tuple) -> None:
    for part in path[:-1]:
        obj = obj[part]
    del obj[path[-1]]


def validate_custom_resource(
    rt: ResourceType, version: str, obj: dict[str, Any]
) -> tuple[list[dict[str, str]], list[tuple]]:
    """Validate obj (metadata aside) against the model: (causes of 422, paths of unknown fields)."""
    model_path = rt.model_path(version)
    if model_path is None:
        return [], []
    body = {key: value for key, value in obj.items() if key != "metadata"}
    try:
        model = _model(model_path).model_validate_json(json.dumps(body), strict=True)
    except pydantic.ValidationError as e:
        causes: list[dict[str, str]] = []
        for error in e.errors():
            cause = _cause(error, body)
            if all(c["field"] != cause["field"] for c in causes):  # one cause per field (unions)
                causes.append(cause)
        return causes, []
    known = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return [], list(_unknown_paths(body, known))


# ---------------------------------------------------------------------------------------------
# The request log and fault injection


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (never the Authorization header)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    status: int


@dataclass
class Fault:
    verb: str | None
    path_regex: str
    status: int | None
    times: int
    delay: float
    message: str | None
    served: int = 0

    def matches(self, method: str, path: str) -> bool:
        verb_ok = self.verb is None or self.verb.upper() == method
        return verb_ok and self.served < self.times and re.search(self.path_regex, path) is not None


# ---------------------------------------------------------------------------------------------
# Routing


@dataclass(frozen=True)
class Route:
    rt: ResourceType
    version: str
    namespace: str | None  # None: all namespaces or a cluster-scoped resource
    name: str | None

    @property
    def group_version(self) -> str:
        return self.rt.group_version(self.version)


def _find_type(group: str, version: str, plural: str) -> ResourceType | None:
    for rt in RESOURCE_TYPES:
        if rt.group == group and rt.plural == plural and version in rt.versions:
            return rt
    return None


NOT_SERVED = ApiError(404, "the server could not find the requested resource", details={})


def route(path: str) -> Route | dict[str, Any] | None:
    """A resource route, a discovery document, or None (not served)."""
    segments = [s for s in path.split("/") if s]
    if segments == ["version"]:
        return KUBE_VERSION
    if segments == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if segments == ["apis"]:
        return api_group_list()
    if segments[:1] == ["api"] and len(segments) >= 2:
        group, version, rest = "", segments[1], segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 2:
        if len(segments) == 2:
            group_doc = next((g for g in api_group_list()["groups"] if g["name"] == segments[1]), None)
            return {"kind": "APIGroup", "apiVersion": "v1", **group_doc} if group_doc else None
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        return None
    if version not in GROUP_VERSIONS.get(group, ()):
        return None
    if not rest:
        return api_resource_list(group, version)
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 2:
        return None  # subresources are not served
    rt = _find_type(group, version, rest[0])
    if rt is None or (namespace is not None and not rt.namespaced):
        return None
    name = rest[1] if len(rest) == 2 else None
    if name is not None and rt.namespaced and namespace is None:
        return None
    return Route(rt, version, namespace, name)


def request_kind(method: str, path: str) -> str:
    """LIST (a GET of a collection), GET (of one object, or discovery) or the method of a write."""
    if method != "GET":
        return method
    found = route(path)
    return "LIST" if isinstance(found, Route) and found.name is None else "GET"


def _version_entry(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}", "version": version}


def api_group_list() -> dict[str, Any]:
    groups = []
    for group, versions in GROUP_VERSIONS.items():
        if not group:
            continue
        entries = [_version_entry(group, v) for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": _version_entry(group, versions[0])})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    resources = []
    for rt in RESOURCE_TYPES:
        if rt.group != group or version not in rt.versions:
            continue
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": NAMESPACE_VERBS if rt.plural == "namespaces" else VERBS,
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# ---------------------------------------------------------------------------------------------
# The API server


@dataclass
class _Answer:
    code: int
    body: Any
    warnings: list[str] = field(default_factory=list)


class KubeApiServer:
    """The test double: start(), then talk to .url with .token (or use .kubeconfig_path)."""

    def __init__(self, work_dir: Path, *, field_validation: str = "Warn", request_log: Path | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.tmpdir = self.work_dir / "tmp"  # TMPDIR of subprocesses: their own discovery cache
        self.tmpdir.mkdir(exist_ok=True)
        self.token = secrets.token_urlsafe(32)
        # The default of fieldValidation when a request has none ("Warn", as a real server).
        self.field_validation = field_validation
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        # metadata.managedFields of each stored object, by (group, plural, namespace, name).
        self._managed: dict[tuple[str, str, str, str], list[ManagedEntry]] = {}
        self._resource_version = 0
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # One JSON line per request (see the module's docstring), appended, never reset.
        self._request_log_path = request_log
        self._request_log: TextIO | None = None
        self._request_log_lock = threading.Lock()
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, port: int = 0) -> KubeApiServer:
        """Serve on 127.0.0.1:`port` (0: a free port)."""
        api = self

        class Handler(_Handler):
            server_api = api

        if self._request_log_path is not None:
            self._request_log = self._request_log_path.open("a", encoding="utf-8")
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="kube-api-double", daemon=True)
        self._thread.start()
        self._write_kubeconfig()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._request_log_lock:
            if self._request_log is not None:
                self._request_log.close()
                self._request_log = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.work_dir / "kubeconfig"

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-api-double", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "kube-api-double",
                    "context": {"cluster": "kube-api-double", "user": "tester", "namespace": "default"},
                }
            ],
            "current-context": "kube-api-double",
        }
        path = self.kubeconfig_path
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def ansible_env(self) -> dict[str, str]:
        """Environment of ansible-playbook runs (kubernetes.core reads K8S_AUTH_*)."""
        return {
            "K8S_AUTH_HOST": self.url,
            "K8S_AUTH_API_KEY": self.token,
            "K8S_AUTH_VERIFY_SSL": "false",
            "K8S_AUTH_KUBECONFIG": str(self.kubeconfig_path),
            "TMPDIR": str(self.tmpdir),
        }

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient configured from the kubeconfig (close it after use)."""
        return kube_config.new_client_from_config(config_file=str(self.kubeconfig_path))

    # -- test controls -----------------------------------------------------------------------

    def reset(self) -> None:
        """Empty store (but the default namespaces), no faults, empty request log."""
        with self._lock:
            self._objects.clear()
            self._managed.clear()
            self._faults.clear()
            self._requests.clear()
            for name in DEFAULT_NAMESPACES:
                self.ensure_namespace(name)

    def inject(
        self,
        verb: str | None = None,
        path_regex: str = ".*",
        status: int | None = None,
        times: int = 1,
        delay: float = 0.0,
        message: str | None = None,
    ) -> Fault:
        """The next `times` requests with this verb whose path matches `path_regex` (re.search,
        query excluded) wait `delay` seconds, then fail with `status` (a Status body) or, without
        a status, are served normally."""
        fault = Fault(verb, path_regex, status, times, delay, message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def requests_matching(self, method: str | None = None, path_regex: str = ".*") -> list[RecordedRequest]:
        return [
            r for r in self.requests if (method is None or r.method == method.upper()) and re.search(path_regex, r.path)
        ]

    def _type_of(self, group: str, version: str, kind: str) -> ResourceType:
        for rt in RESOURCE_TYPES:
            if rt.group == group and rt.kind == kind and version in rt.versions:
                return rt
        raise KeyError(f"{group}/{version} {kind} is not served")

    def get_object(
        self, group: str, version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The stored object as served at group/version (a copy), or None."""
        rt = self._type_of(group, version, kind)
        with self._lock:
            obj = self._bucket(rt).get((namespace if rt.namespaced else "", name))
            return self._as_version(obj, rt, version) if obj else None

    def list_objects(self, group: str, version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        rt = self._type_of(group, version, kind)
        with self._lock:
            return [
                self._as_version(obj, rt, version)
                for (ns, _), obj in sorted(self._bucket(rt).items())
                if namespace is None or ns == namespace
            ]

    def put_object(self, obj: dict[str, Any], field_manager: str = "seed") -> dict[str, Any]:
        """Seed the store, as a create through the API by `field_manager` would."""
        group, _, version = obj["apiVersion"].rpartition("/")
        rt = self._type_of(group, version, obj["kind"])
        namespace = obj.get("metadata", {}).get("namespace") or "default"
        with self._lock:
            if rt.namespaced:
                self.ensure_namespace(namespace)
            target = Route(rt, version, namespace if rt.namespaced else None, None)
            answer = self._create(target, obj, {}, field_manager)
        return answer.body

    def ensure_namespace(self, name: str) -> None:
        rt = RESOURCE_TYPES[0]
        with self._lock:
            if ("", name) not in self._bucket(rt):
                self._create(Route(rt, "v1", None, None), {"metadata": {"name": name}}, {}, "kube-apiserver")

    @property
    def resource_version(self) -> int:
        return self._resource_version

    # -- storage -----------------------------------------------------------------------------

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], dict[str, Any]]:
        return self._objects.setdefault((rt.group, rt.plural), {})

    def _as_version(self, obj: dict[str, Any], rt: ResourceType, version: str) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.group_version(version)
        # apiVersion first, as a real server writes it
        return {"apiVersion": out.pop("apiVersion"), "kind": out.pop("kind"), **out}

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    # -- HTTP entry point --------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> _Answer:
        arrived, started = time.time(), time.perf_counter()
        parts = urlsplit(raw_path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        content_type = headers.get("Content-Type")
        answer = self._serve(method, path, query, content_type, headers, body)
        with self._lock:
            self._requests.append(RecordedRequest(method, path, query, content_type, answer.code))
        # Before the answer goes out: a client that has its answer finds the request in the log.
        self._log_request(arrived, time.perf_counter() - started, method, path, answer.code)
        return answer

    def _log_request(self, arrived: float, seconds: float, method: str, path: str, status: int) -> None:
        if self._request_log_path is None:
            return
        entry = {
            "at": arrived,
            "seconds": round(seconds, 6),
            "method": method,
            "path": path,
            "kind": request_kind(method, path),
            "status": status,
        }
        with self._request_log_lock:
            if self._request_log is not None:
                self._request_log.write(json.dumps(entry) + "\n")
                self._request_log.flush()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.served += 1
                    return fault
        return None

    def _serve(
        self, method: str, path: str, query: dict[str, str], content_type: str | None, headers: Any, body: bytes
    ) -> _Answer:
        if path in ("/healthz", "/readyz", "/livez"):
            return _Answer(200, "ok")
        if headers.get("Authorization") != f"Bearer {self.token}":
            return _Answer(401, ApiError(401, "Unauthorized").status())
        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                return _Answer(fault.status, self._fault_status(fault, path).status())
        try:
            target = route(path)
            if target is None:
                raise NOT_SERVED
            if not isinstance(target, Route):
                if method != "GET":
                    raise ApiError(405, f"the server does not allow this method on the requested resource ({method})")
                return _Answer(200, target)
            with self._lock:
                return self._dispatch(method, target, query, content_type, body, _manager(query, headers))
        except ApiError as e:
            return _Answer(e.code, e.status())

    def _fault_status(self, fault: Fault, path: str) -> ApiError:
        target = route(path)
        if isinstance(target, Route) and target.name:
            if fault.status == 409:
                error = conflict(target.rt, target.name)
                if fault.message:
                    error.message = fault.message
                return error
            details = _details(target.rt, target.name)
        else:
            details = {}
        message = fault.message or f"injected fault: {fault.status} {REASONS.get(fault.status, '')}".strip()
        return ApiError(fault.status or 500, message, details=details)

    def _dispatch(
        self, method: str, target: Route, query: dict[str, str], content_type: str | None, body: bytes, manager: str
    ) -> _Answer:
        if query.get("watch") in ("true", "1"):
            raise ApiError(405, "watch is not served by this test double")
        if "dryRun" in query and query["dryRun"] != "All":
            raise invalid(
                target.rt,
                target.name or "",
                [
                    {
                        "reason": "FieldValueNotSupported",
                        "message": f'Unsupported value: "{query["dryRun"]}": supported values: "All"',
                        "field": "dryRun",
                    }
                ],
            )
        if target.name is None:
            if method == "GET":
                return self._list(target, query)
            if method == "POST":
                return self._create(target, self._decode(body, content_type), query, manager)
            if method == "DELETE":
                return self._delete_collection(target, query, body)
        else:
            if method == "GET":
                return _Answer(200, self._as_version(self._existing(target), target.rt, target.version))
            if method == "PUT":
                return self._replace(target, self._decode(body, content_type), query, manager)
            if method == "PATCH":
                return self._patch(target, body, content_type, query, manager)
            if method == "DELETE":
                return self._delete(target, query, body)
        raise ApiError(405, f"the server does not allow this method on the requested resource ({method})")

    @staticmethod
    def _decode(body: bytes, content_type: str | None) -> Any:
        media = (content_type or "application/json").split(";")[0].strip()
        try:
            if media.endswith("yaml"):
                return yaml.safe_load(body.decode("utf-8"))
            return json.loads(body.decode("utf-8")) if body else None
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"the body of the request could not be decoded: {e}") from e

    def _existing(self, target: Route) -> dict[str, Any]:
        key = (target.namespace or "", target.name or "")
        obj = self._bucket(target.rt).get(key)
        if obj is None:
            raise not_found(target.rt, target.name or "")
        return obj

    # -- verbs -------------------------------------------------------------------------------

    def _list(self, target: Route, query: dict[str, str]) -> _Answer:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        items = []
        for (namespace, _), obj in sorted(self._bucket(target.rt).items()):
            if target.namespace is not None and namespace != target.namespace:
                continue
            obj_labels = obj.get("metadata", {}).get("labels") or {}
            if all(r.matches(obj_labels) for r in labels) and _field_matches(obj, fields):
                item = self._as_version(obj, target.rt, target.version)
                if target.rt.builtin:  # typed lists of built-in kinds carry no apiVersion/kind per item
                    item.pop("apiVersion")
                    item.pop("kind")
                items.append(item)
        return _Answer(
            200,
            {
                "apiVersion": target.group_version,
                "kind": f"{target.rt.kind}List",
                "metadata": {"resourceVersion": str(self._resource_version)},
                "items": items,
            },
        )

    def _check_type(self, target: Route, obj: Any) -> dict[str, Any]:
        rt = target.rt
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(obj)
        expected = target.group_version
        if obj.get("apiVersion") and obj["apiVersion"] != expected:
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected API "
                f"version ({expected})"
            )
        if obj.get("kind") and obj["kind"] != rt.kind:
            raise bad_request(f"the kind in the data ({obj['kind']}) does not match the expected kind ({rt.kind})")
        if not obj.get("kind") and not rt.builtin:
            raise bad_request(f"Object 'Kind' is missing in '{json.dumps(obj)}'")
        metadata = obj.get("metadata")
        if metadata is None:
            metadata = obj["metadata"] = {}
        if not isinstance(metadata, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            if metadata.get("namespace") and metadata["namespace"] != target.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            metadata["namespace"] = target.namespace
        else:
            metadata.pop("namespace", None)
        ordered = {"apiVersion": expected, "kind": rt.kind}
        ordered.update((k, v) for k, v in obj.items() if k not in ("apiVersion", "kind"))
        return ordered

    def _field_validation(self, query: dict[str, str]) -> str:
        mode = query.get("fieldValidation") or self.field_validation
        if mode not in ("Ignore", "Warn", "Strict"):
            raise bad_request(f'fieldValidation parameter unsupported: "{mode}"')
        return mode

    def _validate(self, target: Route, obj: dict[str, Any], query: dict[str, str]) -> list[str]:
        """Validate in place (prunes unknown fields); returns the warnings."""
        rt, name = target.rt, obj["metadata"].get("name", "")
        pattern = DNS1123_LABEL if rt.plural == "namespaces" else DNS1123_SUBDOMAIN
        if not pattern.match(name) or len(name) > 253:
            kind = "a lowercase RFC 1123 " + ("label" if rt.plural == "namespaces" else "subdomain")
            raise invalid(
                rt,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "message": f'Invalid value: "{name}": {kind} must consist of lower case alphanumeric '
                        "characters, '-' or '.', and must start and end with an alphanumeric character",
                        "field": "metadata.name",
                    }
                ],
            )
        if rt.builtin:
            return []
        causes, unknown = validate_custom_resource(rt, target.version, obj)
        if causes:
            raise invalid(rt, name, causes)
        if not unknown:
            return []
        mode = self._field_validation(query)
        names = [f'unknown field "{field_path(path)}"' for path in unknown]
        if mode == "Strict":
            raise bad_request(
                f'{rt.kind} in version "{target.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {', '.join(names)}"
            )
        for path in sorted(unknown, key=len, reverse=True):
            _delete_path(obj, path)
        return names if mode == "Warn" else []

    def _prepare_new(self, target: Route, obj: dict[str, Any]) -> None:
        rt = target.rt
        if rt.status_subresource:
            obj.pop("status", None)
        if rt.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        if rt.kind == "Secret":
            _fold_string_data(obj)

    def _create(
        self, target: Route, body: Any, query: dict[str, str], manager: str, operation: str = "Update"
    ) -> _Answer:
        rt = target.rt
        obj = self._check_type(target, body)
        metadata = obj["metadata"]
        if not metadata.get("name"):
            if metadata.get("generateName"):
                metadata["name"] = metadata["generateName"] + "".join(
                    secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
                )
            else:
                raise invalid(
                    rt,
                    "",
                    [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: name or generateName is required",
                            "field": "metadata.name",
                        }
                    ],
                )
        name = metadata["name"]
        if rt.namespaced and ("", target.namespace) not in self._bucket(RESOURCE_TYPES[0]):
            raise ApiError(
                404,
                f'namespaces "{target.namespace}" not found',
                details={"name": target.namespace, "kind": "namespaces"},
            )
        if metadata.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        self._prepare_new(target, obj)
        warnings = self._validate(target, obj, query)
        key = (target.namespace or "", name)
        if key in self._bucket(rt):
            raise already_exists(rt, name)
        for server_field in ("uid", "creationTimestamp", "deletionTimestamp", "managedFields", "selfLink"):
            metadata.pop(server_field, None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = _now()
        metadata["generation"] = 1
        owned = fieldset(obj, rt)
        entries = [ManagedEntry(manager, operation, target.group_version, _now(), frozenset(owned))] if owned else []
        metadata["managedFields"] = [entry.render() for entry in entries]
        if query.get("dryRun") != "All":
            metadata["resourceVersion"] = self._next_resource_version()
            self._bucket(rt)[key] = copy.deepcopy(obj)
            self._managed[(rt.group, rt.plural, *key)] = entries
        return _Answer(201, self._as_version(obj, rt, target.version), warnings)

    def _replace(self, target: Route, body: Any, query: dict[str, str], manager: str) -> _Answer:
        rt = target.rt
        obj = self._check_type(target, body)
        name = obj["metadata"].get("name") or target.name
        if name != target.name:
            raise bad_request(f"the name of the object ({name}) does not match the name on the URL ({target.name})")
        obj["metadata"]["name"] = name
        existing = self._existing(target)
        sent_version = obj["metadata"].get("resourceVersion")
        if not sent_version and not rt.builtin:
            raise invalid(
                rt,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "message": "Invalid value: 0x0: must be specified for an update",
                        "field": "metadata.resourceVersion",
                    }
                ],
                by_kind=False,
            )
        return self._update(target, existing, obj, query, self._updated_by(target, manager))

    def _updated_by(
        self, target: Route, manager: str
    ) -> Callable[[dict[str, Any], dict[str, Any]], list[ManagedEntry]]:
        """The ownership of an Update by `manager` (see record_update), for _update."""
        entries = self._managed_entries(target)
        return lambda old, new: record_update(entries, manager, target.group_version, old, new, target.rt)

    def _managed_entries(self, target: Route) -> list[ManagedEntry]:
        return self._managed.get((target.rt.group, target.rt.plural, target.namespace or "", target.name or ""), [])

    def _update(
        self,
        target: Route,
        existing: dict[str, Any],
        new: dict[str, Any],
        query: dict[str, str],
        ownership: Callable[[dict[str, Any], dict[str, Any]], list[ManagedEntry]],
    ) -> _Answer:
        """Store `new` in place of `existing`: concurrency check, server fields, field ownership
        (`ownership(old, new)` gives the managedFields entries), no-op detection."""
        rt = target.rt
        metadata = new.setdefault("metadata", {})
        old_meta = existing["metadata"]
        sent_version = metadata.get("resourceVersion")
        if sent_version and sent_version != old_meta["resourceVersion"]:
            raise conflict(rt, target.name or "")
        if metadata.get("uid") and metadata["uid"] != old_meta["uid"]:
            raise ApiError(
                409,
                f"Precondition failed: UID in precondition: {old_meta['uid']}, UID in object meta: {metadata['uid']}",
                reason="Conflict",
                details=_details(rt, target.name or ""),
            )
        for server_field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            metadata[server_field] = old_meta[server_field]
        metadata.pop("managedFields", None)
        if rt.status_subresource:
            new.pop("status", None)
            if "status" in existing:
                new["status"] = copy.deepcopy(existing["status"])
        if rt.kind == "Secret":
            _fold_string_data(new)
        if rt.kind == "Namespace":
            new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = target.name
        warnings = self._validate(target, new, query)
        stored_view = self._as_version(existing, rt, target.version)
        entries = ownership(stored_view, new)
        metadata["managedFields"] = [entry.render() for entry in entries]
        if new == stored_view:
            return _Answer(200, stored_view, warnings)  # a no-op changes nothing at all
        if _without(new, ("metadata", "status")) != _without(stored_view, ("metadata", "status")):
            metadata["generation"] = old_meta["generation"] + 1
        if query.get("dryRun") != "All":
            metadata["resourceVersion"] = self._next_resource_version()
            self._bucket(rt)[(target.namespace or "", target.name or "")] = copy.deepcopy(new)
            self._managed[(rt.group, rt.plural, target.namespace or "", target.name or "")] = entries
        return _Answer(200, self._as_version(new, rt, target.version), warnings)

    def _patch(
        self, target: Route, body: bytes, content_type: str | None, query: dict[str, str], manager: str
    ) -> _Answer:
        rt = target.rt
        media = (content_type or "").split(";")[0].strip()
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH] + ([STRATEGIC_PATCH] if rt.builtin else [])
        if media not in accepted:
            raise unsupported_media(accepted)
        if media == APPLY_PATCH:
            return self._server_side_apply(target, body, query)
        patch = self._decode(body, "application/json")
        current = self._as_version(self._existing(target), rt, target.version)
        if media == JSON_PATCH:
            if not isinstance(patch, list):
                raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            try:
                patched = jsonpatch.apply_patch(current, patch)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                raise ApiError(422, str(e)) from e
            except (KeyError, TypeError, ValueError) as e:
                raise bad_request(f"invalid JSON patch: {e}") from e
        else:
            if not isinstance(patch, dict):
                raise bad_request("the body of a merge patch must be a JSON object")
            merge = strategic_merge_patch if media == STRATEGIC_PATCH else merge_patch
            patched = merge(current, patch)
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        patched_meta = patched.get("metadata") or {}
        if patched_meta.get("name", target.name) != target.name:
            raise bad_request("metadata.name cannot be changed by a patch")
        if rt.namespaced and patched_meta.get("namespace", target.namespace) != target.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        new = self._check_type(target, patched)
        new["metadata"]["name"] = target.name
        return self._update(target, self._existing(target), new, query, self._updated_by(target, manager))

    def _server_side_apply(self, target: Route, body: bytes, query: dict[str, str]) -> _Answer:
        rt = target.rt
        manager = query.get("fieldManager")
        if not manager:
            raise ApiError(
                422,
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                reason="Invalid",
                details={
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: is required for apply patch",
                            "field": "fieldManager",
                        }
                    ],
                },
            )
        applied = self._decode(body, APPLY_PATCH)
        if not isinstance(applied, dict):
            raise bad_request("the body of an apply patch must be an object")
        if not applied.get("apiVersion") or not applied.get("kind"):
            raise bad_request("invalid object type: apiVersion and kind must be set in an apply patch")
        applied = self._check_type(target, applied)
        name = applied["metadata"].get("name") or target.name
        if name != target.name:
            raise bad_request(f"the name of the object ({name}) does not match the name on the URL ({target.name})")
        applied["metadata"]["name"] = name
        stored = self._bucket(rt).get((target.namespace or "", target.name or ""))
        if stored is None:
            return self._create(target, applied, query, manager, "Apply")
        current = self._as_version(stored, rt, target.version)
        applied_fields = fieldset(applied, rt)
        entries = self._managed_entries(target)
        conflicts = apply_conflicts(entries, manager, applied_fields, current, applied)
        if conflicts and query.get("force") not in ("true", "1"):
            raise conflict_error(rt, target.name or "", conflicts)
        # Forced: the applier takes the conflicting fields from their owners.
        taken = {path for _, path in conflicts}
        others = [
            _retimed(entry, set(entry.fields) - taken)
            for entry in entries
            if (entry.manager, entry.operation) != (manager, "Apply")
        ]
        new = apply_merge(rt, current, applied)
        previous = next((e for e in entries if (e.manager, e.operation) == (manager, "Apply")), None)
        still_owned = set().union(*(entry.fields for entry in others))
        # A field this manager applied before and leaves out now goes, unless another owns it.
        for path in sorted((previous.fields if previous else frozenset()) - applied_fields - still_owned):
            remove_field(new, path)

        def ownership(_old: dict[str, Any], final: dict[str, Any]) -> list[ManagedEntry]:
            final_fields = fieldset(final, rt)
            out = [_retimed(entry, set(entry.fields) & final_fields) for entry in others]
            mine = applied_fields & final_fields
            if previous is not None:
                out.append(_retimed(previous, mine, target.group_version))
            else:
                out.append(ManagedEntry(manager, "Apply", target.group_version, _now(), frozenset(mine)))
            return [entry for entry in out if entry.fields]

        return self._update(target, stored, new, query, ownership)

    def _delete_options(self, body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        options = self._decode(body, "application/json")
        if not isinstance(options, dict):
            raise bad_request("the body of a delete must be DeleteOptions")
        return options

    def _delete(self, target: Route, query: dict[str, str], body: bytes) -> _Answer:
        rt = target.rt
        options = self._delete_options(body)
        existing = self._existing(target)
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            wanted = preconditions.get(field_name)
            if wanted and wanted != existing["metadata"][field_name]:
                raise ApiError(
                    409,
                    f"Precondition failed: {field_name} in precondition: {wanted}, "
                    f"{field_name} in object meta: {existing['metadata'][field_name]}",
                    reason="Conflict",
                    details=_details(rt, target.name or ""),
                )
        dry_run = query.get("dryRun") == "All" or "All" in (options.get("dryRun") or [])
        gone = self._as_version(existing, rt, target.version)
        if not dry_run:
            self._remove(rt, target.namespace or "", target.name or "")
        if rt.kind == "Namespace":
            gone["status"] = {"phase": "Terminating"}
            return _Answer(200, gone)
        if rt.builtin:
            details = _details(rt, target.name or "")
            details["uid"] = existing["metadata"]["uid"]
            return _Answer(
                200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
            )
        return _Answer(200, gone)

    def _remove(self, rt: ResourceType, namespace: str, name: str) -> None:
        del self._bucket(rt)[(namespace, name)]
        self._resource_version += 1
        self._managed.pop((rt.group, rt.plural, namespace, name), None)
        if rt.kind == "Namespace":  # everything in it goes too
            for other in RESOURCE_TYPES:
                if other.namespaced:
                    for key in [k for k in self._bucket(other) if k[0] == name]:
                        del self._bucket(other)[key]

    def _delete_collection(self, target: Route, query: dict[str, str], body: bytes) -> _Answer:
        if target.rt.plural == "namespaces":
            raise ApiError(405, "the server does not allow this method on the requested resource (DELETE)")
        options = self._delete_options(body)
        listed = self._list(target, query).body
        dry_run = query.get("dryRun") == "All" or "All" in (options.get("dryRun") or [])
        for item in listed["items"]:
            if not dry_run:
                self._remove(target.rt, item["metadata"].get("namespace", ""), item["metadata"]["name"])
        return _Answer(200, listed)


def _manager(query: dict[str, str], headers: Any) -> str:
    """The field manager of a write: the fieldManager parameter, else the User-Agent up to its
    first "/" (the API server's default; the python client's is "OpenAPI-Generator")."""
    if query.get("fieldManager"):
        return query["fieldManager"]
    return (headers.get("User-Agent") or "").split("/")[0][:128]


def _without(obj: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


def _fold_string_data(secret: dict[str, Any]) -> None:
    """Secrets: stringData is write-only, folded into base64 data (as a real server does)."""
    string_data = secret.pop("stringData", None) or {}
    if string_data:
        data = secret.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    secret.setdefault("type", "Opaque")


def _warning(text: str) -> str:
    """An RFC 7234 warning header value, as the API server sends it."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{escaped}"'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body leave in two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK, about 40 ms on every kept-alive answer (a real API server does not).
    disable_nagle_algorithm = True
    server_version = "kube-api-double"
    server_api: KubeApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log of the server is the record; never echo headers

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server_api.handle(self.command, self.path, self.headers, body)
        if isinstance(answer.body, str):
            payload, media = answer.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, media = json.dumps(answer.body, separators=(",", ":")).encode(), "application/json"
        self.send_response(answer.code)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        if answer.warnings:
            self.send_header("Warning", ", ".join(_warning(text) for text in answer.warnings))
        try:
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (a test of its timeout): as a real API server, carry on

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.kube_api", description="The Kubernetes API test double, on 127.0.0.1."
    )
    parser.add_argument("--work-dir", type=Path, required=True, help="where its kubeconfig and TMPDIR go")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--request-log", type=Path, help="append one JSON line per request served")
    args = parser.parse_args(argv)
    # Blocked before the server's threads start (they inherit the mask), so a stop signal waits
    # for sigwait below and the server stops through stop(), its request log closed.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    load_preferred_models()  # before the URL is printed: the double's callers time what follows
    server = KubeApiServer(args.work_dir, request_log=args.request_log).start(args.port)
    try:
        print(server.url, flush=True)
        signal.sigwait(STOP_SIGNALS)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
