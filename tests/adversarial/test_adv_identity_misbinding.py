"""Attack 1.6: identity misbinding. The server relays a real call but lies about a username.

On first contact the server delivers alice's call to bob labelled "mallory" (an account of the
server's choosing) and routes bob's replies to "mallory" back to alice. Every key is genuine, so
no key check can object, and bob pins alice's key under "mallory". Before usernames were in the
transcript both phones showed the SAME SAS, so the users' check passed while bob believed he
talked to mallory. Now each side binds the usernames it believes in (docs/protocol.md, Part 2,
section 4): the transcripts differ, so the keys (no audio authenticates) and the SASes differ.
The mirror attack (bob dials "mallory", the server answers the lookup with alice's key and
routes the call to alice as from bob) is caught the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.adversarial.malicious_server import Behaviour, Envelope, running_server
from tests.adversarial.phones import Person, connect_call, phone
from voice.errors import BadPublicKey


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
            a, b = await connect_call(pa, pb, "bob")
        else:  # bob dials "mallory"; the server hands the call to alice
            b, a = await connect_call(pb, pa, "mallory")
        # The relay worked: bob's phone holds alice's real key under the name "mallory" ...
        assert (a.peer, b.peer) == ("bob", "mallory")
        assert b.peer_key == alice.identity.public_key == server.keys["alice"]
        assert a.peer_key == bob.identity.public_key
        pinned = bob.contacts.get("mallory")
        assert pinned is not None and pinned.public_key == alice.identity.public_key
        # ... but the two phones disagree on who is who, and that shows in the SAS.
        assert a.sas is not None and b.sas is not None
        assert a.sas.value != b.sas.value and a.sas.words != b.sas.words
        ((a_tx, a_rx),) = alice.keys.by_call[a.call_id]
        ((b_tx, b_rx),) = bob.keys.by_call[b.call_id]
        assert a_tx != b_rx and b_tx != a_rx  # different keys: no audio authenticates
        await asyncio.sleep(0.5)
        for call in (a, b):
            stats = call.media_stats()
            assert stats is not None and stats.rtp_packets_received == 0
            assert stats.auth_failures > 0
        await a.hangup()
        await b.wait_ended(timeout=10)


async def test_control_the_same_server_honest_gives_equal_sas(tmp_path: Path) -> None:
    """Control: no relabelling (the alias is never used), so the SAS match."""
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    attack = Relabel(victim="bob", real="carol", alias="mallory")
    async with (
        running_server(attack) as server,
        phone(alice, server.url) as pa,
        phone(bob, server.url) as pb,
    ):
        a, b = await connect_call(pa, pb, "bob")
        assert a.sas is not None and a.sas == b.sas
        await a.hangup()
        await b.wait_ended(timeout=10)


class OwnKey(Behaviour):
    """Answer every lookup with the asker's own key: the asker would pin itself as the peer."""

    def on_lookup(self, user: str) -> bytes | None:
        asker = self.server.lookups[-1][0]
        return self.server.keys[asker]


async def test_a_lookup_answering_our_own_key_is_refused(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    async with (
        running_server(OwnKey()) as server,
        phone(alice, server.url) as pa,
        phone(bob, server.url),
    ):
        with pytest.raises(BadPublicKey, match="your own identity key"):
            await pa.call("bob")
        assert alice.contacts.get("bob") is None  # nothing pinned
        assert server.envelopes == [] and pa.calls == []  # nothing sent, no call
