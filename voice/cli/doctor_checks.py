"""``voice doctor``'s verdicts: what each measurement means and what fixes it. Pure: no I/O.

The probes (:mod:`voice.cli.doctor_local`, :mod:`voice.cli.doctor_net`) measure; the functions
here turn a measurement into a :class:`Check` (a row of the table: ✔ passed, ✘ failed, – not
checked) with a sentence that explains it and, for a failure, the fix. A failure that stops
every call is *fatal* and carries the exit code ``voice call`` would end with
(:mod:`voice.exitcodes`); :func:`verdict` returns the first one in table order. Which checks
are fatal, and why, is written in docs/doctor.md.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import numpy as np

from voice.exitcodes import ExitCode

__all__ = [
    "ENVELOPE_MAX_AGE",
    "Check",
    "IceAttempt",
    "Skew",
    "judge_clock",
    "judge_ice",
    "judge_input_level",
    "judge_opus",
    "judge_tls",
    "render_table",
    "rms_dbfs",
    "sentence",
    "skew_from_date",
    "verdict",
]

Status = Literal["ok", "fail", "skip"]
MARKS: dict[Status, str] = {"ok": "✔", "fail": "✘", "skip": "–"}
ENVELOPE_MAX_AGE = 60.0  # s: voice.crypto.replay.ReplayGuard refuses older (and as far ahead)
CLOCK_TOLERANCE = ENVELOPE_MAX_AGE / 2  # both sides this close to the server: within the window
CERT_WARN_DAYS = 14
SILENT_DBFS = -90.0  # below this an input is digital silence (all but zero samples)
LACE_VERSION = (1, 5)  # libopus 1.5 added the decoder's speech enhancement (LACE, NoLACE)
LACE_COMPLEXITY = 6  # voice.media.opus.DECODER_COMPLEXITY: what turns LACE on


@dataclass(frozen=True)
class Check:
    """One row: ``status``, what was seen (``text``), the ``fix`` for a failure, and ``fatal``:
    the exit code of a failure that stops every call (None: a call can still work)."""

    name: str
    status: Status
    text: str
    fix: str = ""
    fatal: ExitCode | None = None

    @classmethod
    def ok(cls, name: str, text: str) -> Check:
        return cls(name, "ok", text)

    @classmethod
    def fail(cls, name: str, text: str, fix: str, fatal: ExitCode | None = None) -> Check:
        return cls(name, "fail", text, fix, fatal)

    @classmethod
    def skip(cls, name: str, why: str) -> Check:
        return cls(name, "skip", sentence(f"not checked: {why}"))


def sentence(text: object) -> str:
    """``text`` (an error message) ending in exactly one full stop."""
    body = str(text).strip().rstrip(".")
    return f"{body}." if body else "no details."


def verdict(checks: Sequence[Check]) -> ExitCode:
    """The exit code of the first fatal failure in table order; OK if there is none."""
    for check in checks:
        if check.status == "fail" and check.fatal is not None:
            return check.fatal
    return ExitCode.OK


def render_table(checks: Sequence[Check], width: int = 100) -> str:
    """The table: a mark, the check's name, the result wrapped to ``width``, a ``fix:`` line
    under each failure; then one line that says whether a call can work here."""
    name_width = max([len("CHECK"), *(len(c.name) for c in checks)])
    indent = " " * (3 + name_width + 2)
    text_width = max(30, width - len(indent))
    lines = [f"   {'CHECK':<{name_width}}  RESULT"]
    for check in checks:
        head = f"{MARKS[check.status]}  {check.name:<{name_width}}  "
        body = _wrap(check.text, text_width) or [""]
        if check.status == "fail":
            fatal = " (a call cannot work until this is fixed)" if check.fatal is not None else ""
            body += _wrap(f"fix{fatal}: {check.fix}", text_width)
        lines.append(head + body[0])
        lines.extend(indent + more for more in body[1:])
    lines.append("")
    lines.extend(_wrap(_summary(checks), width))
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width``, never breaking a word: paths and commands stay whole."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)


def _summary(checks: Sequence[Check]) -> str:
    fatal = [c.name for c in checks if c.status == "fail" and c.fatal is not None]
    others = sum(1 for c in checks if c.status == "fail" and c.fatal is None)
    minor = ""
    if others:
        minor = f" {others} other problem{'s' if others != 1 else ''} would not stop a call."
    if fatal:
        code = verdict(checks)
        return f"A call cannot work here: {', '.join(fatal)} (exit code {int(code)}).{minor}"
    return f"A call can work here.{minor}"


# -- the clock ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Skew:
    """Server clock minus ours, ``offset`` ± ``uncertainty`` seconds."""

    offset: float
    uncertainty: float


def skew_from_date(date_header: str, sent_at: float, received_at: float) -> Skew | None:
    """The skew from an HTTP ``Date`` header (whole seconds) stamped by the server some time
    between ``sent_at`` and ``received_at`` (our wall clock); None if the header is unusable.

    The server's time then lay in ``[D, D + 1)`` and ours in ``[sent_at, received_at]``, so
    the skew lies in ``[D - received_at, D + 1 - sent_at]``: the midpoint ± half the width.
    """
    try:
        stamp: datetime = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    if stamp.tzinfo is None or received_at < sent_at:
        return None
    low = stamp.timestamp() - received_at
    high = stamp.timestamp() + 1.0 - sent_at
    return Skew((low + high) / 2, (high - low) / 2)


def judge_clock(skew: Skew | None) -> Check:
    """Within ±30 s of the server: any two such clients are within the 60 s envelope window.
    Beyond 60 s even a peer with an exact clock refuses our messages (and we its): fatal."""
    name = "clock"
    if skew is None:
        return Check.skip(
            name, "the server sent no usable Date header, so its time is unknown; compare "
            "`date -u` with a time signal yourself (envelopes older than 60 s are refused)"
        )  # fmt: skip
    off, err = skew.offset, skew.uncertainty
    side = "behind" if off > 0 else "ahead of"
    seen = f"{abs(off):.1f} s {side} the server's (±{err:.1f} s)"
    fix = "turn on time synchronisation (`timedatectl set-ntp true`, or chrony / systemd-timesyncd)"
    if abs(off) - err >= ENVELOPE_MAX_AGE:
        return Check.fail(
            name,
            f"{seen}: every call message would be refused as stale or from the future "
            f"(the limit is {ENVELOPE_MAX_AGE:g} s).",
            fix,
            ExitCode.CALL_FAILED,
        )
    if abs(off) - err > CLOCK_TOLERANCE:
        return Check.fail(
            name,
            f"{seen}: calls fail with peers whose clocks are off the other way (messages older "
            f"than {ENVELOPE_MAX_AGE:g} s are refused).",
            fix,
        )
    return Check.ok(name, f"{seen}; within the {ENVELOPE_MAX_AGE:g} s envelope window.")


# -- the server's certificate --------------------------------------------------------------
def judge_tls(
    url: str,
    *,
    secure: bool,
    loopback: bool,
    tls_version: str = "",
    subject: str = "",
    days_left: float | None = None,
) -> Check:
    """A verified wss:// server (a warning for a certificate about to expire), or plain ws://:
    fine on loopback, a non-fatal failure elsewhere (it only gets here with --insecure)."""
    name = "server"
    if not secure:
        if loopback:
            return Check.ok(
                name, f"{url} answers. Unencrypted ws://: acceptable only on loopback, as here."
            )
        return Check.fail(
            name,
            f"{url} answers over unencrypted ws:// (--insecure): anyone on the path sees who "
            "calls whom and can relay your login to another server.",
            "ask the operator for a wss:// address (a TLS certificate on the server)",
        )
    valid = f"certificate for {subject or 'the server'} verified"
    if days_left is None:
        return Check.ok(name, f"{url} answers over {tls_version or 'TLS'}; {valid}.")
    days = math.floor(days_left)
    if days_left < CERT_WARN_DAYS:
        return Check.fail(
            name,
            f"{url} answers over {tls_version or 'TLS'}; {valid}, but it expires in {days} "
            f"day{'s' if days != 1 else ''}: then every login is refused.",
            "the server's operator must renew the certificate",
        )
    return Check.ok(
        name, f"{url} answers over {tls_version or 'TLS'}; {valid}, valid {days} more days."
    )


# -- audio --------------------------------------------------------------------------------
def rms_dbfs(pcm: bytes) -> float:
    """The RMS level of s16le ``pcm`` in dB relative to full scale (-inf for zeros or none)."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
    mean_square = float(np.mean(samples * samples)) if samples.size else 0.0
    if mean_square == 0:
        return -math.inf
    return 20 * math.log10(math.sqrt(mean_square) / 32768)


