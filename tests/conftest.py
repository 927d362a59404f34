"""Suite-wide: which tests share a resource of this machine and must not run at once.

CI runs the suite on two pytest-xdist workers (scripts/test.sh: ``-n 2 -m "not alone"``), then
the ``alone`` tests by themselves; most tests wait on real time (calls, timers) rather than the
CPU, so two at a time nearly halve the wall time. The scheduler below hands out whole modules
(module-scoped fixtures and running totals stay on one worker), and modules that touch one
machine-wide thing as one unit, run one after another:

* ``netlab``: network namespaces, veth pairs and iptables rules of the calls across NATs;
* ``pulse``: the one PulseAudio daemon (its null sinks, default devices, loaded modules).

(xdist's own ``--dist loadgroup`` would do this with markers, but with pytest 9 it silently
groups nothing: the group suffix it puts on node ids no longer takes.) The netlab modules are
collected first, so that their unit, the longest, starts at once on one worker while the other
takes everything else.
"""

from __future__ import annotations

import resource
from typing import Any

import pytest

# No core files: a hung `voice` process is made to dump its threads with SIGABRT
# (tests/voice/cli_harness.py), whose core would otherwise land in the repository.
resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))

NETLAB_MODULES = frozenset(
    {
        "tests/integration/test_real_network.py",
        "tests/impair/test_impair_stage.py",
    }
)
PULSE_MODULES = frozenset(
    {
        "tests/integration/test_pyaudio_call.py",
        "tests/voice/audio/test_audio_devicelist.py",
        "tests/voice/audio/test_audio_devices.py",
        "tests/voice/audio/test_switch.py",
        "tests/voice/test_cli_audio.py",
        "tests/voice/test_cli_doctor.py",
        "tests/voice/test_cli_local.py",
        "tests/voice/ui/test_ui_devices.py",
    }
)
SHARED = {path: "netlab" for path in NETLAB_MODULES} | {path: "pulse" for path in PULSE_MODULES}
# Run after the parallel part, with the machine to themselves (marker ``alone``): the calls
# across NATs (ICE checks that time out on a busy machine pick the relay instead of the direct
# path the test asserts), a call through PulseAudio devices, and speech quality under loss.
ALONE_MODULES = NETLAB_MODULES | {
    "tests/integration/test_pyaudio_call.py",  # real-time PulseAudio devices: a late reader drifts
    "tests/voice/media/test_call_quality_loss.py",
    # packets on their 20 ms ticks: a busy second worker makes the clock skip a late tick
    "tests/voice/media/test_media_clock.py",
    "tests/voice/media/test_receiver_early_packet.py",
    "tests/voice/media/test_rtcp_early_feedback.py",
    "tests/voice/media/test_sender_media.py",
    "tests/voice/media/test_opus_binding.py",  # runs test_call_quality_loss with the system lib
}


def unit_of(nodeid: str) -> str:
    """The work unit of a test: its module, or the shared resource its module uses."""
    path = nodeid.split("::", 1)[0]
    return SHARED.get(path, path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: unit_of(item.nodeid) != "netlab")  # stable: netlab first
    for item in items:
        if item.nodeid.split("::", 1)[0] in ALONE_MODULES:
            item.add_marker(pytest.mark.alone)


@pytest.hookimpl(optionalhook=True)  # ``-p no:xdist`` runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByResource(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return ByResource(config, log)
