"""Exceptions raised by the voice client.

One root, :class:`VoiceError`, so callers can catch everything the client raises on purpose.
Other helpers add their branches here; keep the tree below up to date.

    VoiceError
    ├── CryptoError                 end-to-end crypto (voice.crypto) refused something
    │   ├── BadEnvelope             an envelope failed to open or check (one opaque error)
    │   ├── KeyChangedError         a contact's identity key differs from the pinned one
    │   ├── UnknownContact          no such contact in the contact book (also KeyError)
    │   ├── UnknownFingerprint      matches no key known for the contact (also ValueError)
    │   ├── CommitmentMismatch      the caller's revealed key does not match its commitment
    │   ├── BadPublicKey            malformed, low-order or non-contributory key (also ValueError)
    │   ├── UnsupportedVersion      no key-agreement version in common, or a downgraded choice
    │   ├── InsecureKeyFile         a private file or its folder is open to others, or not ours
    │   ├── WrongPassphrase         a passphrase does not open a sealed key (or it was changed)
    │   ├── IdentityExists          importing would replace a different identity (needs --force)
    │   └── KeyAgreementError       the key agreement was used out of order (also RuntimeError)
    ├── SFrameError                 a group-call frame (voice.group.sframe) was refused: drop it
    │   ├── UnknownKeyId            no key for the frame's KID (yet): buffer it or drop it
    │   ├── CounterExhausted        a sender used every counter of its key: send with a new KID
    │   └── ForgedFrame             a group frame's signature is missing, bad or of no member
    ├── GroupError                  group-call keys or the group code (voice.group) refused input
    │   ├── StaleSenderKey          a sender key older than, or conflicting with, the one held
    │   └── GroupCodeError          commits and reveals of the group code do not add up
    ├── BadCallMessage              a call message (voice.call) is malformed (also ValueError)
    ├── BadGroupMessage             a group control message (voice.group) is malformed (ValueError)
    ├── CallControlError            the phone (voice.phone) refused or ended
    │   ├── CallEnded               the call ended before it connected; .outcome says why
    │   ├── AlreadyInCall           a phone holds one call at a time
    │   └── PhoneClosed             the phone was closed (or lost its signaling session)
    ├── MediaError                  the media transport (voice.media) failed
    │   ├── IceFailed               no ICE candidate pair worked (or timed out)
    │   ├── BadDescription          the peer's media description is malformed (also ValueError)
    │   ├── MediaKeyError           an SRTP key has the wrong type or length (also ValueError)
    │   ├── CodecUnavailable        libopus could not be loaded (also OSError)
    │   └── CodecError              Opus refused a frame or a packet (also ValueError)
    ├── AudioError                  audio I/O (voice.audio) failed
    │   ├── NoAudioDevice           no such input/output device, or PortAudio cannot open it
    │   └── AudioFormatError        audio data is not in a format we read (also ValueError)
    ├── SignalingClientError        talking to the signaling server (voice.net) failed
    │   ├── InsecureServerUrl       plain ws:// to a host that is not loopback (also ValueError)
    │   ├── SignalingUnreachable    cannot connect or the handshake failed (also ConnectionError)
    │   │   └── ServerCertificateRejected  its TLS certificate did not verify (CA, name, date)
    │   ├── SignalingClosed         the session ended; .code says why (also ConnectionError)
    │   │   └── SessionReplaced     the same user logged in elsewhere; this session was closed
    │   ├── SignalingProtocolError  the server sent something that breaks the wire format
    │   │   └── ServerNameChanged   its name or id differs from the one pinned for the address
    │   ├── LoginRefused            the server refused the login; .code says why
    │   └── RequestRefused          the server answered a send/turn with an error; .code
    │       ├── RecipientOffline    the recipient is registered but not connected
    │       ├── UnknownUser         no such user is registered on this server
    │       ├── RateLimited         too many messages per second; slow down and retry
    │       └── TurnUnavailable     the server has no TURN relay configured
    └── UsageError                  the `voice` command line asks for something impossible
        └── PassphraseRequired      a passphrase is needed, and there is no terminal or variable
"""

from __future__ import annotations


class VoiceError(Exception):
    """Root of every exception the voice client raises on purpose."""


class BadCallMessage(VoiceError, ValueError):
    """A call message payload (voice.call.messages) is malformed, oversized or not canonical.

    It came inside an authenticated envelope, so the peer's client is broken or hostile: drop
    the message; if it belongs to a live call, fail that call with reason ``bad_message``.
    """


class BadGroupMessage(VoiceError, ValueError):
    """A group-call control message (voice.group.messages) is malformed, oversized, of an
    unknown type or not canonical.

    It came inside an authenticated envelope, so the sender's client is broken or hostile: drop
    the message and count it; the group call goes on.
    """


class CallControlError(VoiceError):
    """The call controller refused a request, or the call it was about ended."""


