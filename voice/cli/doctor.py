"""``voice doctor``: can a call work from here? One row per check, ✔ or ✘, and the fix.

It does what a call does, short of calling: opens the audio devices, connects to the server as
a login would (TLS verified), reads the server's time from the handshake, logs in, allocates a
relay on every STUN/TURN URI the server hands out, and checks the key files and libopus. The
audio runs alongside the network checks. The exit code is that of the first fatal failure in
table order (what ``voice call`` would end with), 0 if there is none; which failures are fatal
is explained in docs/doctor.md. Every failure is a sentence; tracebacks of unexpected ones go to
the log with ``-v``. Keys and TURN passwords are never printed or logged.

Side effects, as for a first call: the identity is created if there is none, and the login
registers the username on a server that does not know it yet. The login also replaces any
other session of that user (a ``voice listen`` elsewhere is logged out): run it when that
phone is idle, or under another ``--user``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from voice.cli.context import Settings
from voice.cli.doctor_checks import Check, judge_clock, render_table, verdict
from voice.exitcodes import ExitCode

__all__ = ["DOCTOR_HELP", "DoctorOptions", "add_doctor_arguments", "cmd_doctor"]

DOCTOR_HELP = (
    "check that calls can work here: audio devices, the server's TLS, login, STUN/TURN over "
    "UDP, TCP and TLS, the clock, key-file permissions and libopus; prints each fix"
)
_NOISY_LOGGERS = ("voice.media.ice", "voice.phone", "aioice", "websockets")


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    paragraphs = (
        f"{DOCTOR_HELP}.",
        "The exit code is that of the first fatal failure (see below), 0 if a call can work. "
        "Like a first call, it creates your identity if there is none and its login registers "
        "the name; the login also logs out another session of the same user (a `voice listen` "
        "elsewhere). See docs/doctor.md.",
    )
    parser.description = "\n\n".join(textwrap.fill(p, 79) for p in paragraphs)
    said = parser.add_argument_group("what a call would send (one of; default: the microphone)")
    said.add_argument("--input", metavar="DEVICE", help="microphone to check: name or index")
    said.add_argument("--play", metavar="WAV", type=Path, help="you send a WAV file: no mic")
    said.add_argument("--tone", metavar="HZ", type=float, help="you send a tone: no mic")
    said.add_argument("--silence", action="store_true", help="you send silence: no mic")
    heard = parser.add_argument_group("what a call would play (one of; default: the speaker)")
    heard.add_argument("--output", metavar="DEVICE", help="speaker to check: name or index")
    heard.add_argument("--record", metavar="WAV", type=Path, help="you record: no speaker")
    heard.add_argument("--no-output", action="store_true", help="you discard it: no speaker")


@dataclass(frozen=True)
class DoctorOptions:
    """Which devices to check; an alternative source or sink skips its device (not fatal)."""

    input: str | None = None
    output: str | None = None
    input_alternative: str | None = None  # e.g. "a 440 Hz tone (--tone)"
    output_alternative: str | None = None  # e.g. "discard what you hear (--no-output)"
    verbose: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DoctorOptions:
        from voice.cli.audio import AudioChoice  # checks that at most one of each is given

        choice = AudioChoice.from_args(args)
        said = None
        if choice.play is not None:
            said = f"{choice.play} (--play)"
        elif choice.tone is not None:
            said = f"a {choice.tone:g} Hz tone (--tone)"
        elif choice.silence:
            said = "silence (--silence)"
        heard = None
        if choice.record is not None:
            heard = f"record what you hear to {choice.record} (--record)"
        elif choice.mute_output:
            heard = "discard what you hear (--no-output)"
        return cls(choice.input, choice.output, said, heard, int(args.verbose or 0))


def cmd_doctor(settings: Settings, options: DoctorOptions) -> ExitCode:
    """Run every check, print the table, return the exit code of the first fatal failure."""
    print(
        f"Checking {settings.server} as {settings.user or '(no user)'} "
        f"(config {settings.config_dir}); this takes a few seconds...",
        file=settings.out,
        flush=True,
    )
    with _quiet_logs(options.verbose):
        checks = asyncio.run(_run_checks(settings, options))
    width = min(120, max(72, shutil.get_terminal_size((100, 24)).columns))
    print(render_table(checks, width), end="", file=settings.out)
    return verdict(checks)


async def _run_checks(settings: Settings, options: DoctorOptions) -> list[Check]:
    from voice.cli import doctor_local as probe

    local = [
        probe.guarded_now("config folder", lambda: probe.check_config_dir(settings)),
        probe.guarded_now("key files", lambda: probe.check_key_files(settings)),
        probe.guarded_now("libopus", probe.check_opus),
    ]
    audio = asyncio.ensure_future(_audio(options))  # devices open in threads: alongside
    try:
        network = await _network(settings)
    finally:
        devices = await audio
    return [*local, *devices, *network]


async def _audio(options: DoctorOptions) -> list[Check]:
    from voice.cli.doctor_local import check_input, check_output, guarded

    mic = await guarded("microphone", lambda: check_input(options.input, options.input_alternative))
    spk = await guarded("speaker", lambda: check_output(options.output, options.output_alternative))
    return [mic, spk]


async def _network(settings: Settings) -> list[Check]:
    """Server, then clock and login, then STUN/TURN: each needs the one before."""
    from voice.cli.doctor_local import unexpected
    from voice.cli.doctor_net import check_ice, check_login, check_server

    rows: list[Check] = []
    try:
        seen = await check_server(settings)
        rows.append(seen.check)
        if not seen.reachable:
            why = "the server check failed (see above)"
            rows += [
                Check.skip("clock", f"{why}; envelopes older than 60 s are refused"),
                Check.skip("login", why),
                Check.skip("STUN/TURN", f"{why}: it hands out the relays and their passwords"),
            ]
            return rows
        rows.append(judge_clock(seen.skew))
        login = await check_login(settings)
        rows.append(login.check)
        if login.turn is None:
            rows.append(Check.skip("STUN/TURN", "needs a login: the server hands out the relays"))
            return rows
        rows += await check_ice(settings, login.turn)
    except Exception as exc:  # a row, never a traceback
        rows.append(unexpected("network", exc))
    return rows


@contextlib.contextmanager
def _quiet_logs(verbose: int) -> Iterator[None]:
    """Without -v, the warnings of the layers below (a failed TURN server, ...) stay out of the
    way: the table says the same in a sentence."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
