"""The batch encoder helper: which shared library is loaded, and its C declaration.

The lower tier of batch encoding (as :mod:`voice.media.libopus` is for libopus itself):
``scripts/build-opusbatch.sh`` compiles ``voice/media/native/opusbatch.c`` into the virtualenv;
this module loads it once, on first use, and declares ``opusbatch_encode``. The API that uses it
is :func:`voice.media.opus.encode_many`. Why a helper at all (docs/media.md, "Scaling"): ctypes
releases the GIL around every foreign call, and a codec worker that encodes frame by frame must
win it back from the busy event loop thread after each frame; the helper encodes a batch per
call. Without the helper (not built, or ``VOICE_OPUSBATCH=0``) :func:`load` returns None and
frames are encoded one call each, with the same bytes.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

HELPER: Final = Path(sys.prefix) / "opt" / "opusbatch" / "libopusbatch.so"
STAMP: Final = HELPER.parent / ".complete"  # written last by the build script

_loaded = False
_encode: Callable[..., int] | None = None


def load() -> Callable[..., int] | None:
    """``opusbatch_encode`` with its prototype, or None (frame-by-frame encoding then)."""
    global _loaded, _encode
    if _loaded:
        return _encode
    _loaded = True
    if os.environ.get("VOICE_OPUSBATCH", "1") == "0" or not (HELPER.exists() and STAMP.exists()):
        return None
    try:
        func = ctypes.CDLL(str(HELPER)).opusbatch_encode
    except (OSError, AttributeError):
        return None
    i32p = ctypes.POINTER(ctypes.c_int32)
    func.argtypes = [
        ctypes.c_void_p,  # opus_encode of the library that created the states
        ctypes.c_int,  # n frames
        ctypes.POINTER(ctypes.c_void_p),  # states[n] (NULL: skipped)
        ctypes.c_char_p,  # pcm[n * frame_samples], s16le
        ctypes.c_int,  # frame_samples
        ctypes.c_void_p,  # out[n * out_cap]
        ctypes.c_int32,  # out_cap
        i32p,  # lens[n]: packet size or libopus error
    ]
    func.restype = ctypes.c_int64  # nanoseconds spent encoding
    _encode = func
    return func


def reset() -> None:
    """Forget the loaded helper (tests switch ``VOICE_OPUSBATCH``)."""
    global _loaded, _encode
    _loaded, _encode = False, None
