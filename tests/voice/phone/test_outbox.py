"""The call's outbox: what the dialer waits on resolves whatever happens to the first message."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from voice.call import messages as m
from voice.call.outbound import CallSealer
from voice.errors import BadPublicKey
from voice.phone.outbox import CallOutbox


class _Sealer:
    """Seals by naming the message; ``fails`` raises as sealing to a bad key does."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails

    def seal(self, message: m.Message) -> bytes:
        if self.fails:
            raise BadPublicKey("not a valid Ed25519 public key")
        return type(message).__name__.encode()


def _outbox(sealer: _Sealer, sent: list[bytes]) -> CallOutbox:
    async def send(body: bytes) -> None:
        sent.append(body)

    failures: list[Any] = []
    return CallOutbox(cast(CallSealer, sealer), send, failures.append, name="test")


async def test_a_first_message_that_cannot_be_sealed_fails_first_send() -> None:
    sent: list[bytes] = []
    outbox = _outbox(_Sealer(fails=True), sent)
    outbox.start()
    with pytest.raises(BadPublicKey):
        outbox.put(m.Accept())
    with pytest.raises(BadPublicKey):  # the dialer is told, not left waiting
        await asyncio.wait_for(outbox.first_send, 1)
    outbox.close()
    assert outbox.task is not None
    await asyncio.wait_for(outbox.task, 1)
    assert sent == []


async def test_first_send_resolves_once_the_first_message_left() -> None:
    sent: list[bytes] = []
    outbox = _outbox(_Sealer(fails=False), sent)
    outbox.start()
    outbox.put(m.Accept())
    outbox.put(m.Hangup())
    await asyncio.wait_for(outbox.first_send, 1)
    outbox.close()
    assert outbox.task is not None
    await asyncio.wait_for(outbox.task, 1)
    assert sent == [b"Accept", b"Hangup"]
