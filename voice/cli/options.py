"""What ``voice call`` and ``voice listen`` were asked to do, checked once from the arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from voice.cli.audio import AudioChoice
from voice.errors import UsageError
from voice.phone.config import RELAY_POLICIES, RelayPolicy

__all__ = ["CallOptions"]


@dataclass(frozen=True)
class CallOptions:
    audio: AudioChoice
    auto_answer: bool = False
    duration: float | None = None
    timeout: float | None = None
    prompt: bool = True
    relay: RelayPolicy = "auto"  # PhoneConfig.relay

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CallOptions:
        for name in ("duration", "timeout"):
            value = getattr(args, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name} must be a positive number of seconds")
        relay = getattr(args, "relay", "auto")
        if relay not in RELAY_POLICIES:
            raise UsageError(f"--relay must be one of {', '.join(RELAY_POLICIES)}")
        return cls(
            audio=AudioChoice.from_args(args),
            auto_answer=getattr(args, "auto_answer", False),
            duration=args.duration,
            timeout=args.timeout,
            prompt=not args.no_prompt,
            relay=relay,
        )
