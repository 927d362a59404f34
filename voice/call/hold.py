"""Hold: who holds a connected call, and the epochs that order the hold messages (pure).

Either side may hold, both at once too. While either holds, both phones play nothing and send
digital silence in place of the microphone, at the same packet size and rate: the network sees
no change (constant-bitrate Opus), the held user's words do not leave the device, and no
health check mistakes a held call for a dead one, since authenticated packets keep arriving.

Each side numbers its own hold changes (``hold`` and ``resume`` messages) with an epoch from 1,
and takes a change from the peer only with an epoch above every one it took before. The replay
guard already refuses a copy of an envelope, but it lets envelopes through up to 64 places out
of order (as SRTP does): without the epoch, a server could hold back a ``hold`` and deliver it
after the ``resume`` that followed, leaving the peer's phone silent for the rest of the call.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice.call.events import HoldState
from voice.call.messages import MAX_HOLD_EPOCH, Hold, Resume

__all__ = ["HoldControl", "HoldRefused"]


class HoldRefused(Exception):
    """A hold input that changes nothing or comes too late; nothing was changed."""


@dataclass
class HoldControl:
    """The hold half of a connected call. ``max_epoch`` bounds our own changes (the wire's
    limit by default; tests lower it to keep the state space finite)."""

    max_epoch: int = MAX_HOLD_EPOCH
    local: bool = False
    remote: bool = False
    sent_epoch: int = 0  # our newest hold change
    seen_epoch: int = 0  # the peer's newest hold change that we took

    @property
    def state(self) -> HoldState:
        return HoldState(self.local, self.remote)

    def user(self, hold: bool) -> Hold | Resume:
        """Our user holds (True) or resumes (False): the message that tells the peer."""
        if hold == self.local:
            raise HoldRefused("the call is already on hold" if hold else "we are not holding")
        if self.sent_epoch >= self.max_epoch:
            raise HoldRefused("no hold changes left in this call")
        self.sent_epoch += 1
        self.local = hold
        return Hold(self.sent_epoch) if hold else Resume(self.sent_epoch)

    def receive(self, message: Hold | Resume) -> bool:
        """The peer's hold change; True if it changed whether the peer holds.

        A change that repeats the state (the one before it was lost) is taken, not refused: its
        epoch still counts."""
        if message.epoch <= self.seen_epoch:
            raise HoldRefused(f"{message.TYPE} epoch {message.epoch} is stale (replay or reorder)")
        self.seen_epoch = message.epoch
        held = isinstance(message, Hold)
        changed = held != self.remote
        self.remote = held
        return changed
