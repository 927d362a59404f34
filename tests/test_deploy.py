"""The deployment files stay valid: docker-compose.yml parses and configures real settings.

What the compose file must say (issue 10): signaling over TLS only, with /healthz and /metrics
never published beyond the Docker host's loopback; coturn on UDP, TCP and TLS with its
certificate mounted; a healthcheck for every service; TURN_SECRET and TURN_HOST required (no
silent placeholder); stun:, turn: (udp and tcp) and turns: URIs handed out; nothing provisioned
that no code uses.

Janus (issue 14, the SFU of voice/group): host networking, its public address required
(JANUS_PUBLIC_IP), its wss:// certificate mounted; deploy/janus's configs serve the API over
wss:// only, load the VideoRoom and the WebSockets transport and nothing else, no admin API.
The real Janus starts with those very configs (only folders, certificate and port rewritten).

Several instances (issue 15): two signaling instances behind HAProxy, sharing Redis and a
PostgreSQL registry, one certificate and one server id; POSTGRES_PASSWORD and
SIGNALING_SERVER_ID needed to start (empty, never defaulted, when unset). deploy/haproxy.cfg
terminates TLS with the deployment's certificate (the one logins are bound to), begins TLS again
to the instances and verifies them, tells them the client's address (X-Forwarded-For, trusted
from HAProxy only) and checks each with a WebSocket upgrade; the real HAProxy runs that very file
in front of two real instances on a real PostgreSQL: a login through it succeeds, an instance
sees the client's own address, and a killed instance is marked down and new logins go to the
other.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import csv
import dataclasses
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from signaling.auth import tls_server_end_point
from signaling.config import ENV_PREFIX, Config
from signaling.server import HEALTH_CHECK_PATH
from tests.signaling.helpers import make_user
from tests.support.postgres import PASSWORD, PostgresCluster, needs_postgres
from tests.support.signalingd import SignalingProcess, free_port, start_signaling
from tests.support.tls import TestCA
from voice.errors import LoginRefused
from voice.group import janusd
from voice.net.client import SignalingClient

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
TURN_CONF = ROOT / "deploy" / "turnserver.conf"
JANUS_DIR = ROOT / "deploy" / "janus"
JANUS_CONF = JANUS_DIR / "janus.jcfg"
JANUS_WS_CONF = JANUS_DIR / "janus.transport.websockets.jcfg"
JANUS_ROOM_CONF = JANUS_DIR / "janus.plugin.videoroom.jcfg"
HAPROXY_CONF = ROOT / "deploy" / "haproxy.cfg"
ENV = {
    "TURN_SECRET": "not-a-real-secret",
    "TURN_HOST": "turn.example.org",
    "JANUS_PUBLIC_IP": "203.0.113.7",
    "POSTGRES_PASSWORD": "not-a-real-password",
    "SIGNALING_SERVER_ID": "0123456789abcdef0123456789abcdef",
    "SIGNALING_HOST": "signaling.example.org",
}
INSTANCES = ("signaling-1", "signaling-2")

needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is missing: scripts/setup.sh installs Debian's (a parser only)",
)
needs_janus = pytest.mark.skipif(
    shutil.which("janus") is None, reason="janus is missing: scripts/setup.sh installs it"
)
needs_haproxy = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is missing: scripts/setup.sh installs it"
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
    """The services as `docker-compose config` resolves them under ``env`` (each distinct
    environment is resolved once per run: a run of docker-compose takes most of a second)."""
    return copy.deepcopy(_resolved(json.dumps(env, sort_keys=True)))


@functools.cache
def _resolved(env_json: str) -> dict[str, Any]:
    result = _compose_config(json.loads(env_json))
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


@needs_compose
def test_compose_file_parses_with_docker_compose() -> None:
    # nothing that no code uses; Janus is the SFU of group calls (voice/group)
    assert set(_services()) == {*INSTANCES, "haproxy", "redis", "postgres", "coturn", "janus"}


@needs_compose
@pytest.mark.parametrize("variable", ["TURN_SECRET", "TURN_HOST"])
def test_compose_refuses_to_start_without_required_settings(variable: str) -> None:
    env = {k: v for k, v in ENV.items() if k != variable}
    result = _compose_config(env, drop=(variable,))
    assert result.returncode != 0
    assert f"set {variable}" in result.stderr
    assert "turn.example" not in COMPOSE.read_text().replace("turn.example.org", "")
    assert "203.0.113" not in COMPOSE.read_text()  # no placeholder address either


@needs_compose
def test_compose_parses_with_only_the_turn_settings_and_no_default_secret_fills_the_rest() -> None:
    """`docker-compose config` with only TURN_SECRET and TURN_HOST set parses; the database
    password and the server id are then empty, never a default: postgres refuses to initialise
    without a password, and an instance refuses a postgresql:// registry without a server id
    (test_registry_postgres.py::test_a_postgresql_db_needs_an_explicit_server_id)."""
    env = {"TURN_SECRET": ENV["TURN_SECRET"], "TURN_HOST": ENV["TURN_HOST"]}
    result = _compose_config(
        env, drop=("POSTGRES_PASSWORD", "SIGNALING_SERVER_ID", "SIGNALING_HOST")
    )
    assert result.returncode == 0, result.stderr
    services = _yaml_to_json(result.stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == ""
    # HAProxy then refuses to start (test_haproxy_config_is_valid_and_terminates_tls...)
    assert services["haproxy"]["environment"]["SIGNALING_TLS_NAME"] == ""
    for name in INSTANCES:
        assert services[name]["environment"]["PGPASSWORD"] == ""
        assert services[name]["environment"]["VOICE_SIGNALING_SERVER_ID"] == ""


@needs_compose
def test_signaling_hands_out_stun_turn_and_turns_uris() -> None:
    env = _services()["signaling-1"]["environment"]
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
        in (moved["signaling-2"]["environment"]["VOICE_SIGNALING_TURN_URIS"])
    )
    assert "--tls-listening-port=443" in moved["coturn"]["command"]


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of every port a service publishes."""
    published: list[tuple[str, int, int]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            host_ip = str(port.get("host_ip", ""))
            published.append((host_ip, int(port["published"]), int(port["target"])))
        else:
            *host, outside, inside = str(port).split("/")[0].split(":")
            published.append((host[0] if host else "", int(outside), int(inside)))
    return published


@needs_compose
def test_signaling_is_tls_only_and_keeps_metrics_private() -> None:
    services = _services()
    for name in INSTANCES:
        env = services[name]["environment"]
        assert env["VOICE_SIGNALING_TLS_CERT"] and env["VOICE_SIGNALING_TLS_KEY"]
        # the instances publish /healthz and /metrics on the host's loopback, nothing else
        assert [(ip, inside) for ip, _out, inside in _published(services[name])] == [
            ("127.0.0.1", int(env["VOICE_SIGNALING_HTTP_PORT"]))
        ]
    assert len({out for name in INSTANCES for _ip, out, _in in _published(services[name])}) == 2
    # wss:// is published by HAProxy only, and Redis and PostgreSQL not at all
    assert [(ip, inside) for ip, _out, inside in _published(services["haproxy"])] == [("", 8765)]
    assert not services["redis"].get("ports") and not services["postgres"].get("ports")


@needs_compose
def test_instances_are_one_deployment_on_postgresql_and_redis() -> None:
    services = _services()
    first, second = (services[name]["environment"] for name in INSTANCES)
    assert first == second  # same certificate, server id, name, registry, Redis, limits
    Config.from_sources(first)  # the server accepts every setting
    assert first["VOICE_SIGNALING_SERVER_ID"] == ENV["SIGNALING_SERVER_ID"]
    assert first["VOICE_SIGNALING_DB"] == "postgresql://voice@postgres:5432/voice"  # no password
    assert first["PGPASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == ENV["POSTGRES_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_USER"] == "voice"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "voice"
    assert first["VOICE_SIGNALING_REDIS"] == "redis://redis:6379/0"
    assert any(v.endswith(":/var/lib/postgresql/data:rw") for v in services["postgres"]["volumes"])
    for name in INSTANCES:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }


@needs_compose
def test_haproxy_gets_its_config_and_every_address_it_names() -> None:
    services = _services()
    haproxy = services["haproxy"]
    assert f"{HAPROXY_CONF}:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    env = haproxy["environment"]
    assert set(env) == set(re.findall(r"\$\{(\w+)\}", HAPROXY_CONF.read_text()))
    instance_env = services["signaling-1"]["environment"]
    for index, name in enumerate(INSTANCES, 1):
        assert env[f"SIGNALING_{index}"] == f"{name}:{instance_env['VOICE_SIGNALING_PORT']}"
    assert env["HAPROXY_WSS_BIND"] == ":8765"
    # HAProxy serves the instances' own certificate (logins are bound to it) ...
    cert = instance_env["VOICE_SIGNALING_TLS_CERT"]
    key = instance_env["VOICE_SIGNALING_TLS_KEY"]
    shell, flag, start = haproxy["command"]
    assert (shell, flag) == ("sh", "-c") and start.startswith("umask 077 && ")  # key: 0600
    assert f"cat {cert} {key} > {env['HAPROXY_TLS_PEM']}" in start
    assert start.endswith("&& exec haproxy -W -db -f /usr/local/etc/haproxy/haproxy.cfg")
    mounts = {v.split(":")[1] for v in haproxy["volumes"]}
    assert str(Path(cert).parent) in mounts
    # ... verifies them by the name clients dial ...
    assert env["SIGNALING_TLS_NAME"] == instance_env["VOICE_SIGNALING_PUBLIC_HOST"]
    assert env["SIGNALING_TLS_NAME"] == ENV["SIGNALING_HOST"]
    # ... and the instances believe X-Forwarded-For from HAProxy's fixed address only, which
    # Docker never hands another container (they get addresses from ip_range only).
    address = haproxy["networks"]["default"]["ipv4_address"]
    assert instance_env["VOICE_SIGNALING_TRUSTED_PROXIES"] == address
    (network,) = _yaml_to_json(COMPOSE.read_text())["networks"]["default"]["ipam"]["config"]
    fixed = ipaddress.ip_address(address)
    assert fixed in ipaddress.ip_network(network["subnet"])
    assert fixed not in ipaddress.ip_network(network["ip_range"])
    # HAProxy starts as root to read the key, and its config drops to its own user
    assert haproxy["user"] == "0"
    assert "user haproxy" in HAPROXY_CONF.read_text()
    assert env["HAPROXY_STATS_BIND"].startswith("127.0.0.1:")  # the status page stays inside
    assert env["HAPROXY_STATS_BIND"].split(":")[1] in " ".join(haproxy["healthcheck"]["test"])


@needs_compose
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


@needs_compose
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


# --- HAProxy (deploy/haproxy.cfg) in front of two real instances ------------------------------


def _haproxy_env(tls: Path, ca: TestCA, **ports: int) -> dict[str, str]:
    """deploy/haproxy.cfg's variables for instances on loopback (ports by name); ``tls`` the
    certificate and key in one PEM file, issued by ``ca`` for the name "signaling"."""
    return {
        "HAPROXY_WSS_BIND": f"127.0.0.1:{ports['wss']}",
        "HAPROXY_TLS_PEM": str(tls),
        "HAPROXY_STATS_BIND": f"127.0.0.1:{ports['stats']}",
        "SIGNALING_1": f"127.0.0.1:{ports['one']}",
        "SIGNALING_2": f"127.0.0.1:{ports['two']}",
        "SIGNALING_CA": str(ca.cert_path),
        "SIGNALING_TLS_NAME": "signaling",
    }


def _deployment_pem(tmp_path: Path) -> tuple[TestCA, Any, Path]:
    """A CA, the deployment's certificate (for "signaling" and 127.0.0.1) and HAProxy's PEM."""
    ca = TestCA.create(tmp_path / "pki")
    cert = ca.issue(tmp_path / "pki", "signaling", ips=["127.0.0.1"])  # one, for all
    pem = tmp_path / "pki" / "haproxy.pem"
    pem.write_bytes(Path(cert.cert).read_bytes() + Path(cert.key).read_bytes())
    return ca, cert, pem


@needs_haproxy
def test_haproxy_config_is_valid_and_terminates_tls_with_verified_instances(
    tmp_path: Path,
) -> None:
    ca, _cert, pem = _deployment_pem(tmp_path)
    env = _haproxy_env(pem, ca, wss=18765, stats=18404, one=18001, two=18003)
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CONF)],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Configuration file is valid" in done.stdout and "WARNING" not in done.stderr
    nameless = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CONF)], capture_output=True, text=True,
        env={**os.environ, **env, "SIGNALING_TLS_NAME": ""}, timeout=30, check=False,
    )  # fmt: skip
    assert nameless.returncode != 0 and "verifyhost" in nameless.stderr  # refuses, says why
    text = HAPROXY_CONF.read_text()
    assert f"uri {HEALTH_CHECK_PATH} " in text  # the instances log those checks quietly
    words = [line.split("#")[0].split() for line in text.splitlines()]
    assert ["mode", "http"] in words
    bind = next(line for line in words if line[:1] == ["bind"] and "crt" in line)
    assert "ssl" in bind  # TLS ends here, with the deployment's certificate
    server = " ".join(next(line for line in words if line[:1] == ["default-server"]))
    assert "ssl verify required" in server and "verifyhost" in server  # and starts again
    assert ["http-request", "del-header", "X-Forwarded-For"] in words
    assert ["option", "forwardfor"] in words
    assert ["http-check", "expect", "status", "101"] in words  # a WebSocket upgrade


