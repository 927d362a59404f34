"""voice.cli.serverpins: trust-on-first-use pins of each server address's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from voice.cli.serverpins import MAX_PINS, ServerPins
from voice.errors import UsageError


def test_the_first_name_is_pinned_and_never_overwritten(tmp_path: Path) -> None:
    pins = ServerPins(tmp_path / "conf" / "servers.json")
    assert pins.get("ws://a:1") is None
    pins.pin("ws://a:1", "alpha")
    pins.pin("ws://a:1", "mallory")  # a later login cannot move the pin
    pins.pin("ws://b:2", "beta")
    again = ServerPins(tmp_path / "conf" / "servers.json")
    assert again.get("ws://a:1") == "alpha" and again.get("ws://b:2") == "beta"
    assert again.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "content", [b"{", b"[]", b'{"ws://a:1": 5}', b'{"ws://a:1": ["x"]}', b'{"\xff": "x"}']
)
def test_a_malformed_file_is_a_clear_error_not_an_empty_pin_list(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "servers.json"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"servers\.json"):
        ServerPins(path).get("ws://a:1")


def test_an_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    path.write_text('{"x": "' + "y" * (MAX_PINS * 600) + '"}')
    with pytest.raises(UsageError, match="too large"):
        ServerPins(path).get("x")