def judge_input_level(device: str, level: float, seconds: float) -> Check:
    """An input that gives only zeros is muted or not a microphone: a failure, not fatal (the
    call connects, the peer hears nothing)."""
    shown = "silence" if level == -math.inf else f"{level:.1f} dBFS"
    if level < SILENT_DBFS:
        return Check.fail(
            "microphone",
            f"{device} opened, but it gave digital silence ({shown}) for {seconds:.1f} s: "
            "the peer would hear nothing.",
            "unmute it (pavucontrol, alsamixer), or choose another with --input "
            "(`voice devices` lists them)",
        )
    return Check.ok("microphone", f"{device} opened; RMS level {shown} over {seconds:.1f} s.")


# -- libopus ------------------------------------------------------------------------------
def judge_opus(version: str, decoder_complexity: int) -> Check:
    """Any libopus makes calls; 1.5+ with decoder complexity 6 also enhances speech (LACE)."""
    name = "libopus"
    numbers = [int(p) for p in version.split()[-1].split("-")[0].split(".") if p.isdigit()]
    if tuple(numbers[:2]) >= LACE_VERSION and decoder_complexity >= LACE_COMPLEXITY:
        return Check.ok(
            name,
            f"{version}; decoder complexity {decoder_complexity}: LACE speech enhancement on.",
        )
    return Check.fail(
        name,
        f"{version}; decoder complexity {decoder_complexity}: calls work, without the speech "
        "enhancement (LACE) that makes lossy calls clearer.",
        "run scripts/build-libopus.sh (libopus 1.6.1 into the virtualenv), or install "
        "libopus 1.5 or later",
    )


