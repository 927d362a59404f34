"""The phone: the asyncio shell around the pure call core (:mod:`voice.call`).

It pumps signaling deliveries through :class:`~voice.call.inbound.Inbound`, runs one task per
call around its :class:`~voice.call.machine.CallMachine`, and owns the I/O the core never
touches: the signaling client, media sessions, audio devices, the clock and the files.
"""

from voice.call.events import Outcome
from voice.call.inbound import KeyChangedWarning
from voice.phone.call import Call, CallTimings
from voice.phone.config import PhoneConfig, TestHooks
from voice.phone.phone import AudioFactory, Phone

__all__ = [
    "AudioFactory",
    "Call",
    "CallTimings",
    "KeyChangedWarning",
    "Outcome",
    "Phone",
    "PhoneConfig",
    "TestHooks",
]