class CallEnded(CallControlError):
    """The call ended (or failed) before reaching the state that was awaited.

    ``outcome`` (a ``voice.call.events.Outcome``) holds the end or fail reason and detail.
    """

    def __init__(self, outcome: object) -> None:
        super().__init__(f"the call ended: {outcome}")
        self.outcome = outcome


class AlreadyInCall(CallControlError):
    """The phone already has a live call; hang it up before dialing another."""


class PhoneClosed(CallControlError):
    """The phone was closed, or its signaling session ended; connect a new one."""


class MediaError(VoiceError):
    """The media transport failed; the call cannot carry audio."""


class IceFailed(MediaError, ConnectionError):
    """ICE found no working path to the peer before its timeout.

    Check that both sides gathered candidates on reachable addresses, or configure TURN.
    """


class BadDescription(MediaError, ValueError):
    """The peer's media description is malformed; the call must be abandoned."""


class MediaKeyError(MediaError, ValueError):
    """An SRTP master key||salt has the wrong type or length."""


class CodecUnavailable(MediaError, OSError):
    """libopus (``libopus.so.0``) could not be found or loaded.

    Install it: ``apt-get install libopus0`` on Debian and Ubuntu, ``brew install opus`` on macOS.
    """


class CodecError(MediaError, ValueError):
    """The Opus encoder or decoder refused its input (a PCM frame of the wrong size, a packet
    that is not a 20 ms Opus packet, a closed codec) or failed inside libopus.

    A receiver should count the packet as lost and conceal it; it never crashes the process.
    """


class AudioError(VoiceError):
    """Audio input or output failed."""


class NoAudioDevice(AudioError):
    """No audio device matches the request, or PortAudio could not open it.

    List the devices with ``voice.audio.devices.list_devices()`` and choose one by name or index;
    on a headless machine start PulseAudio with a null sink (``scripts/pulse.sh``).
    """


class AudioFormatError(AudioError, ValueError):
    """Audio data is not in a format we accept (e.g. not integer PCM, or a wrong frame size)."""


class CryptoError(VoiceError):
    """End-to-end crypto (voice.crypto) refused an input or a key; the call must not proceed."""


class BadEnvelope(CryptoError):
    """An envelope could not be opened or failed a check (tampered, wrong recipient, replayed,
    reordered beyond the window, or too old).

    Deliberately opaque: the reason is not given to whoever sent it. Drop the message.
    """


class KeyChangedError(CryptoError):
    """A known contact presented a different identity key than the one pinned.

    This is what a man-in-the-middle looks like, and also what a reinstall looks like. The new
    key is refused until the user checks its fingerprint out of band and runs
    ``voice trust USER FINGERPRINT``; the pinned key keeps working. Only the server vouches that
    the new key belongs to the user (``source`` says how it came: a key lookup, an incoming
    call), and the message says so.
    """

    def __init__(
        self, user: str, old_fingerprint: str, new_fingerprint: str, *, source: str = "the server"
    ) -> None:
        super().__init__(
            f"the identity key of {user!r} changed: pinned {old_fingerprint}; another key, "
            f"{new_fingerprint}, came from {source}. Only the signaling server vouches that it is "
            f"{user}'s: check it with {user} in person or over another channel before you run "
            f"voice trust {user} <fingerprint>"
        )
        self.user = user
        self.old_fingerprint = old_fingerprint
        self.new_fingerprint = new_fingerprint
        self.source = source


