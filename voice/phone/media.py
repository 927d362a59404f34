"""The secret half of a call in the shell: its MediaSession and its key agreement.

:class:`CallMedia` makes the media session's description the one the pure
:class:`~voice.call.agreement.CallAgreement` commits to, installs the SRTP keys on the session
the moment they exist, runs ICE, samples the session for the pure
:class:`~voice.call.health.MediaWatch`, and erases everything in :meth:`release`. It holds the
only references to the keys; nothing here is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from voice.audio.base import AudioSink, AudioSource
from voice.call import events as ev
from voice.call import messages as m
from voice.call.agreement import CallAgreement, Parties
from voice.call.health import MediaWatch, WatchResult
from voice.crypto.keyagreement import CallKeys
from voice.errors import BadDescription, VoiceError
from voice.media.iceservers import IceServers, interface_addresses
from voice.media.session import MediaSession
from voice.media.stats import MediaStats
from voice.phone.config import PhoneConfig
from voice.phone.turn import server_on_loopback

__all__ = ["CLOSE_TIMEOUT", "CallMedia", "open_session"]

log = logging.getLogger("voice.phone")
CLOSE_TIMEOUT = 5.0


class CallMedia:
    def __init__(self, cfg: PhoneConfig, *, peer: str, peer_key: bytes, call_id: bytes) -> None:
        self._cfg = cfg
        self._peer, self._call_id = peer, call_id
        parties = Parties(cfg.identity.public_key, cfg.user, peer_key, peer, call_id)
        self.agreement = CallAgreement(
            parties, retained=cfg.contacts.get_retained(peer), sas_bits=cfg.sas_bits
        )
        self.session: MediaSession | None = None
        self.final_stats: MediaStats | None = None
        self.first_audio_at: float | None = None
        self._watch = MediaWatch(cfg.media_timeout)
        self._moved = False  # this machine's addresses changed since the last check
        self.muted = False  # the user muted the microphone
        self.held = False  # the call is on hold, by either side

    def addresses_changed(self) -> None:
        """The phone saw this machine's addresses change: a connected call restarts ICE at
        its first check within a second that finds the audio stopped (voice.call.health: the
        old path may be gone; a restart while audio still flows would only cost a gap)."""
        self._moved = True

    def set_audio(self, *, muted: bool | None = None, held: bool | None = None) -> None:
        """Mute and hold: digital silence goes out while muted or held (same packets: the
        network sees no change), and silence is played while held."""
        if muted is not None:
            self.muted = muted
        if held is not None:
            self.held = held
        self._apply_audio()

    def _apply_audio(self) -> None:
        session = self.session
        if session is not None:
            session.set_muted(self.muted or self.held)
            session.set_playout_muted(self.held)

    @property
    def keys(self) -> CallKeys | None:
        return self.agreement.keys

    def dial(self, session: MediaSession) -> ev.UserDial:
        """Caller: the offer commits to our key and this session's description."""
        self.session = session
        self._apply_audio()
        return self.agreement.dial(session.local_description())

    def ring(
        self, session: MediaSession, offer: m.Offer, *, private: bool
    ) -> ev.RingingReady | ev.BadMessage:
        """Callee: our key and this session's description, fixed before the caller's key
        (BadMessage: the offer asks for a key agreement we cannot run).

        ``private``: the caller is not a verified contact; our candidates (our addresses) are
        left out and follow the user's accept (SendCandidates)."""
        self.session = session
        self._apply_audio()
        description = session.local_description()
        if private:
            description = {**description, "ice": {**description["ice"], "candidates": []}}
        return self.agreement.ring(offer, description)

    def candidates(self) -> m.Ice:
        """The ``ice`` message of generation 0: the candidates our ringing left out."""
        assert self.session is not None
        return m.Ice(0, {"candidates": self.session.local_description()["ice"]["candidates"]})

    def attempted(self) -> str | None:
        """The paths ICE tried, for a call that found none (no addresses of the peer's are
        secret to the user: they are the user's own call)."""
        session = self.session
        return session.attempted() if session is not None else None

    def derive(self, fx: ev.DeriveKeys) -> ev.LocalEvent:
        """Run the key agreement; on success install the SRTP keys at once."""
        result = self.agreement.derive(fx)
        keys, session = self.agreement.keys, self.session
        if keys is None or session is None:
            return result
        session.set_keys(tx=keys.srtp_gcm_tx, rx=keys.srtp_gcm_rx)
        observer = self._cfg.hooks.key_observer
        if observer is not None:
            try:
                observer(self._call_id, keys)
            except Exception:
                log.exception("key observer failed")
        return result

    def keep_continuity_if_earned(self) -> None:
        """At connect: a MATCH, or a first link, under the pinned key keeps the new secret
        (CallAgreement.earned_retained)."""
        contacts = self._cfg.contacts
        secret = self.agreement.earned_retained(contacts.get(self._peer))
        if secret is not None:
            contacts.store_retained(self._peer, secret, key=self.agreement.parties.peer)

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
        return ev.IceConnected()

    def start(self, now: float) -> None:
        assert self.session is not None
        self.session.start()
        self._watch.media_started(now)

    def watch(self, now: float, *, connected: bool) -> WatchResult | None:
        """Media health when a check is due: first authenticated audio, a pause, a restart
        to make, the end of the reconnect window, a media error, an RTCP BYE."""
        session = self.session
        if session is None or not self._watch.due(now):
            return None
        if connected and session.peer_said_bye.is_set():
            return WatchResult(ev.PeerHungUp())
        stats = session.stats()
        # Only a connected call restarts; one still being set up fails or connects on its own.
        moved, self._moved = self._moved, False
        return self._watch.check(
            now,
            rtp_received=stats.rtp_packets_received,
            failed=stats.error is not None,
            connected=connected,
            addresses_changed=connected and moved,
        )

    @property
    def reconnecting(self) -> bool:
        return self._watch.interrupted

    async def say_bye(self) -> None:
        """An RTCP BYE to the peer (authenticated; best effort, bounded)."""
        session = self.session
        if session is None or not self._cfg.hooks.rtcp_bye:
            return
        try:
            await asyncio.wait_for(session.send_bye(), 0.5)
        except (VoiceError, OSError, TimeoutError):
            log.debug("RTCP BYE not sent")

    def stats(self) -> MediaStats | None:
        return self.session.stats() if self.session is not None else self.final_stats

    def current_first_audio(self) -> float | None:
        if self.session is not None:
            return self.session.first_audio_at
        return self.first_audio_at

    async def release(self) -> None:
        """Close the media session and erase the keys in place; idempotent."""
        session, self.session = self.session, None
        try:
            if session is not None:
                self.first_audio_at = session.first_audio_at
                self.final_stats = session.stats()
                try:
                    await asyncio.wait_for(session.close(), CLOSE_TIMEOUT)
                except Exception:
                    log.exception("closing media failed")
        finally:  # even when a slow close is cancelled
            self.agreement.erase()


