"""Two media sessions in one process joined into a call, the way the phone joins them.

The tests create the sessions themselves (tones, sinks, ICE servers, relay policy differ); what
follows creation is always the same and lives here: ICE between the two, fresh SRTP keys (one
per direction, as the key agreement would derive them), then both start sending.
"""

from __future__ import annotations

import asyncio
import os

from voice.media.session import MediaSession


async def connect_and_start(alice: MediaSession, bob: MediaSession) -> None:
    """Connect ``alice`` and ``bob`` to each other, key SRTP end to end and start both."""
    await asyncio.gather(
        alice.connect(bob.local_description()), bob.connect(alice.local_description())
    )
    a_to_b, b_to_a = os.urandom(44), os.urandom(44)
    alice.set_keys(tx=a_to_b, rx=b_to_a)
    bob.set_keys(tx=b_to_a, rx=a_to_b)
    alice.start()
    bob.start()