class UnknownContact(CryptoError, KeyError):
    """No contact by that name is in the contact book."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownFingerprint(CryptoError, ValueError):
    """The fingerprint given matches neither the pinned nor the pending key of the contact."""


class CommitmentMismatch(CryptoError):
    """The caller's revealed ephemeral key does not match the commitment it sent in the offer.

    Either the message was corrupted or someone tried to choose a key after seeing ours (the
    move a man-in-the-middle needs to force equal SAS). Abandon the call.
    """


class BadPublicKey(CryptoError, ValueError):
    """A public key is malformed, of low order, or gives a non-contributory X25519 result."""


class UnsupportedVersion(CryptoError):
    """The two phones share no key-agreement version (one app is too old, or too new), or the
    callee's choice is not the best version both lists hold (a server edited a list).

    Nothing was exchanged beyond public values; the call cannot go ahead. Update the older app.
    """


class InsecureKeyFile(CryptoError):
    """A private file (identity key, contacts, server pins, replay journal, ``user``) is readable
    by group or others, is not ours, or is a symlink; or the folder holding it is not ours or is
    writable by group or others.

    Fix it with ``chmod 600 FILE`` (a folder: ``chmod 700 DIR``) after checking nobody else
    copied the key; a file or folder of another user is not ours to use.
    """


class WrongPassphrase(CryptoError):
    """A passphrase does not open a sealed identity key (a protected key file or a backup).

    Deliberately one error: a wrong passphrase and a changed or damaged file cannot be told
    apart. Nothing was changed; try again with the right passphrase, or another copy.
    """


class IdentityExists(CryptoError):
    """Importing a backup would replace another identity already in the config directory.

    That identity (and the usernames bound to it) would be lost unless it was backed up:
    ``voice id --export FILE`` first, then ``voice id --import BACKUP --force``.
    """


class KeyAgreementError(CryptoError, RuntimeError):
    """The key agreement was driven out of order (e.g. keys() before the answer)."""


class SFrameError(VoiceError):
    """SFrame (voice.group.sframe) refused a frame: a receiver got a malformed header, a frame
    that fails authentication, a replayed or too old counter or an unknown key id; or a sender
    ran out of counters.

    One frame is lost, not the call: drop it (or buffer it, for :class:`UnknownKeyId`) and go
    on. A burst of them means a broken or hostile sender or SFU.
    """


class UnknownKeyId(SFrameError):
    """No key is installed for the frame's KID. RFC 9605 allows buffering the frame and
    retrying once that key arrives (its sender key may still be on its way); else drop it."""

    def __init__(self, kid: int) -> None:
        super().__init__(f"no SFrame key for KID {kid}")
        self.kid = kid


class CounterExhausted(SFrameError):
    """A sender has used every counter value (2**64) of its key; reusing one would reuse an AEAD
    nonce. Distribute a new base key under a new KID and send with that."""


class ForgedFrame(SFrameError):
    """A group frame (voice.group.frameauth) does not carry a valid signature of the member its
    KID names: too short, a KID of no member of the roster, or a signature that fails.

    Either the frame was damaged or a member (or the SFU) sent under another member's KID: drop
    it and count it. Deliberately one error, whatever the cause.
    """


class GroupError(VoiceError):
    """A group call's keys or its security code (voice.group) refused an input."""


class StaleSenderKey(GroupError):
    """A sender key is older (lower generation, or lower step in the same generation) than the
    one held for that member, or differs from it at the same generation and step.

    A replayed or reordered key message, or a hostile member: keep the key held, drop this one.
    """


class GroupCodeError(GroupError):
    """The group security code cannot be computed: a reveal does not match its commit, came
    before every commit, or a member changed its commit or nonce.

    Someone may be grinding the code: show "code failed" and let the call go on, unverified.
    """


class SignalingClientError(VoiceError):
    """Talking to the signaling server failed."""


class SignalingUnreachable(SignalingClientError, ConnectionError):
    """The signaling server could not be reached or refused the WebSocket handshake.

    Check the URL (ws://host:port) and that the server runs: ``voice-signaling --port ...``.
    """


class ServerCertificateRejected(SignalingUnreachable):
    """The server's TLS certificate did not verify: not issued by a trusted CA (the system's,
    or ``--ca FILE``), not for the host in the URL, or expired. Nothing was sent or signed.

    Use the server's real address, or pass the CA that issued its certificate with ``--ca``.
    """


class InsecureServerUrl(SignalingClientError, ValueError):
    """A plain ``ws://`` URL to a host that is not loopback: the login and every routing field
    would cross the network unprotected, and the login would not be bound to a certificate, so
    a relaying server could borrow it. Use ``wss://``, or pass ``--insecure`` to allow it."""


class SignalingClosed(SignalingClientError, ConnectionError):
    """The signaling session ended; ``code`` is the error code or WebSocket close code."""

    def __init__(self, message: str, *, code: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code


class SessionReplaced(SignalingClosed):
    """The same user logged in from another connection; the newest session wins."""


class SignalingProtocolError(SignalingClientError):
    """The server sent a frame that does not follow the wire format (a buggy or hostile server)."""


class ServerNameChanged(SignalingProtocolError):
    """The server's name or id (from its challenge) differs from the one pinned for its address.

    Another deployment answers at that address: nothing was signed. If the server really was
    reinstalled, delete its line in ``servers.json``. (A relay that forwards the real server's
    challenge is stopped by the certificate binding of the login, pinned or not.)
    """


class LoginRefused(SignalingClientError):
    """The server refused the login; ``code`` is the server's error code (e.g. username_taken)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class RequestRefused(SignalingClientError):
    """The server answered a request with an error; ``code`` is the server's error code."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class RecipientOffline(RequestRefused):
    """The recipient is registered but not connected now; try again later."""


class UnknownUser(RequestRefused):
    """No user of that name is registered on this server; check the spelling."""


class RateLimited(RequestRefused):
    """The server limits messages per second per user; wait a little and retry."""


class TurnUnavailable(RequestRefused):
    """The server is not configured with a TURN secret and URIs; use host candidates only."""


class UsageError(VoiceError, ValueError):
    """The ``voice`` command line asks for something impossible (no --user, a bad username,
    an unreadable option value). The message says what to pass instead."""


class PassphraseRequired(UsageError):
    """A passphrase is needed, stdin is not a terminal to ask it on, and the environment
    variable that would give it (e.g. ``VOICE_PASSPHRASE``) is not set."""
