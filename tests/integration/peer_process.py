"""A phone in its own process, for tests that kill a peer: it auto-answers with a tone.

    python -m tests.integration.peer_process URL USER HOME

Prints ``ready`` once logged in, then serves calls until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from voice.audio.sinks import NullSink
from voice.audio.sources import ToneSource
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.phone import Phone, PhoneConfig


async def main(url: str, user: str, home: Path) -> None:
    config = PhoneConfig(
        server_url=url,
        user=user,
        identity=Identity.load_or_create(home / "voice" / "identity.key"),
        contacts=ContactBook(home / "voice" / "contacts.json"),
    )
    phone = await Phone.connect(
        config, audio=lambda call: (ToneSource(880.0), NullSink()), auto_answer=True
    )
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await phone.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
