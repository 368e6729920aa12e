#!/usr/bin/python
# The documentation of the mirror_apply_manifests action plugin
# (plugins/action/mirror_apply_manifests.py); this module file is never executed.

DOCUMENTATION = r"""
module: mirror_apply_manifests
short_description: Apply many manifests with one run of kubernetes.core.k8s
version_added: "0.1.0"
description:
  - Runs M(kubernetes.core.k8s) once with every manifest of O(definitions) as its C(definition)
    (C(state=present)), instead of once per manifest in a loop - a loop starts the module, imports
    the kubernetes client and discovers the API for each manifest, seconds each. The requests to the
    API server are the same - a read, then a create or a JSON merge patch, per manifest, in order (a
    merge patch, not a strategic one first - custom resources refuse that with 415 - so a list of a
    manifest replaces the live list whole).
  - Prints C(changed - <kind> <namespace>/<name>) for each manifest that changed (C(ok - ...) too with -v),
    and returns each manifest's diff at the task's level, so C(--diff) shows them.
  - Check mode is the module's server-side dry run. The module stops at the first manifest the API
    server refuses; the ones before it are applied, and the task fails with the server's message.
  - roles/mirror_apply uses it for the rendered manifests of an environment, with O(directory) and
    O(keep_live_mirror).
options:
  definitions:
    description: The manifests, in the order to apply them. Each needs C(kind) and C(metadata.name).
      One of O(definitions) and O(directory) is required.
    type: list
    elements: dict
  directory:
    description: A directory whose C(*.yml) files (not its subdirectories) hold one manifest each, applied
      in the order of their paths - what C(playbooks/render.yml) writes under C(build/<env>/k8s). Read by
      the action, so that the play never holds the manifests as a variable.
    type: path
  keep_live_mirror:
    description: Keep the live mirror of every route (VirtualService, HTTPRoute) the ramp owns, as the
      filter C(mirror_keep_live) does - the live routes are listed on the controller with the client the
      ramp reads them with, once per apiVersion, kind and namespace (also in check mode, which only
      reads); O(kube.kubeconfig) must then be a path. So a re-apply neither
      puts back a mirror that the ramp removed nor resets the percentage it reached.
    type: bool
    default: false
  kube:
    description: The connection options of kubernetes.core (unset or null ones fall back to the module's
      defaults - the K8S_AUTH_* variables, then ~/.kube/config or the in-cluster service account).
    type: dict
    default: {}
    suboptions:
      kubeconfig: {description: Path of a kubeconfig file., type: raw}
      context: {description: Context of the kubeconfig., type: str}
      host: {description: URL of the API server., type: str}
      api_key: {description: Bearer token (never shown)., type: str}
      validate_certs: {description: Verify the API server's certificate., type: raw}
      ca_cert: {description: CA bundle of the API server., type: path}
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
author: mirror-ramp
"""

EXAMPLES = r"""
- name: Apply the rendered manifests of an environment, keeping the mirror the ramp set
  mirror_apply_manifests:
    directory: build/dev/k8s
    keep_live_mirror: true
    kube: {kubeconfig: ~/.kube/config, context: dev}

- name: Apply the manifests
  mirror_apply_manifests:
    definitions: "{{ manifests }}"
    kube: {host: "https://api.example:6443", api_key: "{{ vault_kube_token }}"}
"""

RETURN = r"""
digest:
  description: The first 12 hex digits of the SHA-256 of the manifests (before any live mirror was kept)
    as JSON with sorted keys - role mirror_apply names its copy of the applied manifests with it.
  type: str
  returned: always
results:
  description: One row per manifest - resource ("<kind> <namespace>/<name>"), changed, method (create, update, patch).
  type: list
  elements: dict
  returned: on success
"""
