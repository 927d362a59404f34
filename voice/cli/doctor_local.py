"""``voice doctor``'s local measurements: the config files, libopus and the audio devices.

Each probe does what a call would do (stat the private files with the rules every command
enforces, load libopus, open the devices) and returns a :class:`~voice.cli.doctor_checks.Check`
through the pure judgments of :mod:`voice.cli.doctor_checks`. A probe never raises for what it
measures: expected errors become the row's sentence, anything else an "unexpected error" row
whose traceback is logged (``-v``; :func:`guarded`). Nothing here logs a key or audio.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import Awaitable, Callable

from voice.cli.context import Settings
from voice.cli.doctor_checks import (
    Check,
    judge_input_level,
    judge_opus,
    rms_dbfs,
    sentence,
)
from voice.errors import InsecureKeyFile, VoiceError
from voice.exitcodes import ExitCode

log = logging.getLogger("voice.doctor")

LISTEN_SECONDS = 1.0  # s of microphone level measured
OUTPUT_START_TIMEOUT = 4.0  # s for the speaker to take its first frame
PRIVATE_FILES = ("identity.key", "contacts.json", "user", "servers.json", "replay.json")
NO_DEVICE_FIX = (
    "`voice devices` lists the devices; pick one with --{flag}. Without one, call with "
    "{alternatives} instead (doctor then skips this check)"
)


def unexpected(name: str, exc: BaseException) -> Check:
    """A row for an error no probe expected (a bug): fatal, its traceback logged with -v."""
    log.info("doctor: %s check failed unexpectedly", name, exc_info=exc)
    return Check.fail(
        name,
        f"unexpected error: {type(exc).__name__}: {exc}",
        "run `voice -v doctor` for details, and report it if it persists",
        ExitCode.CALL_FAILED,
    )


def guarded_now(name: str, probe: Callable[[], Check]) -> Check:
    """``probe()``, or an "unexpected error" row."""
    try:
        return probe()
    except Exception as exc:
        return unexpected(name, exc)


async def guarded(name: str, probe: Callable[[], Awaitable[Check]]) -> Check:
    """``probe()``, or an "unexpected error" row: no probe ends the doctor with a traceback."""
    try:
        return await probe()
    except Exception as exc:
        return unexpected(name, exc)


# -- files --------------------------------------------------------------------------------
# The rules are voice.crypto.privatefile's own (what every command enforces); the fixes here.
def check_config_dir(settings: Settings) -> Check:
    """The config folder: ours and not writable by others (fatal otherwise: every command
    refuses it); readable by others is a minor leak (which contacts and servers exist)."""
    from voice.crypto.privatefile import check_private_dir

    name, folder = "config folder", settings.config_dir
    try:
        st = folder.stat()  # (a link to a private folder is fine, as for every command)
    except FileNotFoundError:
        return Check.ok(name, f"{folder} does not exist yet: it is created 0700 with the identity.")
    mode = stat.S_IMODE(st.st_mode)
    try:
        check_private_dir(folder)
    except InsecureKeyFile as exc:
        fix = f"check what is in it, then chmod 700 {folder}"
        if not mode & 0o022:  # not ours, or not a folder
            fix = "keep your voice files in a folder of your own (--config-dir DIR)"
        return Check.fail(name, _first_sentence(exc), fix, ExitCode.LOCAL_ERROR)
    if mode & 0o077:
        return Check.fail(
            name,
            f"{folder} has mode {mode:04o}: others can list it (which files exist, not read them).",
            f"chmod 700 {folder}",
        )
    return Check.ok(name, f"{folder} is {mode:04o} and yours.")


def check_key_files(settings: Settings) -> Check:
    """Every private file that exists: a regular file of ours, 0600 or stricter (the client
    refuses anything else, so a bad one is fatal)."""
    from voice.crypto.privatefile import check_secret_file_mode

    name, seen = "key files", []
    for file_name in PRIVATE_FILES:
        path = settings.config_dir / file_name
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            text = f"cannot look at {path}: {exc.strerror}."
            return Check.fail(name, text, "check the folder's permissions", ExitCode.LOCAL_ERROR)
        mode = stat.S_IMODE(st.st_mode)
        try:
            if stat.S_ISLNK(st.st_mode):
                raise InsecureKeyFile(f"{path} is a symbolic link: voice never follows one")
            check_secret_file_mode(path, st)
        except InsecureKeyFile as exc:
            fix = "replace the link with the file itself"
            if not stat.S_ISLNK(st.st_mode):
                fix = "find out who put it there, then remove it"
                if mode & 0o077:
                    fix = f"chmod 600 {path}, if you are sure nobody copied it"
                    if file_name == "identity.key":
                        fix += " (if someone may have: make a new identity and tell your contacts)"
            return Check.fail(name, _first_sentence(exc), fix, ExitCode.LOCAL_ERROR)
        seen.append(f"{file_name} {mode:04o}")
    if not seen:
        return Check.ok(
            name, "no identity yet: the first call (or the login check) creates identity.key 0600."
        )
    return Check.ok(name, ", ".join(seen) + ": only you can read them.")


def _first_sentence(exc: BaseException) -> str:
    """The message's first sentence: what is wrong (the rest is a fix; ours is in the row)."""
    return sentence(str(exc).split(". ", 1)[0])


