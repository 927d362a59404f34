"""Attack 1.6: identity misbinding. The server relays a real call but lies about a username.

On first contact the server delivers alice's call to bob labelled "mallory" (an account of the
server's choosing) and routes bob's replies to "mallory" back to alice. Every key is genuine, so
no key check can object, and bob pins alice's key under "mallory". Before usernames were in the
transcript both phones showed the SAME SAS, so the users' check passed while bob believed he
talked to mallory. Now each side binds the usernames it believes in (docs/protocol.md, Part 2,
section 4): the transcripts differ, so the keys differ (no audio authenticates, the SASes would
differ), and since the accept is sealed with the callee's call key, the caller cannot even open
it: its call never connects.
The mirror attack (bob dials "mallory", the server answers the lookup with alice's key and
routes the call to alice as from bob) is caught the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.adversarial.malicious_server import Behaviour, Envelope, running_server
from tests.adversarial.phones import Person, phone
from voice.call.events import State


class Relabel(Behaviour):
    """Honest routing, except that ``real`` appears to ``victim`` under the name ``alias``."""

    def __init__(self, *, victim: str, real: str, alias: str) -> None:
        self.victim, self.real, self.alias = victim, real, alias

    def on_lookup(self, user: str) -> bytes | None:
        if user == self.alias:
            return self.server.keys.get(self.real)  # asked by anyone: the real user's key
        return super().on_lookup(user)

    async def on_send(self, envelope: Envelope) -> None:
        if (envelope.sender, envelope.to) == (self.real, self.victim):
            await self.server.deliver(self.victim, self.alias, envelope.body)
        elif (envelope.sender, envelope.to) == (self.victim, self.alias):
            await self.server.deliver(self.real, self.victim, envelope.body)
        else:
            await super().on_send(envelope)


@pytest.mark.parametrize("misled", ["callee", "caller"])
async def test_a_relabelled_call_gives_the_two_users_different_sas(
    tmp_path: Path, misled: str
) -> None:
    alice, bob, mallory = (Person.make(n, tmp_path) for n in ("alice", "bob", "mallory"))
    attack = Relabel(victim="bob", real="alice", alias="mallory")
    async with (
        running_server(attack) as server,
        phone(mallory, server.url),  # a registered account, online, of the server's choosing
        phone(alice, server.url) as pa,
        phone(bob, server.url) as pb,
    ):
        if misled == "callee":  # alice dials bob; bob is told "mallory" is calling
            caller_phone, a = pa, await pa.call("bob")
            b = await pb.incoming(timeout=10)
            callee = b
        else:  # bob dials "mallory"; the server hands the call to alice
            caller_phone, b = pb, await pb.call("mallory")
            a = await pa.incoming(timeout=10)
            callee = a
        await callee.accept()
        async with asyncio.timeout(10):  # accepted (its audio will never authenticate)
            while callee.state is not State.CONNECTED and not callee.state.terminal:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        # The relay worked: bob's phone holds alice's real key under the name "mallory" ...
        assert (a.peer, b.peer) == ("bob", "mallory")
        assert b.peer_key == alice.identity.public_key == server.keys["alice"]
        assert a.peer_key == bob.identity.public_key
        pinned = bob.contacts.get("mallory")
        assert pinned is not None and pinned.public_key == alice.identity.public_key
        # ... but the two phones disagree on who is who, so their keys differ: no audio
        # authenticates, and the callee's accept, sealed with its call key, does not open at
        # the caller, whose call never connects (before the call keys sealed the accept, both
        # connected and showed two different SASes).
        ((a_tx, a_rx),) = alice.keys.by_call[a.call_id]
        ((b_tx, b_rx),) = bob.keys.by_call[b.call_id]
        assert a_tx != b_rx and b_tx != a_rx
        caller = b if callee is a else a
        with pytest.raises(TimeoutError):
            await caller.wait_connected(timeout=2)
        assert caller.sas is None and caller_phone.dropped["bad_envelope"] >= 1
        stats = callee.media_stats()
        assert stats is not None and stats.rtp_packets_received == 0
        await caller.hangup()