# -- STUN, TURN and UDP ---------------------------------------------------------------------
@dataclass(frozen=True)
class IceAttempt:
    """One server asked: ``kind`` stun or turn, how (``transport`` udp, tcp or tls), and the
    address it gave us (``address``) or why not (``error``)."""

    kind: Literal["stun", "turn"]
    uri: str
    transport: Literal["udp", "tcp", "tls"]
    address: str | None = None
    error: str | None = None

    @property
    def worked(self) -> bool:
        return self.address is not None


def judge_ice(attempts: Sequence[IceAttempt], *, turn_offered: bool) -> list[Check]:
    """Rows for STUN, TURN per transport, UDP, and the media path.

    Fatal: the server offers TURN and no allocation works. ``--relay auto`` (the default)
    relays every call with a peer not yet verified, so those calls could not connect.
    """
    rows: list[Check] = []
    stun = [a for a in attempts if a.kind == "stun"]
    if stun:
        rows.append(_stun_row(stun))
    if not turn_offered:
        rows.append(
            Check.fail(
                "TURN",
                "the server offers no TURN relay: calls go direct, so peers see your "
                "addresses, and two peers behind strict NATs cannot connect.",
                "the server's operator sets --turn-secret and --turn-uris (and runs coturn)",
            )
        )
    for transport in ("udp", "tcp", "tls"):
        tried = [a for a in attempts if a.kind == "turn" and a.transport == transport]
        if tried:
            rows.append(_turn_row(transport, tried))
    rows.append(_udp_row(attempts))
    rows.append(_path_row(attempts, turn_offered=turn_offered))
    return rows