async def open_session(
    cfg: PhoneConfig,
    audio: tuple[AudioSource, AudioSink],
    *,
    controlling: bool,
    servers: IceServers | None = None,
    relay_only: bool = False,
) -> MediaSession:
    """A call's media session; it owns (and closes) the audio.

    Host candidates on ``cfg.host_addresses``, or on every usable interface (plus 127.0.0.1
    when the signaling server is on loopback); STUN and TURN from ``servers`` (``turns:``
    checked against ``cfg.ca_file`` or the system CAs); relay candidates only if ``relay_only``.
    """
    source, sink = audio
    addresses = cfg.host_addresses
    if addresses is None:
        addresses = interface_addresses(include_loopback=server_on_loopback(cfg.server_url))
    servers = dataclasses.replace(servers or IceServers(), ca_file=cfg.ca_file)
    try:
        async with asyncio.timeout(cfg.request_timeout):
            return await MediaSession.create(
                controlling=controlling,
                source=source,
                sink=sink,
                host_addresses=addresses,
                ice_servers=servers,
                relay_only=relay_only,
                opus=cfg.opus,
                loss=cfg.hooks.loss,
                send_filter=cfg.hooks.send_filter,
                on_datagram_sent=cfg.hooks.on_datagram_sent,
                ice_timeout=cfg.ice_timeout,
            )
    except BaseException:
        for closer in (source.close, sink.close):
            with contextlib.suppress(Exception):
                await closer()
        raise
