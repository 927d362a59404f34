"""The suite's worker groups (tests/conftest.py) name real modules and every netlab module."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ALONE_MODULES, NETLAB_MODULES, PULSE_MODULES, SHARED, unit_of

ROOT = Path(__file__).resolve().parents[1]


def test_every_shared_module_exists() -> None:
    """A renamed module would silently leave its group (and run beside its neighbours)."""
    missing = sorted(path for path in SHARED if not (ROOT / path).is_file())
    assert not missing, missing


def test_every_netlab_module_is_in_the_netlab_unit() -> None:
    marked = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("test_*.py")
        if "pytest.mark.netlab" in path.read_text() and path != Path(__file__)
    }
    assert marked == set(NETLAB_MODULES)


def test_units_are_modules_except_the_shared_ones() -> None:
    assert unit_of("tests/voice/test_cli_group.py::test_x") == "tests/voice/test_cli_group.py"
    assert unit_of("tests/voice/audio/test_switch.py::test_y[a]") == "pulse"
    assert unit_of("tests/integration/test_real_network.py::test_z") == "netlab"


PULSE_SIGNS = re.compile(
    r"pulse\.sh|pactl|PyAudioMicrophone|PyAudioSpeaker|LiveMicrophone|LiveSpeaker|list_devices"
)


def test_every_module_that_drives_pulseaudio_is_in_the_pulse_unit() -> None:
    """A new module that plays through the PulseAudio daemon must take turns with the others."""
    driving = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("test_*.py")
        if PULSE_SIGNS.search(path.read_text()) and path != Path(__file__)
    }
    assert driving <= PULSE_MODULES, sorted(driving - PULSE_MODULES)


def test_the_alone_modules_exist() -> None:
    missing = sorted(path for path in ALONE_MODULES if not (ROOT / path).is_file())
    assert not missing, missing
