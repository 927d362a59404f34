"""voice.cli.serverpins: trust-on-first-use pins of each server address's id (and name)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voice.cli.serverpins import MAX_PINS, ServerPin, ServerPins
from voice.errors import UsageError

ID_A, ID_B, ID_M = "a" * 32, "b" * 32, "m" * 32


def test_the_first_id_is_pinned_and_never_overwritten(tmp_path: Path) -> None:
    pins = ServerPins(tmp_path / "conf" / "servers.json")
    assert pins.get("wss://a:1") is None
    pins.pin("wss://a:1", "alpha", ID_A)
    pins.pin("wss://a:1", "alpha", ID_M)  # a later login cannot move the pin
    pins.pin("wss://a:1", "mallory", ID_M)
    pins.pin("wss://b:2", "voice-signaling", ID_B)
    again = ServerPins(tmp_path / "conf" / "servers.json")
    assert again.get("wss://a:1") == ServerPin("alpha", ID_A)
    assert again.get("wss://b:2") == ServerPin("voice-signaling", ID_B)
    assert again.path.stat().st_mode & 0o777 == 0o600
    assert json.loads(again.path.read_text())["wss://a:1"] == {"name": "alpha", "id": ID_A}


def test_a_pin_from_before_server_ids_gains_the_id_only_under_its_name(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"ws://a:1": "alpha", "ws://b:2": "beta"}))
    path.chmod(0o600)
    pins = ServerPins(path)
    assert pins.get("ws://a:1") == ServerPin("alpha", None)  # the name is still checked
    pins.pin("ws://b:2", "mallory", ID_M)  # another name: the old pin stays as it was
    pins.pin("ws://a:1", "alpha", ID_A)  # the same name: now the id is pinned too
    pins.pin("ws://a:1", "alpha", ID_M)
    assert pins.get("ws://a:1") == ServerPin("alpha", ID_A)
    assert pins.get("ws://b:2") == ServerPin("beta", None)


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"[]",
        b'{"ws://a:1": 5}',
        b'{"ws://a:1": ["x"]}',
        b'{"\xff": "x"}',
        b'{"ws://a:1": {"name": "x"}}',
        b'{"ws://a:1": {"name": "x", "id": 5}}',
        b'{"ws://a:1": {"name": "x", "id": "y", "z": 1}}',
    ],
)
def test_a_malformed_file_is_a_clear_error_not_an_empty_pin_list(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "servers.json"
    path.write_bytes(content)
    path.chmod(0o600)  # a private file: only its content is wrong
    with pytest.raises(UsageError, match=r"servers\.json"):
        ServerPins(path).get("ws://a:1")


def test_an_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    path.write_text('{"x": "' + "y" * (MAX_PINS * 600) + '"}')
    with pytest.raises(UsageError, match="too large"):
        ServerPins(path).get("x")