def _stun_row(stun: Sequence[IceAttempt]) -> Check:
    good = [a for a in stun if a.worked]
    if good:
        return Check.ok(
            "STUN", f"{good[0].uri} answered over UDP: your public address is {good[0].address}."
        )
    return Check.fail(
        "STUN",
        f"{_failures(stun)}: without it a direct call through a NAT cannot find its way.",
        "let UDP to the STUN port out through the firewall; a relay still works without it",
    )


def _turn_row(transport: str, tried: Sequence[IceAttempt]) -> Check:
    name = f"TURN {transport}"
    good = [a for a in tried if a.worked]
    if good:
        return Check.ok(name, f"{good[0].uri}: relay address {good[0].address} allocated.")
    port_hint = {
        "udp": "UDP to the TURN port (3478)",
        "tcp": "TCP to the TURN port",
        "tls": "TCP to the TURN-over-TLS port (5349 or 443)",
    }[transport]
    return Check.fail(
        name,
        f"{_failures(tried)}.",
        f"check that the relay runs and that the firewall lets {port_hint} out; "
        "a wrong password or realm means the server and coturn disagree on --turn-secret",
    )


def _udp_row(attempts: Sequence[IceAttempt]) -> Check:
    udp = [a for a in attempts if a.transport == "udp"]
    other = [a for a in attempts if a.transport != "udp" and a.worked]
    if not udp:
        return Check.skip("UDP", "the server offers no STUN or TURN over UDP")
    if any(a.worked for a in udp):
        return Check.ok("UDP", "not blocked: a server answered over UDP.")
    if other:
        return Check.fail(
            "UDP",
            "blocked: nothing answered over UDP, while TCP or TLS got through. Calls relay over "
            "TCP/TLS: they work, with more delay when packets are lost.",
            "allow outgoing UDP (port 3478 and the relay's ports) in the firewall, if you can",
        )
    return Check.fail(
        "UDP",
        "nothing answered over UDP, nor over anything else: the relay may be down rather "
        "than UDP blocked.",
        "check the TURN server's address and that it runs",
    )


def _path_row(attempts: Sequence[IceAttempt], *, turn_offered: bool) -> Check:
    relays = sorted({a.transport for a in attempts if a.kind == "turn" and a.worked})
    if relays:
        return Check.ok(
            "media path",
            f"a relay works ({', '.join(relays)}): calls connect even when both sides are "
            "behind NATs, and strangers never see your addresses.",
        )
    if turn_offered:
        return Check.fail(
            "media path",
            "no TURN relay could be allocated: calls with peers you have not verified (relayed "
            "by default, --relay auto) cannot connect.",
            "make one of the TURN rows above pass; until then only verified contacts can be "
            "reached, directly",
            ExitCode.CALL_FAILED,
        )
    if any(a.kind == "stun" and a.worked for a in attempts):
        return Check.ok(
            "media path", "direct only (STUN works, no relay): most NATs can be crossed."
        )
    return Check.fail(
        "media path",
        "direct only, without STUN: calls connect only when a peer is on your network or has "
        "a public address.",
        "the server's operator adds STUN and TURN servers (--turn-uris, --turn-secret)",
    )


def _failures(attempts: Sequence[IceAttempt]) -> str:
    seen = dict.fromkeys((a.uri, _plain(a.error)) for a in attempts)  # once per server
    return "; ".join(f"{uri} failed ({why})" for uri, why in seen)


def _plain(error: str | None) -> str:
    """A socket error in words ("[Errno 111] Connect call failed (...)" says: refused)."""
    if not error:
        return "no answer"
    if "Errno 111" in error or "Connection refused" in error:
        return "connection refused"
    return error
