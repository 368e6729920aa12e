"""Pure filter: the DestinationRule of one service, as the engine builds it (role mirror_istio).

How a service of `mirror_services` becomes a DestinationRule (its subsets, the service's traffic
policy and each subset's own) is mirrorramp.destinationrule's knowledge, shared with the sandbox
harness that configures Envoy from the same resource: the render and the sandbox cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from mirrorramp.destinationrule import destination_rule
from mirrorramp.errors import MirrorRampError

# The documentation is mirror_istio_destination_rule.yml beside this file (ansible-doc -t filter).


def mirror_istio_destination_rule(service, host, namespace, labels):
    """The DestinationRule of `service` for `host` in `namespace`, with the metadata `labels`."""
    if not isinstance(service, Mapping):
        raise AnsibleFilterError(
            f"mirror_istio_destination_rule: expected a service (dict), got {type(service).__name__}"
        )
    for argument, value in (("host", host), ("namespace", namespace)):
        if not isinstance(value, str) or not value:
            raise AnsibleFilterError(f"mirror_istio_destination_rule: {argument} {value!r} is not a name")
    if not isinstance(labels, Mapping):
        raise AnsibleFilterError(f"mirror_istio_destination_rule: labels {labels!r} are not a mapping")
    try:
        return destination_rule(service, host=host, namespace=namespace, labels=labels)
    except MirrorRampError as e:
        raise AnsibleFilterError(f"mirror_istio_destination_rule: {e}") from e


class FilterModule:
    def filters(self):
        return {"mirror_istio_destination_rule": mirror_istio_destination_rule}