def _haproxy_status(stats_port: int) -> dict[str, str]:
    """HAProxy's view of the signaling backend: server name -> status (UP, DOWN, ...)."""
    url = f"http://127.0.0.1:{stats_port}/stats;csv"
    with urllib.request.urlopen(url, timeout=2) as answer:
        text = answer.read().decode()
    rows = csv.DictReader(text.removeprefix("# ").splitlines())
    return {r["svname"]: r["status"] for r in rows if r["pxname"] == "signaling"}


async def _wait_status(
    haproxy: asyncio.subprocess.Process, stats_port: int, want: dict[str, str], limit: float
) -> float:
    """Seconds until HAProxy reports ``want`` (AssertionError with its last view after
    ``limit`` seconds)."""
    started = time.monotonic()
    status: dict[str, str] = {}
    while time.monotonic() - started < limit:
        assert haproxy.returncode is None, "haproxy exited"
        with contextlib.suppress(OSError):
            status = _haproxy_status(stats_port)
        if all(status.get(name) == state for name, state in want.items()):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"HAProxy never reported {want}: {status}")


@needs_haproxy
@needs_postgres
async def test_haproxy_terminates_tls_forwards_addresses_and_routes_around_a_dead_instance(
    tmp_path: Path,
) -> None:
    ca, cert, pem = _deployment_pem(tmp_path)
    server_id = ENV["SIGNALING_SERVER_ID"]
    with PostgresCluster.start() as pg:
        db = pg.new_database().replace(f":{PASSWORD}@", "@")  # PGPASSWORD, as in compose
        args = ["--db", db, "--server-id", server_id, "--tls-cert", cert.cert,
                "--tls-key", cert.key, "--trusted-proxies", "127.0.0.1"]  # fmt: skip
        one, two = await asyncio.gather(
            *(asyncio.to_thread(start_signaling, tmp_path, name, args, tls=True,
                                env={"PGPASSWORD": PASSWORD}) for name in ("one", "two"))
        )  # fmt: skip
        wss, stats = free_port(), free_port()
        env = _haproxy_env(pem, ca, wss=wss, stats=stats, one=one.port, two=two.port)
        with (tmp_path / "haproxy.log").open("wb") as sink:
            haproxy = await asyncio.create_subprocess_exec(
                "haproxy", "-db", "-f", str(HAPROXY_CONF),
                stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, env={**os.environ, **env},
            )  # fmt: skip
        try:
            await _through_haproxy(haproxy, wss, stats, one, two, ca, server_id)
            await _invitation_kept_out_of_the_log(wss, ca, tmp_path / "haproxy.log")
        except BaseException as exc:
            exc.add_note((tmp_path / "haproxy.log").read_text(errors="replace")[-3000:])
            raise
        finally:
            if haproxy.returncode is None:
                haproxy.terminate()
                await haproxy.wait()
            one.stop()
            two.stop()


