"""The deployment files stay valid: docker-compose.yml parses and configures real settings."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

from signaling.config import ENV_PREFIX, Config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_compose_file_parses_with_docker_compose() -> None:
    result = _compose_config({"TURN_SECRET": "not-a-real-secret"})
    assert result.returncode == 0, result.stderr
    assert {"signaling:", "coturn:", "redis:"} <= set(result.stdout.split())


def test_compose_refuses_to_start_without_a_turn_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TURN_SECRET"}
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "TURN_SECRET" in result.stderr


def test_every_signaling_variable_in_compose_is_a_server_setting() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    names = re.findall(rf"\b{ENV_PREFIX}([A-Z_]+):", COMPOSE.read_text())
    assert names, "compose file configures no signaling settings"
    unknown = [n for n in names if n.lower() not in fields]
    assert not unknown, f"compose sets variables the server ignores: {unknown}"
