"""The `voice` command over TLS: --ca / VOICE_CA, refusals with their exit codes, --insecure."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from signaling.server import serve_signaling
from tests.signaling.helpers import server_config
from tests.support.tls import TestCA
from tests.voice.cli_harness import run_voice
from voice.exitcodes import ExitCode

HEADLESS = ("--silence", "--no-output", "--no-prompt", "--timeout", "1")


async def test_listen_over_wss_with_a_ca_file_and_the_id_is_pinned(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "pki")
    cert = ca.issue(tmp_path / "pki", "real", dns=["localhost"], ips=["127.0.0.1"])
    async with serve_signaling(server_config(tls_cert=cert.cert, tls_key=cert.key)) as server:
        conf = tmp_path / "bob"
        done = await run_voice(
            conf, "--ca", str(ca.cert_path), "listen", *HEADLESS, server=server.url, user="bob"
        )
        assert done.proc.returncode == ExitCode.NO_ANSWER, done.stdout + done.stderr
        assert f"Logged in to {server.url} as bob" in done.stdout
        pins = json.loads((conf / "servers.json").read_text())
        assert pins == {server.url: {"name": server.name, "id": server.identity.server_id}}
        # the same from the environment, by the name in the certificate
        by_name = f"wss://localhost:{server.port}"
        env = {"VOICE_CA": str(ca.cert_path)}
        done = await run_voice(conf, "listen", *HEADLESS, server=by_name, user="bob", env=env)
        assert done.proc.returncode == ExitCode.NO_ANSWER, done.stdout + done.stderr


async def test_an_untrusted_certificate_is_refused_with_exit_4(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "pki")
    cert = ca.issue(tmp_path / "pki", "real", ips=["127.0.0.1"])
    async with serve_signaling(server_config(tls_cert=cert.cert, tls_key=cert.key)) as server:
        done = await run_voice(tmp_path / "bob", "listen", *HEADLESS, server=server.url, user="bob")
        assert done.proc.returncode == ExitCode.LOGIN_REFUSED, done.stdout + done.stderr
        assert "certificate does not verify" in done.stderr and "--ca" in done.stderr
        assert "Traceback" not in done.stderr
        assert not server.router.registry.exists("bob")


async def test_plain_ws_to_a_remote_server_needs_insecure(tmp_path: Path) -> None:
    remote = "ws://203.0.113.7:8765"  # TEST-NET: refused before any packet is sent
    done = await run_voice(tmp_path / "bob", "listen", *HEADLESS, server=remote, user="bob")
    assert done.proc.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert "refusing plain ws://203.0.113.7:8765" in done.stderr and "--insecure" in done.stderr
    assert "Traceback" not in done.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed: 0.0.0.0 reaches this host, quickly refused
    closed = f"ws://0.0.0.0:{port}"
    done = await run_voice(
        tmp_path / "bob", "--insecure", "listen", *HEADLESS, server=closed, user="bob"
    )
    assert done.proc.returncode == ExitCode.SERVER_UNREACHABLE, done.stdout + done.stderr