# -- libopus ------------------------------------------------------------------------------
def check_opus() -> Check:
    """The loaded libopus, and whether its decoder takes complexity 6 (LACE)."""
    try:
        from voice.media.opus import DECODER_COMPLEXITY, OpusDecoder, library_version

        version = library_version()
        with OpusDecoder(DECODER_COMPLEXITY) as decoder:
            complexity = decoder.max_complexity
    except (VoiceError, OSError) as exc:
        return Check.fail(
            "libopus",
            f"cannot load libopus: {exc}",
            "install it (apt-get install libopus0) or run scripts/build-libopus.sh",
            ExitCode.LOCAL_ERROR,
        )
    return judge_opus(version, complexity)


# -- audio --------------------------------------------------------------------------------
async def check_input(device: str | None, alternative: str | None) -> Check:
    """Open the microphone and measure its level for :data:`LISTEN_SECONDS`."""
    name = "microphone"
    if alternative is not None:
        return Check.skip(name, f"you send {alternative} instead of a microphone")
    from voice.audio.devices import PyAudioMicrophone

    try:
        mic = await asyncio.to_thread(
            PyAudioMicrophone, device, max_queued_frames=200, max_backlog_frames=None
        )  # every frame of the listening window, however late it is read
    except VoiceError as exc:
        return _no_device(name, exc, "input", "--play WAV, --tone HZ or --silence")
    except Exception as exc:
        return unexpected(name, exc)
    label = f"{'input ' + repr(device) if device else 'default input'} ({mic.device.name})"
    pcm = bytearray()
    try:
        async with asyncio.timeout(LISTEN_SECONDS + 2.0):
            while len(pcm) < LISTEN_SECONDS * 48_000 * 2:
                frame = await mic.read_frame()
                if frame is None:
                    break
                pcm += frame
    except TimeoutError:
        pass
    except VoiceError as exc:
        return _no_device(name, exc, "input", "--play WAV, --tone HZ or --silence")
    finally:
        await mic.close()
    if not pcm:
        return Check.fail(
            name,
            f"{label} opened, but delivered no audio in {LISTEN_SECONDS + 2:g} s.",
            "check that nothing else holds the device and that the sound server runs",
            ExitCode.NO_AUDIO_DEVICE,
        )
    return judge_input_level(label, rms_dbfs(bytes(pcm)), len(pcm) / 96_000)


async def check_output(device: str | None, alternative: str | None) -> Check:
    """Open the speaker and play a moment of silence through it."""
    name = "speaker"
    if alternative is not None:
        return Check.skip(name, f"you {alternative} instead of playing it")
    from voice.audio.base import FRAME_BYTES
    from voice.audio.devices import PyAudioSpeaker

    try:
        speaker = await asyncio.to_thread(PyAudioSpeaker, device, max_queued_frames=20)
    except VoiceError as exc:
        return _no_device(name, exc, "output", "--record WAV or --no-output")
    except Exception as exc:
        return unexpected(name, exc)
    label = f"{'output ' + repr(device) if device else 'default output'} ({speaker.device.name})"
    frames = 15  # 0.3 s of silence
    try:
        for _ in range(frames):
            await speaker.write_frame(bytes(FRAME_BYTES))
        # Until the device takes the first frame (PortAudio's thread signals nothing; pulse's
        # ALSA plugin can take 2 s to start).
        async with asyncio.timeout(OUTPUT_START_TIMEOUT):
            while speaker.queued >= frames:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        return Check.fail(
            name,
            f"{label} opened, but took no audio in {OUTPUT_START_TIMEOUT:g} s.",
            "check that nothing else holds the device and that the sound server runs",
            ExitCode.NO_AUDIO_DEVICE,
        )
    except VoiceError as exc:
        return _no_device(name, exc, "output", "--record WAV or --no-output")
    finally:
        await speaker.close()
    return Check.ok(name, f"{label} opened; it plays (a moment of silence).")


def _no_device(name: str, exc: BaseException, flag: str, alternatives: str) -> Check:
    log.info("doctor: %s: %r", name, exc)
    return Check.fail(
        name,
        sentence(exc),
        NO_DEVICE_FIX.format(flag=flag, alternatives=alternatives),
        ExitCode.NO_AUDIO_DEVICE,
    )
