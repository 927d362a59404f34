"""The pair of in-memory phones most call tests start from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.voice.call.call_harness import Pair, Wire


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    wire = Wire(tmp_path)
    return wire, wire.add("alice"), wire.add("bob")