async def _through_haproxy(
    haproxy: asyncio.subprocess.Process,
    wss: int,
    stats: int,
    one: SignalingProcess,
    two: SignalingProcess,
    ca: TestCA,
    sid: str,
) -> None:
    url = f"wss://127.0.0.1:{wss}"

    async def login(name: str) -> SignalingClient:
        user = make_user(name)  # TLS verified, the login bound to the certificate's hash
        return await SignalingClient.connect(
            url, user.name, user.pub, user.sign, ca_file=ca.cert_path, expected_server_id=sid
        )

    await _wait_status(haproxy, stats, {"signaling-1": "UP", "signaling-2": "UP"}, limit=10)
    first, second = await login("alice"), await login("bob")  # leastconn: one on each
    assert [(h or {}).get("logged_in") for h in (one.health(), two.health())] == [1, 1]
    await first.close()
    await second.close()
    # A client from 127.0.0.2, its own X-Forwarded-For naming someone else: the instance
    # counts the address HAProxy accepted it from, not HAProxy's, not the forged one.
    await _login_from("127.0.0.2", wss, ca, "frank", forged="198.51.100.7")
    lines = [json.loads(line) for p in (one, two) for line in p.log.read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    logins = [(e["user"], e["ip"]) for e in lines if e["event"] == "login" and "user" in e]
    assert ("frank", "127.0.0.2") in logins and len(logins) == 3, logins

    one.proc.kill()  # SIGKILL: no goodbye; only the health check can tell
    one.proc.wait()
    down = {"signaling-1": "DOWN", "signaling-2": "UP"}
    took = await _wait_status(haproxy, stats, down, limit=10)
    assert took < 5, took  # inter 1s, fall 2
    clients = [await login(name) for name in ("carol", "dave", "erin")]
    health = two.health()
    assert health is not None and health["logged_in"] == 3  # every new login went to two
    with pytest.raises(LoginRefused) as refused:  # one registry: alice's name is her key's
        await login("alice")
    assert refused.value.code == "username_taken"
    for client in clients:
        await client.close()


async def _invitation_kept_out_of_the_log(port: int, ca: TestCA, log: Path) -> None:
    """A client dials with its invitation in the URL: HAProxy logs the request, not the token."""
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    token = "invitation-token-do-not-log-0123"
    async with connect(f"wss://127.0.0.1:{port}/?invite={token}", ssl=context) as ws:
        assert json.loads(await ws.recv())["type"] == "challenge"
    text = ""
    for _ in range(100):  # HAProxy logs a session when it ends
        text = await asyncio.to_thread(log.read_text, errors="replace")
        if '"GET / HTTP/1.1"' in text:
            break
        await asyncio.sleep(0.05)
    assert '"GET / HTTP/1.1"' in text and token not in text


async def _login_from(source: str, port: int, ca: TestCA, name: str, *, forged: str) -> None:
    """Log ``name`` in through HAProxy from the local address ``source``, sending a forged
    X-Forwarded-For; the login is bound to the certificate the client saw (HAProxy's)."""
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    async with connect(
        f"wss://127.0.0.1:{port}", ssl=context, local_addr=(source, 0), compression=None,
        additional_headers={"X-Forwarded-For": forged},
    ) as ws:  # fmt: skip
        challenge = json.loads(await ws.recv())
        der = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        await ws.send(make_user(name).login_frame(challenge, binding=tls_server_end_point(der)))
        answer = json.loads(await ws.recv())
        assert answer["type"] == "welcome", answer


# --- Janus (deploy/janus, the janus service) -------------------------------------------------


def _jcfg(path: Path) -> dict[str, dict[str, str]]:
    """The settings of one of our .jcfg files, section by section (values as written, strings
    unquoted). Our files put one setting per line; the real Janus test below checks that Janus
    reads them."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if opened := re.fullmatch(r"([a-z_]+)\s*:\s*\{", line):
            current = sections.setdefault(opened.group(1), {})
        elif line == "}":
            current = None
        else:
            assert current is not None, f"{path.name}: setting outside a section: {raw!r}"
            key, value = (part.strip() for part in line.split("=", 1))
            current[key] = value.strip('"')
    return sections


def _entrypoint() -> list[str]:
    found = re.search(r"^ENTRYPOINT (\[.*\])$", (JANUS_DIR / "Dockerfile").read_text(), re.M)
    assert found, "deploy/janus/Dockerfile has no ENTRYPOINT in exec form"
    entry: list[str] = json.loads(found.group(1))
    return entry


@needs_compose
def test_janus_runs_on_host_networking_with_its_public_address_and_certificate() -> None:
    janus = _services()["janus"]
    assert Path(janus["build"]["context"]) == JANUS_DIR
    assert janus["network_mode"] == "host"  # RTP ports and real addresses, like coturn
    assert janus["environment"] == {
        "JANUS_PUBLIC_IP": "203.0.113.7", "JANUS_RTP_PORTS": "20000-29999"}  # fmt: skip
    moved = _services({**ENV, "JANUS_RTP_PORTS": "30000-30999"})["janus"]
    assert moved["environment"]["JANUS_RTP_PORTS"] == "30000-30999"
    # optional: a host with its public address on an interface needs no 1:1 mapping
    plain = {k: v for k, v in ENV.items() if k != "JANUS_PUBLIC_IP"}
    result = _compose_config(plain, drop=("JANUS_PUBLIC_IP",))
    assert result.returncode == 0, result.stderr
    assert _yaml_to_json(result.stdout)["services"]["janus"]["environment"]["JANUS_PUBLIC_IP"] == ""
    certificates = _jcfg(JANUS_WS_CONF)["certificates"]
    mounts = {v.split(":")[1]: v for v in janus["volumes"]}
    for path in (certificates["cert_pem"], certificates["cert_key"]):
        mount = mounts[Path(path).parent.as_posix()]
        assert mount.startswith("janus-tls:") and mount.endswith(":ro"), mount
    check = " ".join(janus["healthcheck"]["test"])
    assert f"/dev/tcp/127.0.0.1/{_jcfg(JANUS_WS_CONF)['general']['wss_port']}" in check
    assert janus["restart"] == "unless-stopped"
    assert janus["read_only"] is True  # Janus writes nothing; recordings could not land
    assert "8989/tcp" in COMPOSE.read_text() and "20000-29999/udp" in COMPOSE.read_text()


def test_janus_configs_serve_wss_only_with_two_modules_and_no_admin_api() -> None:
    core, ws, room = _jcfg(JANUS_CONF), _jcfg(JANUS_WS_CONF), _jcfg(JANUS_ROOM_CONF)
    general = ws["general"]
    assert general["ws"] == "false" and general["wss"] == "true" and general["wss_port"] == "8989"
    assert ws["admin"] == {"admin_ws": "false", "admin_wss": "false"}
    assert Path(ws["certificates"]["cert_pem"]).parent == Path("/etc/janus-voice/tls")
    # the image runs its entrypoint script, which starts janus on the folder of our three files
    assert _entrypoint() == ["/usr/local/bin/janus-voice"]
    dockerfile = (JANUS_DIR / "Dockerfile").read_text()
    assert "COPY entrypoint.sh /usr/local/bin/janus-voice" in dockerfile
    script = (JANUS_DIR / "entrypoint.sh").read_text()
    assert f"${{JANUS_CONFIGS:-{core['general']['configs_folder']}}}" in script
    assert f"COPY {JANUS_CONF.name} {JANUS_WS_CONF.name} {JANUS_ROOM_CONF.name} " in dockerfile
    # module folders: the Dockerfile links the VideoRoom and the WebSockets transport only
    assert "plugins/libjanus_videoroom.so transports/libjanus_websockets.so;" in dockerfile
    for kind in ("plugins", "transports", "events", "loggers"):
        assert core["general"][f"{kind}_folder"] == f"/usr/local/lib/janus-voice/{kind}"
    assert "lib=/usr/local/lib/janus-voice;" in dockerfile
    assert "USER janus" in dockerfile  # not root
    for secret in ("api_secret", "token_auth", "admin_secret"):
        assert secret not in core["general"]  # our client sends none of them
    assert core["general"]["protected_folders"] == '["/"]'  # nothing is ever recorded
    assert core["nat"]["ice_tcp"] == "false" and core["media"]["ipv6"] == "false"
    # no static rooms; no admin_key: our client creates its rooms without one
    assert set(room) == {"general"} and "admin_key" not in room["general"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _module_dir() -> Path:
    """Where Janus's modules are, by the Dockerfile's glob (else wherever janusd finds them)."""
    found = sorted(Path("/usr/lib").glob("*/janus/plugins/libjanus_videoroom.so"))
    return found[0].parent.parent if found else janusd._lib_dir()


def _deploy_configs_in(folder: Path, *, port: int, cert: str, key: str) -> Path:
    """deploy/janus's three configs and module folders under ``folder``; only the folders,
    the certificate and the wss port differ from the image's."""
    conf, lib = folder / "conf", folder / "lib"
    conf.mkdir(parents=True)
    modules = _module_dir()
    for kind, name in (("plugins", janusd.PLUGIN), ("transports", janusd.TRANSPORT)):
        (lib / kind).mkdir(parents=True)
        (lib / kind / name).symlink_to(modules / kind / name)
    for kind in ("events", "loggers"):
        (lib / kind).mkdir()
    values = {
        "configs_folder": conf,
        **{f"{kind}_folder": lib / kind for kind in ("plugins", "transports", "events", "loggers")},
        "cert_pem": cert,
        "cert_key": key,
    }
    rewritten: list[str] = []
    for source in (JANUS_CONF, JANUS_WS_CONF, JANUS_ROOM_CONF):
        text = source.read_text()
        for name, value in values.items():
            text, hits = re.subn(
                rf'^(\s*{name}\s*=\s*)"[^"]*"', rf"\g<1>{json.dumps(str(value))}", text, flags=re.M
            )
            rewritten += [name] * hits
        text, hits = re.subn(r"^(\s*wss_port\s*=\s*)\d+", rf"\g<1>{port}", text, flags=re.M)
        rewritten += ["wss_port"] * hits
        (conf / source.name).write_text(text)
    assert sorted(rewritten) == sorted([*values, "wss_port"])  # each exactly once
    return conf


async def _info(url: str, context: ssl.SSLContext, deadline: float) -> dict[str, Any]:
    """Janus's answer to "info" over wss://, retried until Janus listens or ``deadline``."""
    while True:
        try:
            async with connect(
                url, ssl=context, subprotocols=[Subprotocol("janus-protocol")], open_timeout=2
            ) as ws:
                await ws.send(json.dumps({"janus": "info", "transaction": "x"}))
                async with asyncio.timeout(2):
                    reply: dict[str, Any] = json.loads(await ws.recv())
                return reply
        except (OSError, InvalidStatus, WebSocketException, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@needs_janus
async def test_real_janus_runs_the_deploy_configs_with_videoroom_and_websockets_only(
    tmp_path: Path,
) -> None:
    ca = TestCA.create(tmp_path / "pki")
    issued = ca.issue(tmp_path / "pki", "janus", dns=["localhost"], ips=["127.0.0.1"])
    port = _free_port()
    conf = _deploy_configs_in(tmp_path / "janus", port=port, cert=issued.cert, key=issued.key)
    # the image's entrypoint script, with docker-compose.yml's environment and our folder
    env = {**os.environ, "JANUS_CONFIGS": str(conf), "JANUS_PUBLIC_IP": "203.0.113.7",
           "JANUS_RTP_PORTS": "20000-29999"}  # fmt: skip
    out = tmp_path / "janus.out"
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            "sh", str(JANUS_DIR / "entrypoint.sh"),
            stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, env=env,
        )  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        try:
            info = await _info(f"wss://127.0.0.1:{port}/", context, time.monotonic() + 4)
            with pytest.raises((OSError, WebSocketException)):  # no plain ws:// on the port
                async with connect(f"ws://127.0.0.1:{port}/", open_timeout=2):
                    pass
        except Exception as exc:
            exc.add_note(f"exit code {proc.returncode}; janus printed:\n{out.read_text()[-3000:]}")
            raise
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # Janus closes its sessions and exits
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert info["janus"] == "server_info" and info["transaction"] == "x", info
    assert set(info["plugins"]) == {"janus.plugin.videoroom"}, info["plugins"]
    assert set(info["transports"]) == {"janus.transport.websockets"}, info["transports"]
    assert not info.get("events") and not info.get("loggers"), info
    assert "dependencies" not in info  # hide_dependencies
    assert info["server-name"] == "voice-group"
    assert info["public-ip"] == "203.0.113.7"  # --nat-1-1, as docker-compose.yml passes it
    assert info["ice-lite"] is False and info["ice-tcp"] is False and info["ipv6"] is False
    assert info["api_secret"] is False and info["auth_token"] is False  # the client sends none
