"""Envoy's command line and the static cluster, as mirrorsandbox.envoy_process builds them (no Envoy started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirrorsandbox import sandbox_envoy
from mirrorsandbox.envoy_process import envoy_binary, envoy_command, static_cluster


def test_every_envoy_runs_without_hot_restart_and_rejects_unknown_fields(tmp_path: Path) -> None:
    command = envoy_command(tmp_path / "bootstrap.yaml", tmp_path / "envoy.log")
    assert command[0] == str(envoy_binary())
    assert {"--disable-hot-restart", "--reject-unknown-dynamic-fields"} <= set(command)
    assert command[command.index("--config-path") + 1] == str(tmp_path / "bootstrap.yaml")
    assert command[command.index("--log-path") + 1] == str(tmp_path / "envoy.log")
    assert command[command.index("--concurrency") + 1] == "1"
    assert "--admin-address-path" not in command  # the sandbox's admin port is its bootstrap's


def test_an_admin_address_file_is_passed_only_when_asked(tmp_path: Path) -> None:
    command = envoy_command(tmp_path / "b.yaml", tmp_path / "l.log", admin_address_path=tmp_path / "admin.address")
    assert command[command.index("--admin-address-path") + 1] == str(tmp_path / "admin.address")


def test_the_role_gets_the_same_command_line_from_sandbox_envoy_argv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sandbox_envoy.main(["argv", "--dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["argv"] == envoy_command(tmp_path / "bootstrap.yaml", tmp_path / "envoy.log")


def test_a_static_cluster_has_its_one_loopback_endpoint() -> None:
    assert static_cluster("inbound|8080||", "127.0.0.1:18081", connect_timeout="10s") == {
        "name": "inbound|8080||",
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {
            "cluster_name": "inbound|8080||",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 18081}}}}
                    ]
                }
            ],
        },
    }
