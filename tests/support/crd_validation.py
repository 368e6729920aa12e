"""Validate a custom resource against its CustomResourceDefinition, as the API server does on a
create: structural defaulting, the OpenAPI v3 structural schema, then every CEL rule
(``x-kubernetes-validations``) at its level.

Checked: type (integer is not number, null only where nullable), enum, minimum/maximum
(exclusive too), minLength/maxLength, pattern, minItems/maxItems, minProperties/maxProperties,
required, unique items of set lists and unique keys of map lists (x-kubernetes-list-type),
int-or-string, unknown fields (reported as the server refuses them under
``fieldValidation=Strict``; x-kubernetes-preserve-unknown-fields turns that off), and the CEL
rules with the Kubernetes escaping of property names (``namespace`` is ``__namespace__``), their
message or messageExpression, fieldPath and reason.

Not checked: metadata beyond being an object (the API server validates ObjectMeta itself),
formats (int32, date-time: the int fields of Gateway API carry min/max too), transition rules
(those naming oldSelf are skipped: this validates creates), CEL cost limits, and the difference
between Python's `re` and RE2 for `pattern` and `matches()` (none in the Gateway API CRDs).

The CEL evaluator is cel-python (module celpy, pinned in requirements.txt).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import yaml

# Property names CEL can't take as they are (k8s.io/apiserver/pkg/cel escaping).
CEL_RESERVED = {
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
}
_ESCAPABLE = re.compile(r"^[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*$")

JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


@dataclass(frozen=True)
class Finding:
    """One reason the API server would refuse the object."""

    field: str  # spec.rules[0].filters[1].requestMirror
    kind: str  # type, enum, required, unknown, maxItems, ..., rule, rule-error
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def load_crd(path: Path) -> dict[str, Any]:
    """The first CustomResourceDefinition in a YAML file."""
    with path.open() as stream:
        for document in yaml.safe_load_all(stream):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                return document
    raise ValueError(f"{path} holds no CustomResourceDefinition")


def version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for served in crd["spec"]["versions"]:
        if served["name"] == version and served.get("served", True):
            return served["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['metadata']['name']} does not serve version {version}")


def validate(obj: dict[str, Any], crd: dict[str, Any]) -> list[Finding]:
    """Findings of `obj` against `crd` (empty: the API server would accept it on create)."""
    group = crd["spec"]["group"]
    api_group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    if api_group != group:
        return [Finding("apiVersion", "type", f"{obj.get('apiVersion')!r} is not in group {group}")]
    if obj.get("kind") != crd["spec"]["names"]["kind"]:
        return [Finding("kind", "type", f"{obj.get('kind')!r} is not {crd['spec']['names']['kind']}")]
    try:
        schema = version_schema(crd, version)
    except KeyError as e:
        return [Finding("apiVersion", "type", str(e.args[0]))]
    defaulted = apply_defaults(copy.deepcopy(obj), schema)
    findings: list[Finding] = []
    _check(defaulted, schema, "", findings, top=True)
    _check_rules(defaulted, schema, "", findings)
    return findings


# ---------------------------------------------------------------------------------------------
# Structural defaulting


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fill in the `default` of every absent property of every object present (in place)."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, child in properties.items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                apply_defaults(value[name], child)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in value:
                if key not in properties:
                    apply_defaults(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


# ---------------------------------------------------------------------------------------------
# The structural schema


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _type_ok(value: Any, expected: str, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, JSON_TYPES.get(expected, object))


def _json_type(value: Any) -> str:
    for name, python_type in (("boolean", bool), ("integer", int), ("number", float), ("string", str)):
        if isinstance(value, python_type):
            return name
    return "array" if isinstance(value, list) else "object"


def _check(value: Any, schema: dict[str, Any], path: str, findings: list[Finding], top: bool = False) -> None:
    if value is None:
        if not schema.get("nullable"):
            findings.append(Finding(path, "type", f"Invalid value: null: {path} in body must not be null"))
        return
    expected = schema.get("type")
    if expected and not _type_ok(value, expected, schema):
        got = _json_type(value)
        findings.append(Finding(path, "type", f'Invalid value: "{got}": {path} in body must be of type {expected}'))
        return
    _check_value(value, schema, path, findings)
    if isinstance(value, dict):
        _check_object(value, schema, path, findings, top)
    elif isinstance(value, list):
        _check_array(value, schema, path, findings)


def _check_value(value: Any, schema: dict[str, Any], path: str, findings: list[Finding]) -> None:
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        findings.append(Finding(path, "enum", f"Unsupported value: {json.dumps(value)}: supported values: {allowed}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            low, exclusive = schema["minimum"], schema.get("exclusiveMinimum")
            if value < low or (exclusive and value == low):
                bound = f"greater than {low}" if exclusive else f"greater than or equal to {low}"
                findings.append(Finding(path, "minimum", f"Invalid value: {value}: {path} in body should be {bound}"))
        if "maximum" in schema:
            high, exclusive = schema["maximum"], schema.get("exclusiveMaximum")
            if value > high or (exclusive and value == high):
                bound = f"less than {high}" if exclusive else f"less than or equal to {high}"
                findings.append(Finding(path, "maximum", f"Invalid value: {value}: {path} in body should be {bound}"))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            findings.append(Finding(path, "minLength", f"Invalid value: {value!r}: at least {schema['minLength']}"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            findings.append(Finding(path, "maxLength", f"Too long: may not be more than {schema['maxLength']}"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            findings.append(Finding(path, "pattern", f"Invalid value: {value!r}: should match {schema['pattern']!r}"))


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str, findings: list[Finding], top: bool) -> None:
    properties = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in value:
            findings.append(Finding(_join(path, name), "required", "Required value"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        findings.append(Finding(path, "minProperties", f"should have at least {schema['minProperties']} properties"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        findings.append(Finding(path, "maxProperties", f"should have at most {schema['maxProperties']} properties"))
    additional = schema.get("additionalProperties")
    for name, child in value.items():
        child_path = _join(path, name)
        if top and name in ("apiVersion", "kind", "metadata"):
            if name == "metadata" and not isinstance(child, dict):
                findings.append(Finding(child_path, "type", "metadata must be an object"))
            continue  # the API server checks these itself (ObjectMeta, type meta)
        if name in properties:
            _check(child, properties[name], child_path, findings)
        elif isinstance(additional, dict):
            _check(child, additional, child_path, findings)
        elif additional is not True and not schema.get("x-kubernetes-preserve-unknown-fields"):
            findings.append(Finding(child_path, "unknown", f'unknown field "{child_path}"'))


def _check_array(value: list[Any], schema: dict[str, Any], path: str, findings: list[Finding]) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        findings.append(Finding(path, "minItems", f"Invalid value: {len(value)}: at least {schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        findings.append(
            Finding(path, "maxItems", f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
        )
    list_type = schema.get("x-kubernetes-list-type")
    seen: list[Any] = []
    for index, item in enumerate(value):
        if list_type == "set" or list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            identity = {k: item.get(k) for k in keys} if list_type == "map" and isinstance(item, dict) else item
            if identity in seen:
                findings.append(Finding(_join(path, index), "duplicate", f"Duplicate value: {json.dumps(identity)}"))
            seen.append(identity)
        if isinstance(schema.get("items"), dict):
            _check(item, schema["items"], _join(path, index), findings)


# ---------------------------------------------------------------------------------------------
# CEL rules (x-kubernetes-validations)


@functools.cache
def _program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _escape(name: str) -> str:
    """A property name as CEL sees it in a Kubernetes rule."""
    if name in CEL_RESERVED:
        return f"__{name}__"
    if not _ESCAPABLE.match(name):
        return name  # not accessible by name from CEL at all
    escaped = name.replace("__", "__underscores__")
    for char, word in ((".", "dot"), ("-", "dash"), ("/", "slash")):
        escaped = escaped.replace(char, f"__{word}__")
    return escaped


def _for_cel(value: Any, schema: dict[str, Any]) -> Any:
    """value with the properties of objects (not of maps: their keys are data) escaped."""
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is not None:
            return {_escape(k): _for_cel(v, properties.get(k) or {}) for k, v in value.items()}
        child = additional if isinstance(additional, dict) else {}
        return {k: _for_cel(v, child) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [_for_cel(item, items) for item in value]
    return value


def _rule_findings(value: Any, schema: dict[str, Any], path: str) -> list[Finding]:
    findings = []
    for validation in schema.get("x-kubernetes-validations") or []:
        rule = validation["rule"]
        if "oldSelf" in rule:
            continue  # a transition rule: not evaluated on create
        where = path + validation.get("fieldPath", "")
        activation = {"self": celpy.json_to_cel(_for_cel(value, schema))}
        try:
            result = _program(rule).evaluate(activation)
        except celpy.CELEvalError as e:
            findings.append(Finding(where, "rule-error", f"rule {rule!r} could not be evaluated: {e.args[0]}"))
            continue
        if isinstance(result, celpy.CELEvalError):
            findings.append(Finding(where, "rule-error", f"rule {rule!r} could not be evaluated: {result.args[0]}"))
        elif result != celpy.celtypes.BoolType(True):
            message = validation.get("message") or f"failed rule: {rule}"
            if "messageExpression" in validation:
                message = str(_program(validation["messageExpression"]).evaluate(activation))
            reason = validation.get("reason", "FieldValueInvalid")
            findings.append(Finding(where, "rule", f"Invalid value: {reason}: {message}"))
    return findings


def _check_rules(value: Any, schema: dict[str, Any], path: str, findings: list[Finding]) -> None:
    """Evaluate the rules of every node present, deepest last (the server reports them all)."""
    findings.extend(_rule_findings(value, schema, path))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for name, child in value.items():
            child_schema = properties.get(name) or (additional if isinstance(additional, dict) else None)
            if child_schema is not None and child is not None:
                _check_rules(child, child_schema, _join(path, name), findings)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _check_rules(item, schema["items"], _join(path, index), findings)
