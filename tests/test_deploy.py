"""The deployment files stay valid: docker-compose.yml parses and configures real settings.

What the compose file must say (issue 10): signaling over TLS only, with /healthz and /metrics
never published beyond the Docker host's loopback; coturn on UDP, TCP and TLS with its
certificate mounted; a healthcheck for every service; TURN_SECRET and TURN_HOST required (no
silent placeholder); stun:, turn: (udp and tcp) and turns: URIs handed out; nothing provisioned
that no code uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from signaling.config import ENV_PREFIX, Config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
TURN_CONF = ROOT / "deploy" / "turnserver.conf"
ENV = {"TURN_SECRET": "not-a-real-secret", "TURN_HOST": "turn.example.org"}

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is missing: scripts/setup.sh installs Debian's (a parser only)",
)


def _compose_config(
    env: dict[str, str], *, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in {**os.environ, **env}.items() if k not in drop}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )


def _services(env: dict[str, str] = ENV) -> dict[str, Any]:
    result = _compose_config(env)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = _yaml_to_json(result.stdout)["services"]
    return services


def _yaml_to_json(text: str) -> dict[str, Any]:
    """Parse YAML with docker-compose's own interpreter (Debian's has PyYAML; our venv not)."""
    compose = shutil.which("docker-compose")
    assert compose is not None
    shebang = Path(compose).read_text(errors="replace").splitlines()[0]
    python = shebang[2:].strip().split()[0] if shebang.startswith("#!") else "/usr/bin/python3"
    code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
    done = subprocess.run(
        [python, "-c", code], input=text, capture_output=True, text=True, timeout=60, check=True
    )
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_compose_file_parses_with_docker_compose() -> None:
    assert set(_services()) == {"signaling", "coturn"}  # nothing that no code uses (Redis)


@pytest.mark.parametrize("variable", ["TURN_SECRET", "TURN_HOST"])
def test_compose_refuses_to_start_without_turn_settings(variable: str) -> None:
    env = {k: v for k, v in ENV.items() if k != variable}
    result = _compose_config(env, drop=(variable,))
    assert result.returncode != 0
    assert f"set {variable}" in result.stderr
    assert "turn.example" not in COMPOSE.read_text().replace("turn.example.org", "")


def test_signaling_hands_out_stun_turn_and_turns_uris() -> None:
    env = _services()["signaling"]["environment"]
    uris = [u.strip() for u in env["VOICE_SIGNALING_TURN_URIS"].split(",")]
    assert uris == [
        "stun:turn.example.org:3478",
        "turn:turn.example.org:3478?transport=udp",
        "turn:turn.example.org:3478?transport=tcp",
        "turns:turn.example.org:5349?transport=tcp",
    ]
    Config(turn_secret="x", turn_uris=tuple(uris))  # the server accepts them
    assert env["VOICE_SIGNALING_TURN_SECRET"] == ENV["TURN_SECRET"]
    moved = _services({**ENV, "TURNS_PORT": "443"})
    assert (
        "turns:turn.example.org:443?transport=tcp"
        in (moved["signaling"]["environment"]["VOICE_SIGNALING_TURN_URIS"])
    )
    assert "--tls-listening-port=443" in moved["coturn"]["command"]


def test_signaling_is_tls_only_and_keeps_metrics_private() -> None:
    sig = _services()["signaling"]
    env = sig["environment"]
    assert env["VOICE_SIGNALING_TLS_CERT"] and env["VOICE_SIGNALING_TLS_KEY"]
    http_port = int(env["VOICE_SIGNALING_HTTP_PORT"])
    published: list[tuple[str, int]] = []
    for port in sig["ports"]:
        if isinstance(port, dict):
            published.append((str(port.get("host_ip", "")), int(port["target"])))
        else:
            *host, _published, inside = str(port).split("/")[0].split(":")
            published.append((host[0] if host else "", int(inside)))
    for host_ip, target in published:
        if target == http_port:
            assert host_ip == "127.0.0.1", "/metrics must not be published beyond loopback"
        else:
            assert target == int(env["VOICE_SIGNALING_PORT"]), published


def test_coturn_listens_on_udp_tcp_and_tls_with_a_mounted_certificate() -> None:
    coturn = _services()["coturn"]
    conf = dict(
        [*line.split("=", 1), ""][:2]
        for line in TURN_CONF.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for off in ("no-tls", "no-tcp", "no-udp"):
        assert off not in conf, f"{off} in {TURN_CONF.name}"
    assert conf["listening-port"] == "3478" and "use-auth-secret" in conf
    assert any(a.startswith("--tls-listening-port=") for a in coturn["command"])
    mounts = {v.split(":")[1] for v in coturn["volumes"]}
    assert Path(conf["cert"]).parent.as_posix() in mounts
    assert Path(conf["pkey"]).parent.as_posix() in mounts
    assert "443" in TURN_CONF.read_text()  # how to serve TURN over TLS on 443 is documented


def test_every_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"


def test_every_signaling_variable_in_compose_is_a_server_setting() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    names = re.findall(rf"\b{ENV_PREFIX}([A-Z_]+):", COMPOSE.read_text())
    assert names, "compose file configures no signaling settings"
    unknown = [n for n in names if n.lower() not in fields]
    assert not unknown, f"compose sets variables the server ignores: {unknown}"
