"""The filter mirror_keep_live as role mirror_apply calls it: every rendered manifest in one call,
each with the live object of its own kind, namespace and name."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from mirrorramp.virtualservice import read_mirror_percent, with_mirror_percent
from tests.support.plugin_files import load_filter
from tests.unit.test_virtualservice import ONE, virtual_service

mirror_keep_live = load_filter("mirror_filters", "mirror_keep_live")


def named(manifest: dict[str, Any], name: str, namespace: str = "shop") -> dict[str, Any]:
    renamed = copy.deepcopy(manifest)
    renamed["metadata"].update(name=name, namespace=namespace)
    return renamed


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"}, "spec": {}}


def test_a_list_keeps_each_routes_own_live_mirror_and_leaves_the_rest() -> None:
    rendered = [named(with_mirror_percent(virtual_service(ONE), 1), n) for n in ("a", "b", "c")] + [service("a")]
    live = [
        named(with_mirror_percent(virtual_service(ONE, state="{}"), 10), "a"),
        named(with_mirror_percent(virtual_service(ONE, state="{}"), 20), "b"),
        named(with_mirror_percent(virtual_service(ONE, state="{}"), 30), "b", namespace="other"),
    ]
    kept = mirror_keep_live(rendered, live)
    assert [read_mirror_percent(m) for m in kept[:3]] == [10.0, 20.0, 1.0]  # c has no live object
    assert kept[3] == service("a")  # a Service named like a route is not that route


def test_a_live_object_listed_without_kind_is_found_by_namespace_and_name() -> None:
    live = named(with_mirror_percent(virtual_service(ONE, state="{}"), 5), "a")
    del live["kind"]  # a LIST may omit the items' kind
    kept = mirror_keep_live([named(with_mirror_percent(virtual_service(ONE), 1), "a")], [live])
    assert read_mirror_percent(kept[0]) == 5.0


def test_one_manifest_gives_one_manifest_as_the_list_does() -> None:
    rendered = named(with_mirror_percent(virtual_service(ONE), 1), "a")
    live = [named(with_mirror_percent(virtual_service(ONE, state="{}"), 10), "a")]
    assert mirror_keep_live(rendered, live) == mirror_keep_live([rendered], live)[0]
    assert read_mirror_percent(mirror_keep_live(rendered, None)) == 1.0


@pytest.mark.parametrize("rendered", ["a string", ["a string"], [service("a"), 3]])
def test_what_is_not_a_manifest_is_refused_by_its_type(rendered: Any) -> None:
    with pytest.raises(AnsibleFilterError, match="expected a manifest"):
        mirror_keep_live(rendered, [])
