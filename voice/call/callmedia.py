"""The secret half of a call: its MediaSession, key agreement and CallKeys.

:class:`CallMedia` answers the machine's media and key effects (PrepareRinging, DeriveKeys,
StartIce) with the events the machine expects back, installs the SRTP keys the moment they
exist, watches the media session's health, and erases everything in :meth:`release`. It holds
the only references to the keys; nothing here is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from voice.call import events as ev
from voice.call import messages as m
from voice.call.config import PhoneConfig
from voice.crypto.contacts import TrustState
from voice.crypto.continuity import ContinuityResult
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement, CallKeys
from voice.errors import (
    BadCallMessage,
    BadDescription,
    BadPublicKey,
    CommitmentMismatch,
    VoiceError,
)
from voice.media.session import MediaSession
from voice.media.stats import MediaStats

log = logging.getLogger("voice.call")
WATCH_EVERY = 0.5  # seconds between media health checks
CLOSE_TIMEOUT = 5.0


class CallMedia:
    def __init__(self, cfg: PhoneConfig, *, peer: str, peer_key: bytes, call_id: bytes) -> None:
        self._cfg = cfg
        self._peer, self._peer_key, self._call_id = peer, peer_key, call_id
        self.session: MediaSession | None = None
        self.keys: CallKeys | None = None
        self.final_stats: MediaStats | None = None
        self.first_audio_at: float | None = None
        self._agreement: CallerKeyAgreement | CalleeKeyAgreement | None = None
        self._description: dict[str, Any] | None = None
        self._ice_up = False
        self._rx_packets = -1
        self._rx_changed_at = 0.0
        self._next_watch = 0.0

    def _adopt(self, session: MediaSession) -> dict[str, Any]:
        self.session = session
        self._description = session.local_description()
        return self._description

    def caller_offer(self, session: MediaSession) -> tuple[m.Offer, m.Reveal]:
        """Caller: commit to a fresh ephemeral key; the reveal goes out once keys are ready."""
        description = self._adopt(session)
        ka = CallerKeyAgreement(
            me=self._cfg.identity.public_key,
            peer=self._peer_key,
            call_id=self._call_id,
            my_name=self._cfg.user,
            peer_name=self._peer,
            retained=self._cfg.contacts.get_retained(self._peer),
            sas_bits=self._cfg.sas_bits,
        )
        self._agreement = ka
        return m.Offer(ka.commitment, description), m.Reveal(ka.eph_a, ka.continuity_a)

    def callee_ringing(self, session: MediaSession, offer: m.Offer) -> ev.RingingReady:
        """Callee: our ephemeral key and description, fixed before we see the caller's key."""
        description = self._adopt(session)
        ka = CalleeKeyAgreement(
            me=self._cfg.identity.public_key,
            peer=self._peer_key,
            call_id=self._call_id,
            commitment=offer.commitment,
            my_name=self._cfg.user,
            peer_name=self._peer,
            retained=self._cfg.contacts.get_retained(self._peer),
            sas_bits=self._cfg.sas_bits,
        )
        self._agreement = ka
        answer = ka.answer()
        return ev.RingingReady(m.Ringing(answer.eph_b, answer.continuity_b, description))

    def derive(self, fx: ev.DeriveKeys) -> ev.LocalEvent:
        """Run the key agreement; on success install the SRTP keys at once."""
        ka, own, session = self._agreement, self._description, self.session
        assert ka is not None and own is not None and session is not None
        try:
            mine = m.canonical_description(own)
            theirs = m.canonical_description(fx.remote_description)
            if isinstance(ka, CallerKeyAgreement):
                ka.receive_answer(
                    eph_b=fx.peer_eph,
                    continuity_b=fx.peer_continuity,
                    caller_description=mine,
                    callee_description=theirs,
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
        except (BadPublicKey, BadCallMessage):
            return ev.BadKey()
        self.keys = keys
        session.set_keys(tx=keys.srtp_gcm_tx, rx=keys.srtp_gcm_rx)
        if self._cfg.key_observer is not None:
            try:
                self._cfg.key_observer(self._call_id, keys)
            except Exception:
                log.exception("key observer failed")
        return ev.KeysReady()

    def keep_continuity_if_earned(self) -> None:
        """At connect: a MATCH with a VERIFIED contact (same key) keeps the new secret."""
        keys, contact = self.keys, self._cfg.contacts.get(self._peer)
        if (
            keys is not None
            and keys.continuity is ContinuityResult.MATCH
            and contact is not None
            and contact.state is TrustState.VERIFIED
            and contact.public_key == self._peer_key
        ):
            self._cfg.contacts.store_retained(self._peer, keys.next_retained)

    async def connect_ice(self, remote: dict[str, Any]) -> ev.LocalEvent:
        assert self.session is not None
        try:
            async with asyncio.timeout(self._cfg.ice_timeout + 5.0):
                await self.session.connect(remote)
        except BadDescription:
            return ev.BadMessage()
        except (VoiceError, OSError, TimeoutError) as exc:
            log.info("ICE failed (%s)", type(exc).__name__)
            return ev.IceFailed()
        self._ice_up = True
        return ev.IceConnected()

    def start(self, now: float) -> None:
        assert self.session is not None
        self.session.start()
        self._rx_changed_at = now

    def watch(self, now: float, *, connected: bool) -> ev.LocalEvent | None:
        """Media health, every WATCH_EVERY s: errors, lost ICE, and a peer that went silent."""
        session = self.session
        if session is None or now < self._next_watch:
            return None
        self._next_watch = now + WATCH_EVERY
        stats = session.stats()
        if self._ice_up and not stats.ice_connected:
            return ev.IceFailed()
        if stats.error is not None:
            return ev.MediaFailed()
        if connected:
            if stats.packets_received != self._rx_packets:
                self._rx_packets, self._rx_changed_at = stats.packets_received, now
            elif now - self._rx_changed_at > self._cfg.media_timeout:
                return ev.PeerVanished()
        return None

    def stats(self) -> MediaStats | None:
        return self.session.stats() if self.session is not None else self.final_stats

    def current_first_audio(self) -> float | None:
        if self.session is not None:
            return self.session.first_audio_at
        return self.first_audio_at

    async def release(self) -> None:
        """Close the media session and erase the keys in place; idempotent."""
        session, self.session = self.session, None
        if session is not None:
            self.first_audio_at = session.first_audio_at
            self.final_stats = session.stats()
            try:
                await asyncio.wait_for(session.close(), CLOSE_TIMEOUT)
            except Exception:
                log.exception("closing media failed")
        keys, self.keys = self.keys, None
        if keys is not None:
            keys.erase()
        agreement, self._agreement = self._agreement, None
        if agreement is not None:  # a call that ended before its key agreement ran
            agreement.erase()
