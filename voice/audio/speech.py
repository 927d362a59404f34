"""A short speech sample for demos, integration tests and benchmarks.

The shipped file ``voice/data/speech.wav`` (about 4 s of synthetic English, 48 kHz mono s16) is
what everything uses, so results do not depend on the installed speech synthesiser. To rebuild
it (needs ``espeak-ng`` and ``sox``)::

    python -m voice.audio.speech            # rewrites voice/data/speech.wav
    python -m voice.audio.speech out.wav    # or writes elsewhere
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SPEECH_TEXT = "The quick brown fox jumps over the lazy dog. Please call me back soon."
_VOICE = "en-us"
_WORDS_PER_MINUTE = 175
_DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "speech.wav"


def speech_sample() -> Path:
    """Path of the shipped speech sample (48 kHz mono 16-bit WAV, 3-5 s)."""
    if not _DATA_FILE.is_file():
        raise FileNotFoundError(
            f"{_DATA_FILE} is missing; rebuild it with `python -m voice.audio.speech`"
        )
    return _DATA_FILE


def regenerate_speech_sample(path: str | Path = _DATA_FILE, text: str = SPEECH_TEXT) -> Path:
    """Synthesise ``text`` with espeak-ng and convert it with sox to 48 kHz mono s16.

    Leading and trailing silence is trimmed to 0.1 s and the peak normalised to -3 dBFS, so the
    sample is short and loud enough for PESQ without clipping.
    """
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} is needed to regenerate the speech sample")
    out = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", _VOICE, "-s", str(_WORDS_PER_MINUTE), "-w", str(raw), text],
            check=True,
        )
        subprocess.run(
            ["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", "-e", "signed-integer",
             str(out), "silence", "1", "0.02", "0.1%", "reverse", "silence", "1", "0.02", "0.1%",
             "reverse", "pad", "0.1", "0.1", "gain", "-n", "-3"],
            check=True,
        )  # fmt: skip
    return out


if __name__ == "__main__":
    print(regenerate_speech_sample(*sys.argv[1:2]))
