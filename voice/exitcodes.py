"""Exit codes of the ``voice`` command: one per way a call can fail, so scripts can tell them apart.

    0   OK                  the command did what was asked (a call that connected and was hung
                            up, by either side or by Ctrl-C, is a success)
    1   CALL_FAILED         the call broke after it was placed (ICE, media, keys, a bad message)
    2   USAGE               bad arguments, unknown contact, a fingerprint that does not match,
                            plain ws:// to a server that is not loopback without --insecure
    3   SERVER_UNREACHABLE  the signaling server cannot be reached, or the session dropped
    4   LOGIN_REFUSED       the server refused the login (e.g. the username belongs to another key),
                            or we refused the server: its TLS certificate does not verify, or its
                            name or id differs from the pinned one
    5   USER_OFFLINE        the callee is registered but not connected
    6   UNKNOWN_USER        no such user on this server
    7   DECLINED            the callee declined
    8   BUSY                the callee is in another call
    9   NO_ANSWER           nobody answered before the timeout (``listen``: no call came)
    10  KEY_CHANGED         the contact's identity key differs from the pinned one
    11  NO_AUDIO_DEVICE     the audio device asked for does not exist or cannot be opened
    12  LOCAL_ERROR         a local file is unusable (insecure key file or config directory, wrong
                            passphrase or damaged backup, unreadable WAV, ...)

The mapping from exceptions and call outcomes lives here too, so the CLI, the demo and the tests
agree on it.
"""

from __future__ import annotations

import enum

from voice.call.events import EndReason, FailReason
from voice.errors import (
    AudioError,
    AudioFormatError,
    CallControlError,
    CryptoError,
    IdentityExists,
    InsecureKeyFile,
    InsecureServerUrl,
    KeyChangedError,
    LoginRefused,
    NoAudioDevice,
    PhoneClosed,
    RecipientOffline,
    RequestRefused,
    ServerCertificateRejected,
    ServerNameChanged,
    SignalingClientError,
    SignalingClosed,
    SignalingUnreachable,
    UnknownContact,
    UnknownFingerprint,
    UnknownUser,
    UsageError,
    WrongPassphrase,
)

__all__ = ["ExitCode", "for_exception", "for_reason"]


class ExitCode(enum.IntEnum):
    OK = 0
    CALL_FAILED = 1
    USAGE = 2
    SERVER_UNREACHABLE = 3
    LOGIN_REFUSED = 4
    USER_OFFLINE = 5
    UNKNOWN_USER = 6
    DECLINED = 7
    BUSY = 8
    NO_ANSWER = 9
    KEY_CHANGED = 10
    NO_AUDIO_DEVICE = 11
    LOCAL_ERROR = 12

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "ok (a connected call that was hung up, by either side, is a success)",
    ExitCode.CALL_FAILED: "the call failed after it was placed (ICE, media, keys, bad message), "
    "or the server refused a request (rate limited, no relay)",
    ExitCode.USAGE: "bad arguments, unknown contact, a fingerprint that matches no key, ws:// "
    "to a remote server without --insecure",
    ExitCode.SERVER_UNREACHABLE: "the signaling server cannot be reached, or the session dropped",
    ExitCode.LOGIN_REFUSED: "the server refused the login (username taken by another key?), or "
    "we refused the server (untrusted certificate, another server id)",
    ExitCode.USER_OFFLINE: "the user is registered but not online",
    ExitCode.UNKNOWN_USER: "no such user on this server",
    ExitCode.DECLINED: "the callee declined",
    ExitCode.BUSY: "the callee is in another call",
    ExitCode.NO_ANSWER: "no answer before the timeout (listen: no call came)",
    ExitCode.KEY_CHANGED: "the contact's identity key changed: check it, then `voice trust`",
    ExitCode.NO_AUDIO_DEVICE: "no such audio device, or it cannot be opened",
    ExitCode.LOCAL_ERROR: "a local file is unusable (insecure file or folder, wrong passphrase)",
}

# Most specific first: the first matching class wins.
_BY_EXCEPTION: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (KeyChangedError, ExitCode.KEY_CHANGED),
    (UsageError, ExitCode.USAGE),
    (InsecureServerUrl, ExitCode.USAGE),
    (UnknownContact, ExitCode.USAGE),
    (UnknownFingerprint, ExitCode.USAGE),
    (InsecureKeyFile, ExitCode.LOCAL_ERROR),
    (WrongPassphrase, ExitCode.LOCAL_ERROR),
    (IdentityExists, ExitCode.USAGE),
    (NoAudioDevice, ExitCode.NO_AUDIO_DEVICE),
    (AudioFormatError, ExitCode.LOCAL_ERROR),
    (AudioError, ExitCode.NO_AUDIO_DEVICE),
    (ServerCertificateRejected, ExitCode.LOGIN_REFUSED),
    (SignalingUnreachable, ExitCode.SERVER_UNREACHABLE),
    (LoginRefused, ExitCode.LOGIN_REFUSED),
    (ServerNameChanged, ExitCode.LOGIN_REFUSED),
    (RecipientOffline, ExitCode.USER_OFFLINE),
    (UnknownUser, ExitCode.UNKNOWN_USER),
    (RequestRefused, ExitCode.CALL_FAILED),  # rate limited, no TURN relay
    (SignalingClosed, ExitCode.SERVER_UNREACHABLE),
    (PhoneClosed, ExitCode.SERVER_UNREACHABLE),
    (CallControlError, ExitCode.CALL_FAILED),
    (CryptoError, ExitCode.CALL_FAILED),
    (FileNotFoundError, ExitCode.LOCAL_ERROR),
    (IsADirectoryError, ExitCode.LOCAL_ERROR),
    (PermissionError, ExitCode.LOCAL_ERROR),
    (SignalingClientError, ExitCode.SERVER_UNREACHABLE),  # any other trouble with the server
)

_BY_REASON: dict[EndReason | FailReason, ExitCode] = {
    EndReason.HANGUP_LOCAL: ExitCode.OK,
    EndReason.HANGUP_REMOTE: ExitCode.OK,
    EndReason.DECLINED_LOCAL: ExitCode.OK,
    EndReason.DECLINED_REMOTE: ExitCode.DECLINED,
    EndReason.BUSY: ExitCode.BUSY,
    EndReason.CANCELLED_LOCAL: ExitCode.OK,
    EndReason.CANCELLED_REMOTE: ExitCode.OK,
    EndReason.NO_ANSWER: ExitCode.NO_ANSWER,
    EndReason.GLARE_LOST: ExitCode.OK,
    FailReason.KEY_CHANGED: ExitCode.KEY_CHANGED,
    FailReason.UNREACHABLE: ExitCode.USER_OFFLINE,
}


def for_exception(exc: BaseException) -> ExitCode | None:
    """The exit code for an exception the CLI expects, or None for a bug (let it propagate)."""
    for kind, code in _BY_EXCEPTION:
        if isinstance(exc, kind):
            return code
    return None


def for_reason(reason: EndReason | FailReason) -> ExitCode:
    """The exit code for how a call ended: normal ends are OK, other failures CALL_FAILED."""
    return _BY_REASON.get(reason, ExitCode.CALL_FAILED)
