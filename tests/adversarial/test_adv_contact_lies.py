"""Audit findings 3, 4, 8 and 9: what one lie, one hostile envelope or a second process can do
to the contact book, and when a contact may be marked verified.

* 3: any user could stop ``voice listen`` with two envelopes (the first pinned their key, an
  offer under another key then ended listen with exit 10). A warning must never end listen.
* 4: one lying key lookup left a contact "changed" for good: the real peer's later calls under
  the pinned key were refused, and the CLI told the user to trust the attacker's key.
* 8: contacts were keyed by username only, so another "bob" on another server raised a false
  KEY CHANGED; two processes sharing the book overwrote each other's changes.
* 9: ``--verified`` marked the contact verified before any SAS was compared.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.adversarial.malicious_server import Behaviour, running_server
from tests.adversarial.phones import Person, connect_call, phone
from tests.voice.cli_harness import run_voice, signaling_server, start_voice
from voice.call import messages as m
from voice.call.outbound import CallSealer
from voice.crypto.contacts import ContactBook, KeySource, TrustState
from voice.crypto.identity import Identity, x25519_public_of
from voice.errors import BadPublicKey, KeyChangedError
from voice.exitcodes import ExitCode
from voice.net.client import SignalingClient

HEADLESS = ("--silence", "--no-output", "--no-prompt")


class LieOnce(Behaviour):
    """Honest, except that the first lookup of ``victim`` answers with ``key``."""

    def __init__(self, victim: str, key: bytes) -> None:
        self.victim, self.key, self.lied = victim, key, False

    def on_lookup(self, user: str) -> bytes | None:
        if user == self.victim and not self.lied:
            self.lied = True
            return self.key
        return super().on_lookup(user)


async def test_one_lying_lookup_does_not_lock_out_the_real_contact(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    mallory = Identity.generate()
    async with (
        running_server() as server,
        phone(alice, server.url) as pa,
        phone(bob, server.url) as pb,
    ):
        out, inc = await connect_call(pa, pb, "bob")  # alice pins bob's real key
        await out.hangup()
        await inc.wait_ended(timeout=10)
        server.set_behaviour(LieOnce("bob", mallory.public_key))
        with pytest.raises(KeyChangedError) as lie:
            await pa.call("bob")
        # The warning names where the key came from and that only the server vouches.
        assert "only the signaling server vouches" in str(lie.value).lower()
        seen = alice.contacts.get("bob")
        assert seen is not None and seen.state is TrustState.CHANGED
        assert seen.pending_source is KeySource.LOOKUP
        # The real bob, under the pinned key, still gets through both ways.
        back, ring = await connect_call(pb, pa, "alice")
        await back.hangup()
        await ring.wait_ended(timeout=10)
        seen = alice.contacts.get("bob")
        assert seen is not None and seen.pending_key is None  # the lie is forgotten
        again, answered = await connect_call(pa, pb, "bob")  # and alice can dial bob
        await again.hangup()
        await answered.wait_ended(timeout=10)


def _not_a_public_key() -> bytes:
    """32 bytes that are no Ed25519 point (about half of all strings are not)."""
    while True:
        candidate = os.urandom(32)
        try:
            x25519_public_of(candidate)
        except BadPublicKey:
            return candidate


async def test_a_lookup_answered_with_no_key_pins_nothing_and_fails_the_dial(
    tmp_path: Path,
) -> None:
    """A server that answers a first lookup with bytes nobody can seal to: the dial fails at
    once (it used to wait for an offer that could never be sealed, for ever) and nothing is
    pinned, so the real contact's calls still come through."""
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    async with (
        running_server() as server,
        phone(alice, server.url) as pa,
        phone(bob, server.url) as pb,
    ):
        server.set_behaviour(LieOnce("bob", _not_a_public_key()))
        with pytest.raises(BadPublicKey, match="not a valid public key"):
            await asyncio.wait_for(pa.call("bob"), 10)
        assert alice.contacts.get("bob") is None
        assert pa.active_call is None
        back, ring = await connect_call(pb, pa, "alice")  # the real bob is not refused
        await back.hangup()
        await ring.wait_ended(timeout=10)
        seen = alice.contacts.get("bob")
        assert seen is not None and seen.public_key == bob.identity.public_key


