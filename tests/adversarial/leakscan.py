"""Search recorded material for secrets, and try recorded SRTP against candidate keys.

Used by the eavesdropper and the hygiene tests. A secret can leak raw, as hex or as base64 (at
any of the three byte alignments), or as a Python bytes repr; every search covers all of those.
Candidate keys are taken from every 44-byte window of raw material and of every hex or base64
run found in text, and tried against real recorded SRTP packets with libsrtp.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable, Iterator

import pylibsrtp
from pylibsrtp import Policy, Session

GCM_KEY_SALT = 44


class LogCapture(logging.Handler):
    """Everything logged anywhere (root logger at DEBUG), with arguments and extra fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string still shows its parts
            text = f"{record.msg!r} {record.args!r}"
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        parts = [f"{record.name} {record.levelname} {text}"]
        if extra:
            parts.append(repr(extra))
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        self.lines.append(" ".join(parts))

    def text(self) -> str:
        return "\n".join(self.lines)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class capture_logs:
    """Attach a :class:`LogCapture` to the root logger at DEBUG for the duration of a block."""

    def __init__(self) -> None:
        self.capture = LogCapture()
        self._level = logging.WARNING

    def __enter__(self) -> LogCapture:
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self.capture)
        return self.capture

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self.capture)
        root.setLevel(self._level)


def encoded_forms(secret: bytes) -> set[bytes]:
    """Byte strings that appear in any text holding ``secret`` raw, hex, base64 or repr'd."""
    forms = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for offset in range(3):
        rest = secret[offset:]
        whole = len(rest) // 3 * 3
        if whole >= 12:
            forms.add(base64.b64encode(rest[:whole]))
            forms.add(base64.urlsafe_b64encode(rest[:whole]))
    forms.add(repr(secret)[2:-1].encode())
    return forms


_HEX_RUN = re.compile(rb"[0-9a-fA-F]{32,}")
_B64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{24,}")


def decoded_runs(text: bytes) -> Iterator[bytes]:
    """Every hex and base64 run in ``text`` decoded (base64 at each of the 4 char offsets)."""
    for match in _HEX_RUN.finditer(text):
        run = match.group()
        for start in (0, 1):
            chunk = run[start : start + (len(run) - start) // 2 * 2]
            yield binascii.unhexlify(chunk)
    for match in _B64_RUN.finditer(text):
        run = match.group().replace(b"-", b"+").replace(b"_", b"/")
        for start in range(4):
            chunk = run[start : start + (len(run) - start) // 4 * 4]
            if chunk:
                yield base64.b64decode(chunk)


def windows(blob: bytes, size: int, stride: int = 1) -> Iterator[bytes]:
    for i in range(0, len(blob) - size + 1, stride):
        yield blob[i : i + size]


def find_any(haystack: bytes, needles: dict[bytes, str]) -> set[str]:
    """Names of the needles that occur in ``haystack``.

    Few needles: ``bytes.find``; many: one pass per needle length over a set of needles.
    """
    found: set[str] = set()
    by_length: dict[int, dict[bytes, str]] = {}
    for needle, name in needles.items():
        by_length.setdefault(len(needle), {})[needle] = name
    for length, group in by_length.items():
        if len(group) <= 64:
            found.update(name for needle, name in group.items() if needle in haystack)
            continue
        for i in range(len(haystack) - length + 1):
            hit = group.get(haystack[i : i + length])
            if hit is not None:
                found.add(hit)
    return found


def leak_needles(secrets: dict[str, bytes]) -> dict[bytes, str]:
    """Every encoded form of every named secret, mapped back to the name."""
    out: dict[bytes, str] = {}
    for name, secret in secrets.items():
        for form in encoded_forms(secret):
            out[form] = name
    return out


def varied(window: bytes, min_distinct: int = 12) -> bool:
    """True for a window with enough distinct bytes to be evidence (not silence or padding)."""
    return len(set(window)) >= min_distinct


def inbound_session(key: bytes) -> Session:
    profile = Policy.SRTP_PROFILE_AEAD_AES_256_GCM
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    return Session(policy)


def decrypts(key: bytes, packet: bytes) -> bytes | None:
    """The RTP packet if ``key`` (44-byte AES-256-GCM key||salt) authenticates ``packet``."""
    try:
        return bytes(inbound_session(key).unprotect(packet))
    except (pylibsrtp.Error, ValueError, TypeError):
        return None


def decrypt_stream(key: bytes, packets: Iterable[bytes]) -> list[bytes | None]:
    """Each packet of one stream, in the order sent, through one receiving session (as the
    real receiver does): a fresh session per packet would lose the rollover counter once the
    16-bit sequence number wraps, and refuse every later packet."""
    session = inbound_session(key)
    out: list[bytes | None] = []
    for packet in packets:
        try:
            out.append(bytes(session.unprotect(packet)))
        except (pylibsrtp.Error, ValueError, TypeError):
            out.append(None)
    return out


def candidate_keys(material: Iterable[bytes]) -> set[bytes]:
    """Every 44-byte window of every blob, and of every hex/base64 run found inside it."""
    keys: set[bytes] = set()
    for blob in material:
        keys.update(windows(blob, GCM_KEY_SALT))
        for decoded in decoded_runs(blob):
            keys.update(windows(decoded, GCM_KEY_SALT))
    return keys


def keys_that_decrypt(keys: Iterable[bytes], probes: list[bytes]) -> list[bytes]:
    """The candidate keys under which at least one probe packet authenticates."""
    hits = []
    for key in keys:
        session = inbound_session(key)
        for probe in probes:
            try:
                session.unprotect(probe)
            except (pylibsrtp.Error, ValueError, TypeError):
                continue
            hits.append(key)
            break
    return hits
