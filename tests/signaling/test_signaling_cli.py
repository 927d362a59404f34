"""Configuration from flags and environment, and the real `python -m signaling` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from signaling.cli import main
from signaling.config import Config
from signaling.errors import ConfigError
from tests.signaling.helpers import make_user
from voice.net.client import SignalingClient


def test_flags_win_over_environment_over_defaults() -> None:
    env = {
        "VOICE_SIGNALING_PORT": "9000",
        "VOICE_SIGNALING_MAX_QUEUE": "7",
        "VOICE_SIGNALING_TURN_URIS": "turn:a:1, turn:b:2",
        "VOICE_SIGNALING_RATE": "2.5",
    }
    config = Config.from_sources(env, {"port": "9001", "db": None})
    assert (config.port, config.max_queue, config.rate) == (9001, 7, 2.5)
    assert config.turn_uris == ("turn:a:1", "turn:b:2")
    assert config.turn is None  # no secret: TURN stays off
    assert config.db == Config().db


@pytest.mark.parametrize(
    "env",
    [
        {"VOICE_SIGNALING_PORT": "http"},
        {"VOICE_SIGNALING_PORT": "70000"},
        {"VOICE_SIGNALING_MAX_QUEUE": "0"},
        {"VOICE_SIGNALING_MAX_FRAME_BYTES": "1000"},  # no room for a full body
        {"VOICE_SIGNALING_NAME": ""},
        {"VOICE_SIGNALING_REDIS": "http://redis:6379"},
        {"VOICE_SIGNALING_REDIS": "redis://redis:6379/zero"},  # caught now, not at connecting
        {"VOICE_SIGNALING_REDIS": "unix:///run/redis.sock?timeout=1"},
    ],
)
def test_invalid_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Config.from_sources(env)


def test_a_bad_redis_url_is_refused_without_repeating_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_sources({"VOICE_SIGNALING_REDIS": "redis://default:hunter/2@redis:6379"})
    assert "hunter" not in str(refused.value)


def test_cli_reports_a_bad_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--max-queue", "-1"]) == 2
    assert "max_queue" in capsys.readouterr().err


async def test_python_m_signaling_serves_until_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    env = {**os.environ, "VOICE_SIGNALING_NAME": "cli-test", "VOICE_SIGNALING_HTTP_PORT": "0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "signaling",
        "--port",
        "0",
        "--db",
        str(db),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = json.loads(await proc.stderr.readline())
                if line["event"] == "listening":
                    break
        user = make_user("alice")
        url = f"ws://127.0.0.1:{line['port']}"
        client = await SignalingClient.connect(
            url, "alice", user.pub, user.sign, expected_server="cli-test"
        )
        await client.send("alice", b"hello")
        assert (await client.receive()).body == b"hello"
        reader, writer = await asyncio.open_connection("127.0.0.1", line["http_port"])
        writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert b'"logged_in": 1' in await reader.read()
        writer.close()
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert db.exists()
    rest = (await proc.stderr.read()).decode()
    assert "hello" not in rest and "aGVsbG8=" not in rest  # never the body
