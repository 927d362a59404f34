"""libopus itself: which library is loaded, and the C declarations of what we call in it.

The binding's lower tier (as pynacl's ``bindings/`` sits under its public API): this module
finds and loads ``libopus.so.0`` with ctypes, declares the prototypes of the functions the codec
API (:mod:`voice.media.opus`) calls, and holds the constants of ``opus_defines.h`` it passes.
Nothing here encodes or decodes.

Which library (docs/opus-binding.md, "Which libopus"): ``VOICE_LIBOPUS`` if set (and nothing
else), else libopus 1.6.1 built by ``scripts/build-libopus.sh`` into the virtualenv (decoders
then enhance SILK speech, LACE) if that build finished, else the system's libopus0 (1.3.1 on
Debian 12). Loading happens once, on first use (:func:`load`), not at import; a library that
cannot be loaded is :class:`~voice.errors.CodecUnavailable`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import Final

from voice.errors import CodecError, CodecUnavailable

# opus_defines.h
OK: Final = 0
APPLICATION_VOIP: Final = 2048
SIGNAL_VOICE: Final = 3001
SET_BITRATE: Final = 4002
SET_MAX_BANDWIDTH: Final = 4004
SET_VBR: Final = 4006
GET_VBR: Final = 4007
SET_COMPLEXITY: Final = 4010
SET_INBAND_FEC: Final = 4012
SET_PACKET_LOSS_PERC: Final = 4014
SET_DTX: Final = 4016
GET_DTX: Final = 4017
SET_SIGNAL: Final = 4024
BANDWIDTHS: Final = {"wideband": 1103, "superwideband": 1104, "fullband": 1105}
ERRORS: Final = {
    -1: "bad argument",
    -2: "buffer too small",
    -3: "internal error",
    -4: "invalid or corrupted packet",
    -5: "unimplemented request",
    -6: "invalid state",
    -7: "memory allocation failed",
}

# Where scripts/build-libopus.sh installs its build: inside the virtualenv we run from. The
# script writes the stamp last, so a build it did not finish is never loaded.
BUNDLED_LIBOPUS: Final = Path(sys.prefix) / "opt" / "libopus" / "lib" / "libopus.so.0"
BUNDLED_STAMP: Final = BUNDLED_LIBOPUS.parent.parent / ".complete"

_lib: ctypes.CDLL | None = None


def library_version() -> str:
    """The loaded libopus's version string, e.g. ``"libopus 1.6.1"``."""
    raw = load().opus_get_version_string()
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


def library_candidates() -> list[str]:
    """Where libopus is looked for, in order (docs/opus-binding.md, "Which libopus").

    ``VOICE_LIBOPUS`` names one library and nothing else is tried. Otherwise the build that
    ``scripts/build-libopus.sh`` leaves in the virtualenv (libopus 1.6.1 with the decoder's
    speech enhancement) comes first, then the system's libopus0.
    """
    explicit = os.environ.get("VOICE_LIBOPUS")
    if explicit:
        return [explicit]
    system = ctypes.util.find_library("opus") or "libopus.so.0"
    return [str(BUNDLED_LIBOPUS), system]


def bundled_build_complete() -> bool:
    """Whether scripts/build-libopus.sh finished its build (library and stamp both there)."""
    return BUNDLED_LIBOPUS.exists() and BUNDLED_STAMP.exists()


def load() -> ctypes.CDLL:
    """Load libopus once and declare the prototypes of the functions we call."""
    global _lib
    if _lib is not None:
        return _lib
    errors: list[str] = []
    lib: ctypes.CDLL | None = None
    for name in library_candidates():
        if name == str(BUNDLED_LIBOPUS) and not bundled_build_complete():
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    if lib is None:
        raise CodecUnavailable(f"cannot load libopus ({'; '.join(errors)}); install libopus0")
    _declare(lib)
    _lib = lib
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    """The prototypes (``argtypes``/``restype``), so that ctypes checks every argument."""
    p, i32, i16p, u8p = (
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.POINTER(ctypes.c_int16),
        ctypes.c_char_p,
    )
    errp = ctypes.POINTER(ctypes.c_int)
    for fn, argtypes, restype in (
        ("opus_encoder_create", [i32, ctypes.c_int, ctypes.c_int, errp], p),
        ("opus_encode", [p, i16p, ctypes.c_int, u8p, i32], i32),
        ("opus_encoder_destroy", [p], None),
        ("opus_decoder_create", [i32, ctypes.c_int, errp], p),
        ("opus_decode", [p, u8p, i32, i16p, ctypes.c_int, ctypes.c_int], ctypes.c_int),
        ("opus_decoder_destroy", [p], None),
        ("opus_packet_get_nb_samples", [u8p, i32, i32], ctypes.c_int),
    ):
        func = getattr(lib, fn)
        func.argtypes = argtypes
        func.restype = restype
    # opus_encoder_ctl is variadic: declare the fixed arguments only, pass the rest as c_int32.
    lib.opus_encoder_ctl.argtypes = [p, ctypes.c_int]
    lib.opus_encoder_ctl.restype = ctypes.c_int
    lib.opus_decoder_ctl.argtypes = [p, ctypes.c_int]
    lib.opus_decoder_ctl.restype = ctypes.c_int
    lib.opus_get_version_string.argtypes = []
    lib.opus_get_version_string.restype = ctypes.c_char_p
    if hasattr(lib, "opus_packet_has_lbrr"):  # libopus >= 1.5
        lib.opus_packet_has_lbrr.argtypes = [u8p, i32]
        lib.opus_packet_has_lbrr.restype = ctypes.c_int


def check(code: int, what: str) -> int:
    """``code`` if it is not a libopus error (< 0), else :class:`~voice.errors.CodecError`."""
    if code < 0:
        raise CodecError(f"opus {what} failed: {ERRORS.get(code, f'error {code}')}")
    return code