async def test_another_bob_on_another_server_is_not_a_key_change(tmp_path: Path) -> None:
    alice = Person.make("alice", tmp_path)
    bob_one, bob_two = Person.make("bob", tmp_path / "one"), Person.make("bob", tmp_path / "two")
    book = alice.contacts.path
    async with running_server() as one, running_server() as two:
        alice.contacts = ContactBook(book, server=one.url)
        bob_one.contacts = ContactBook(bob_one.contacts.path, server=one.url)
        async with phone(alice, one.url) as pa, phone(bob_one, one.url) as pb:
            out, inc = await connect_call(pa, pb, "bob")
            await out.hangup()
            await inc.wait_ended(timeout=10)
        alice.contacts = ContactBook(book, server=two.url)
        async with phone(alice, two.url) as pa, phone(bob_two, two.url) as pb:
            out, inc = await connect_call(pa, pb, "bob")  # no KeyChangedError
            await out.hangup()
            await inc.wait_ended(timeout=10)
    # Control: in one scope the second bob IS a key change.
    with pytest.raises(KeyChangedError):
        ContactBook(book, server=one.url).check("bob", bob_two.identity.public_key)


async def test_a_key_changed_offer_never_ends_listen(tmp_path: Path) -> None:
    async with signaling_server() as url:
        mallory, other = Identity.generate(), Identity.generate()
        bob_identity = Identity.load_or_create(tmp_path / "bob" / "identity.key")
        ContactBook(tmp_path / "bob" / "contacts.json", server=url).check(
            "mallory", mallory.public_key
        )  # bob and mallory talked before: her key is pinned
        bob = await start_voice(tmp_path / "bob", "listen", "--auto-answer", *HEADLESS,
                                server=url, user="bob")  # fmt: skip
        await bob.wait_for("Waiting for a call")
        client = await SignalingClient.connect(url, "mallory", mallory.public_key, mallory.sign)
        try:
            for key in (mallory, other):  # a hangup under her key, an offer under another
                message = m.Hangup() if key is mallory else m.Offer(b"\x01" * 32, {"x": 1})
                sealer = CallSealer(key, bob_identity.public_key, b"\x07" * 16, time.time)
                await client.send("bob", sealer.seal(message))
            await bob.wait_for("Still waiting for a call")
        finally:
            await client.close()
        assert bob.proc.returncode is None  # listen goes on
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--duration",
                                "0.5", server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
        assert await bob.stop_listening() == ExitCode.OK, bob.stdout + bob.stderr
        assert "Refused a call from mallory" in bob.stdout


async def test_nothing_marks_a_contact_verified_before_the_sas_is_shown(tmp_path: Path) -> None:
    async with signaling_server() as url:
        refused = await run_voice(tmp_path / "alice", "call", "bob", "--verified", *HEADLESS,
                                  server=url, user="alice")  # fmt: skip
        assert refused.proc.returncode == ExitCode.USAGE  # the old shortcut is gone
        bob = await start_voice(tmp_path / "bob", "listen", "--auto-answer", "--silence",
                                "--no-output", server=url, user="bob", stdin=b"n\n")  # fmt: skip
        await bob.wait_for("Waiting for a call")
        alice = await run_voice(tmp_path / "alice", "call", "bob", "--silence", "--no-output",
                                "--duration", "1", server=url, user="alice",
                                stdin=b"y\n")  # fmt: skip
        assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
        assert await bob.stop_listening() == ExitCode.OK
    out = alice.stdout
    assert out.index("Security code (SAS)") < out.index("Does bob read the same words?")
    assert out.index("Does bob read the same words?") < out.index("bob marked verified")
    bob_book = ContactBook(tmp_path / "bob" / "contacts.json", server=url)
    assert bob_book.get("alice").state is TrustState.UNVERIFIED  # type: ignore[union-attr]
    alice_book = ContactBook(tmp_path / "alice" / "contacts.json", server=url)
    assert alice_book.get("bob").state is TrustState.VERIFIED  # type: ignore[union-attr]
