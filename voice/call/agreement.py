"""One call's key-agreement steps, pure: the answers to the machine's key effects.

The machine asks; :class:`CallAgreement` answers with the event the machine expects back::

    caller  dial(description)          -> UserDial(offer with commitment, versions and
                                          ML-KEM key; reveal kept back)
    callee  ring(offer, description)   -> RingingReady(ringing with eph_b, the chosen version
                                          and the ML-KEM ciphertext), fixed before the
                                          caller's key is seen; BadMessage(unsupported_version)
                                          when the offer shares no version with us
    both    derive(DeriveKeys)          -> KeysReady | CommitmentMismatch | BadKey, or (caller)
                                          BadMessage(unsupported_version) for a downgraded choice

Versions: a phone offers and accepts :data:`voice.crypto.versions.DEFAULT_VERSIONS` (version 2,
hybrid X25519 + ML-KEM-768, only); ``versions=`` is for measurements and tests.

After KeysReady, :attr:`CallAgreement.keys` holds the call's SRTP keys and SAS until
:meth:`erase`. The asyncio shell installs the keys on the media session; the in-memory tests run
this same code. The retained secret (continuity) comes in from the contact book and
:meth:`earned_retained` says when a new one may be kept. Nothing here is ever logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voice.call import events as ev
from voice.call import messages as m
from voice.crypto.contacts import Contact, TrustState
from voice.crypto.continuity import ContinuityResult, RetainedSecrets
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement, CallKeys
from voice.crypto.sas import DEFAULT_SAS_BITS
from voice.crypto.versions import DEFAULT_VERSIONS, supported_list
from voice.errors import BadCallMessage, BadPublicKey, CommitmentMismatch, UnsupportedVersion

__all__ = ["CallAgreement", "Parties"]

Description = dict[str, Any]


@dataclass(frozen=True)
class Parties:
    """Who the call is between, as this side knows it (identity keys and usernames)."""

    me: bytes
    my_name: str
    peer: bytes
    peer_name: str
    call_id: bytes


class CallAgreement:
    """The committed X25519 + ML-KEM-768 exchange of one call, seen from one side."""

    def __init__(
        self,
        parties: Parties,
        *,
        retained: RetainedSecrets | None = None,
        sas_bits: int = DEFAULT_SAS_BITS,
        versions: Sequence[int] = DEFAULT_VERSIONS,
    ) -> None:
        self.parties = parties
        self.keys: CallKeys | None = None
        self._retained = retained if retained is not None else RetainedSecrets()
        self._sas_bits = sas_bits
        self._versions = supported_list(versions)
        self._exchange: CallerKeyAgreement | CalleeKeyAgreement | None = None
        self._description: Description | None = None

    @property
    def exchange(self) -> CallerKeyAgreement | CalleeKeyAgreement | None:
        """The underlying exchange (None before dial/ring and after erase)."""
        return self._exchange

    def dial(self, description: Description) -> ev.UserDial:
        """Caller: commit to a fresh ephemeral key; the reveal goes out once keys are ready."""
        p = self.parties
        ka = CallerKeyAgreement(
            me=p.me,
            peer=p.peer,
            call_id=p.call_id,
            my_name=p.my_name,
            peer_name=p.peer_name,
            retained=self._retained,
            sas_bits=self._sas_bits,
            versions=self._versions,
        )
        self._exchange, self._description = ka, description
        offer = m.Offer(ka.commitment, description, ka.versions, ka.kem_key)
        return ev.UserDial(offer, m.Reveal(ka.eph_a, ka.continuity_a))

    def ring(self, offer: m.Offer, description: Description) -> ev.RingingReady | ev.BadMessage:
        """Callee: our ephemeral key, ML-KEM ciphertext and description, fixed before we see
        the caller's key. An offer we cannot answer fails the call, telling the caller why
        (``unsupported_version``: no version in common; ``bad_key``: a malformed ML-KEM key)."""
        p = self.parties
        try:
            ka = CalleeKeyAgreement(
                me=p.me,
                peer=p.peer,
                call_id=p.call_id,
                commitment=offer.commitment,
                caller_versions=offer.versions,
                kem_key=offer.mlkem_ek,
                my_name=p.my_name,
                peer_name=p.peer_name,
                retained=self._retained,
                sas_bits=self._sas_bits,
                versions=self._versions,
            )
        except UnsupportedVersion:
            return ev.BadMessage(ev.FailReason.UNSUPPORTED_VERSION)
        self._exchange, self._description = ka, description
        try:
            answer = ka.answer()
        except BadPublicKey:
            return ev.BadMessage(ev.FailReason.BAD_KEY)
        ringing = m.Ringing(
            answer.eph_b,
            answer.continuity_b,
            description,
            ka.versions,
            ka.version,
            ka.kem_ciphertext,
        )
        return ev.RingingReady(ringing)

    def derive(
        self, fx: ev.DeriveKeys
    ) -> ev.KeysReady | ev.CommitmentMismatch | ev.BadKey | ev.BadMessage:
        """Run the key agreement with the peer's values; on success :attr:`keys` is set."""
        ka, own = self._exchange, self._description
        assert ka is not None and own is not None, "derive before dial or ring"
        try:
            mine = m.canonical_description(own)
            theirs = m.canonical_description(fx.remote_description)
            if isinstance(ka, CallerKeyAgreement):
                ka.receive_answer(
                    eph_b=fx.peer_eph,
                    continuity_b=fx.peer_continuity,
                    caller_description=mine,
                    callee_description=theirs,
                    callee_versions=fx.peer_versions,
                    version=fx.version if fx.version is not None else 0,
                    kem_ciphertext=fx.peer_ciphertext,
                )
                keys = ka.keys()
            else:
                keys = ka.receive_reveal(
                    eph_a=fx.peer_eph,
                    continuity_a=fx.peer_continuity,
                    caller_description=theirs,
                    callee_description=mine,
                )
        except CommitmentMismatch:
            return ev.CommitmentMismatch()
        except UnsupportedVersion:  # the callee's choice is not the best common one
            return ev.BadMessage(ev.FailReason.UNSUPPORTED_VERSION)
        except (BadPublicKey, BadCallMessage):
            return ev.BadKey()
        self.keys = keys
        return ev.KeysReady()

    def sealing_key(self, *, connected: bool) -> bytes | None:
        """The call's own key for our messages from now on, or None (identity keys still).

        The callee's as soon as it has keys: the caller derived its own before it revealed.
        The caller's once connected: the callee's accept proves the callee has its keys. From
        then on a thief of an identity key can neither read nor forge the call's messages.
        """
        keys = self.keys
        if keys is None or not (connected or isinstance(self._exchange, CalleeKeyAgreement)):
            return None
        return keys.envelope_tx

    def opening_key(self) -> bytes | None:
        """The key the peer's call envelopes open with (None before our keys exist)."""
        return self.keys.envelope_rx if self.keys is not None else None

    def earned_retained(self, contact: Contact | None) -> bytes | None:
        """At connect: the secret to keep without asking (None: keep nothing), as ZRTP updates
        its cache after every call: when this call continued the chain (MATCH) or started it
        (NONE: we held no secret for this contact), under the contact's pinned key. Never after
        a MISMATCH: that link is kept only once the users compare the SAS (mark_verified).

        Both sides keep it whether or not anyone compared the SAS, so one side verifying and
        the other not leaves no gap that the next call would report as a mismatch. A VERIFIED
        contact and a MATCH still mean "the party of the verified call": every link since that
        call was a MATCH."""
        keys = self.keys
        if (
            keys is not None
            and keys.continuity in (ContinuityResult.MATCH, ContinuityResult.NONE)
            and contact is not None
            and contact.state is not TrustState.CHANGED
            and contact.public_key == self.parties.peer
        ):
            return keys.next_retained
        return None

    def erase(self) -> None:
        """Zero the call keys and any unused ephemeral secret in place; idempotent."""
        keys, self.keys = self.keys, None
        if keys is not None:
            keys.erase()
        exchange, self._exchange = self._exchange, None
        if exchange is not None:  # a call that ended before its key agreement ran
            exchange.erase()
