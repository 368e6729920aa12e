"""promql: `${name}` templates, escaping for PromQL strings and regexes, the default queries."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from mirrorramp import promql
from mirrorramp.errors import ConfigError
from mirrorramp.promql import QueryContext, render

CONTEXT = QueryContext(
    service="user-service",
    namespace="shop",
    environment="prod",
    primary_workload="user-service-v1",
    mirror_workloads=("user-service-v2",),
    window_seconds=600,
)
TWO_MIRRORS = QueryContext("user-service", "shop", "prod", "user-service-v1", ("user-service-v2", "user.service-v3"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\nlines"),
        ('\\"', '\\\\\\"'),
    ],
    ids=["plain", "double-quote", "backslash", "newline", "backslash-then-quote"],
)
def test_escape_string(value, expected):
    assert promql.escape_string(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("user-service-v2", "user-service-v2"),
        ("a.b", "a\\.b"),
        ("a|b", "a\\|b"),
        ("x+(y)*?[z]{1}^$\\", "x\\+\\(y\\)\\*\\?\\[z\\]\\{1\\}\\^\\$\\\\"),
    ],
    ids=["dns-name-unchanged", "dot", "pipe", "every-metacharacter"],
)
def test_escape_regex(value, expected):
    assert promql.escape_regex(value) == expected
    assert re.fullmatch(promql.escape_regex(value), value)


def test_render_fills_every_placeholder():
    template = (
        'x{s="${service}",n="${namespace}",e="${environment}",p="${primary_workload}",'
        'm=~"${mirror_workload}",x="${mirror_workload_exact}"}[${window}]'
    )
    assert render(template, CONTEXT, "g") == (
        'x{s="user-service",n="shop",e="prod",p="user-service-v1",m=~"user-service-v2",x="user-service-v2"}[600s]'
    )


def test_render_joins_several_mirrors_as_an_escaped_alternation():
    rendered = render('destination_workload=~"${mirror_workload}"', TWO_MIRRORS, "g")
    # The regex is user-service-v2|user\.service-v3; in a PromQL string the backslash is doubled.
    assert rendered == 'destination_workload=~"user-service-v2|user\\\\.service-v3"'


def test_render_escapes_values_for_a_double_quoted_string():
    hostile = QueryContext('ns"}) or vector(1) #', 'a"b\\c\nd', "prod", "p", ('m"x',))
    rendered = render('{s="${service}",n="${namespace}",m=~"${mirror_workload}"}', hostile, "g")
    assert rendered == '{s="ns\\"}) or vector(1) #",n="a\\"b\\\\c\\nd",m=~"m\\"x"}'


def test_exact_mirror_with_several_mirrors_names_the_gate():
    with pytest.raises(ConfigError, match=r"gate 'latency'.*mirror_workload_exact.*exactly one.*has 2"):
        render('x{w="${mirror_workload_exact}"}', TWO_MIRRORS, "latency")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('x{a="${servcie}"}', r"gate 'errors': unknown placeholder \$\{servcie\}"),
        ('x{a="${}"}', r"gate 'errors': unknown placeholder \$\{\}"),
        ("x[${window }]", r"gate 'errors': unknown placeholder \$\{window \}"),
        ('x{a="$service"}', r"gate 'errors': write \$\{service\} \(with braces\)"),
    ],
    ids=["misspelt", "empty", "space", "unbraced"],
)
def test_bad_placeholder_names_the_gate_and_the_placeholder(template, message):
    with pytest.raises(ConfigError, match=message):
        render(template, CONTEXT, "errors")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('x{path=~"/api/.*$"}', 'x{path=~"/api/.*$"}'),
        ('x{a=~"$$${service}"}', 'x{a=~"$user-service"}'),
        ('x{a=~"^$other"}', 'x{a=~"^$other"}'),
        ("{{ jinja }}", "{{ jinja }}"),
    ],
    ids=["regex-anchor", "dollar-escape", "unknown-bare-word", "jinja-untouched"],
)
def test_other_dollars_are_literal(template, expected):
    assert render(template, CONTEXT, "g") == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(600, "600s"), ("10m", "600s"), (86400, "86400s"), (0.5, "1s")],
    ids=["seconds", "duration-text", "a-day", "rounded-up"],
)
def test_window_is_a_promql_range(seconds, expected):
    assert render("[${window}]", CONTEXT.with_window(seconds), "g") == f"[{expected}]"


def test_label_matchers_quotes_and_uses_regex_where_asked():
    assert promql.label_matchers({"a": "x", "b": 'y"z'}, regex=["b"]) == '{a="x",b=~"y\\"z"}'
    assert promql.label_matchers({}) == "{}"


def test_label_matchers_refuses_a_bad_label_name():
    with pytest.raises(ConfigError, match="'bad-name' is not a valid Prometheus label name"):
        promql.label_matchers({"bad-name": "x"})


def test_context_from_a_mapping():
    context = QueryContext.of(
        {
            "service": "s",
            "namespace": "n",
            "environment": "e",
            "primary_workload": "p",
            "mirror_workloads": ["m1", "m2"],
        }
    )
    assert context.mirror_workloads == ("m1", "m2")
    assert context.window == "300s"


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"service": "s"}, "missing keys"),
        (
            {"service": "s", "namespace": "n", "environment": "e", "primary_workload": "p", "mirror_workloads": []},
            "mirror_workloads must be a non-empty list",
        ),
        (
            {"service": "s", "namespace": "n", "environment": "e", "primary_workload": "p", "mirror_workloads": "m"},
            "mirror_workloads must be a non-empty list",
        ),
        (
            {"service": "", "namespace": "n", "environment": "e", "primary_workload": "p", "mirror_workloads": ["m"]},
            "service must be a non-empty string",
        ),
        (
            {
                "service": "s",
                "namespace": "n",
                "environment": "e",
                "primary_workload": "p",
                "mirror_workloads": ["m"],
                "windw": 1,
            },
            "unknown keys",
        ),
    ],
    ids=["missing", "no-mirror", "mirror-not-a-list", "empty-service", "unknown-key"],
)
def test_context_refuses_bad_mappings(mapping, message):
    with pytest.raises(ConfigError, match=message):
        QueryContext.of(mapping)


@pytest.mark.parametrize(
    "name",
    [*promql.DEFAULT_QUERIES, *(f"compare-{m}" for m in promql.COMPARISON_QUERIES)],
)
def test_default_queries_use_istio_destination_series_of_the_mirror(name):
    template = promql.DEFAULT_QUERIES.get(name) or promql.COMPARISON_QUERIES[name.removeprefix("compare-")]
    rendered = render(template, CONTEXT, name)
    assert 'reporter="destination"' in rendered
    assert 'destination_workload=~"user-service-v2"' in rendered
    assert "[600s]" in rendered
    assert "istio_mirror" not in rendered  # no such metric exists
    if name.startswith("compare-"):
        assert 'destination_workload="user-service-v1"' in rendered


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_default_queries_parse_in_promtool(tmp_path):
    rules = ["groups:", "  - name: defaults", "    rules:"]
    queries = {**promql.DEFAULT_QUERIES, **{f"compare_{k}": v for k, v in promql.COMPARISON_QUERIES.items()}}
    for name, template in queries.items():
        expr = render(template, TWO_MIRRORS, name).replace("'", "''")
        rules += [f"      - record: mirror:{name}", f"        expr: '{expr}'"]
    path = tmp_path / "rules.yml"
    path.write_text("\n".join(rules) + "\n")
    checked = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(queries)} rules found" in checked.stdout
