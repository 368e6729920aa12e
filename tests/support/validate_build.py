"""Validate every file of a build directory against the real schemas.

- Istio and prometheus-operator kinds: the cloudcoil models (picked by apiVersion and kind). The
  models drop unknown fields silently, so every field of the input that the model did not keep is
  reported as an error (a misspelt `mirrorPercentage` would otherwise pass and be ignored by Istio).
- Core kinds (autoscaling/v2 HorizontalPodAutoscaler, ...): kubernetes-validate, strict.
- Plain Prometheus rule files under prometheus/: `promtool check rules`.

    python -m tests.support.validate_build build/local

prints one line per error (file: path: message) and a summary; exits 1 when there is an error.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import yaml

# Modules of the cloudcoil models, by API group.
MODEL_MODULES = (
    "cloudcoil.models.istio.networking.v1",
    "cloudcoil.models.istio.networking.v1beta1",
    "cloudcoil.models.istio.networking.v1alpha3",
    "cloudcoil.models.istio.security.v1",
    "cloudcoil.models.istio.security.v1beta1",
    "cloudcoil.models.istio.telemetry.v1",
    "cloudcoil.models.istio.telemetry.v1alpha1",
    "cloudcoil.models.istio.extensions.v1alpha1",
    "cloudcoil.models.prometheus_operator.v1",
    "cloudcoil.models.prometheus_operator.v1alpha1",
)
CRD_GROUPS = ("istio.io", "coreos.com")
# Fields the models still accept but Istio deprecates; never emit them (notes/istio-mirroring.md).
DEPRECATED_FIELDS = {
    ("VirtualService", "mirrorPercent"): "deprecated: use mirrorPercentage: {value: <0..100>}",
}
KUBERNETES_VERSION = kubernetes_validate.latest_version()


@dataclass(frozen=True)
class Finding:
    file: Path
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path or '<root>'}: {self.message}"


@cache
def model_classes() -> dict[tuple[str, str], type]:
    """(apiVersion, kind) -> cloudcoil model class."""
    from cloudcoil.resources import Resource

    classes: dict[tuple[str, str], type] = {}
    for module_name in MODEL_MODULES:
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Resource) and cls.__module__ == module_name:
                gvk = cls.gvk()
                classes[(gvk.api_version, gvk.kind)] = cls
    return classes


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def unknown_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths of the keys of `given` that the model dropped (absent from its dump)."""
    found: list[str] = []
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                found.append(_join(path, key))
            else:
                found += unknown_fields(value, kept[key], _join(path, key))
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (value, kept_value) in enumerate(zip(given, kept, strict=False)):
            found += unknown_fields(value, kept_value, _join(path, index))
    return found


def deprecated_fields(kind: str, data: Any, path: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            reason = DEPRECATED_FIELDS.get((kind, key))
            if reason:
                found.append((_join(path, key), reason))
            found += deprecated_fields(kind, value, _join(path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += deprecated_fields(kind, value, _join(path, index))
    return found


def validate_resource(file: Path, resource: Any) -> list[Finding]:
    if not isinstance(resource, dict):
        return [Finding(file, "", f"expected a Kubernetes resource (a mapping), got {type(resource).__name__}")]
    api_version, kind = resource.get("apiVersion"), resource.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [Finding(file, "", "apiVersion and kind are required")]
    group = api_version.split("/")[0] if "/" in api_version else ""
    if group.endswith(CRD_GROUPS):
        return validate_custom_resource(file, resource, api_version, kind)
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [Finding(file, "", f"no schema for {kind} {api_version} (Kubernetes {KUBERNETES_VERSION})")]
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(part) for part in e.absolute_path)
        return [Finding(file, where, e.message)]
    return []


def validate_custom_resource(file: Path, resource: dict, api_version: str, kind: str) -> list[Finding]:
    cls = model_classes().get((api_version, kind))
    if cls is None:
        return [Finding(file, "", f"unknown kind {kind} in {api_version}")]
    try:
        model = cls.model_validate(resource)
    except pydantic.ValidationError as e:
        return [
            Finding(file, ".".join(str(part) for part in err["loc"]), err["msg"]) for err in e.errors(include_url=False)
        ]
    kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    findings = [Finding(file, path, "unknown field") for path in unknown_fields(resource, kept)]
    findings += [Finding(file, path, reason) for path, reason in deprecated_fields(kind, resource)]
    return findings


def validate_manifest_file(file: Path) -> tuple[int, list[Finding]]:
    """(number of resources, findings) of one YAML file of Kubernetes resources."""
    try:
        documents = [doc for doc in yaml.safe_load_all(file.read_text()) if doc is not None]
    except yaml.YAMLError as e:
        return 0, [Finding(file, "", f"not YAML: {e}")]
    if not documents:
        return 0, [Finding(file, "", "no resource in the file")]
    findings: list[Finding] = []
    for document in documents:
        findings += validate_resource(file, document)
    return len(documents), findings


def validate_rule_file(file: Path) -> list[Finding]:
    promtool = shutil.which("promtool")
    if promtool is None:
        return [Finding(file, "", "promtool not found (Debian package prometheus)")]
    proc = subprocess.run(
        [promtool, "check", "rules", str(file)], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode == 0:
        return []
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    noise = ("Checking ", "FAILED:", "SUCCESS")
    return [Finding(file, "", f"promtool: {line}") for line in lines if not line.startswith(noise)]


def validate_build(build_dir: Path) -> tuple[int, list[Finding]]:
    """(number of resources and rule files validated, findings) of a build directory."""
    if not build_dir.is_dir():
        return 0, [Finding(build_dir, "", "no such directory")]
    count = 0
    findings: list[Finding] = []
    for file in sorted(p for p in build_dir.rglob("*") if p.is_file()):
        relative = file.relative_to(build_dir)
        if relative.parts[0] == "prometheus" and file.suffix in {".yml", ".yaml"}:
            count += 1
            findings += validate_rule_file(file)
        elif file.suffix in {".yml", ".yaml"}:
            resources, file_findings = validate_manifest_file(file)
            count += resources
            findings += file_findings
        else:
            findings.append(Finding(file, "", "unexpected file (expected .yml)"))
    return count, findings


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.validate_build BUILD_DIR", file=sys.stderr)
        return 2
    build_dir = Path(argv[0])
    count, findings = validate_build(build_dir)
    for finding in findings:
        print(finding)
    print(f"validated {count} resources in {build_dir}: {len(findings)} errors")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
