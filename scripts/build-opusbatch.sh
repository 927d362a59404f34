#!/usr/bin/env bash
# Build the batch encoder helper (voice/media/native/opusbatch.c) into .venv/opt/opusbatch, with
# the headers of the libopus 1.6.1 that scripts/build-libopus.sh built. The codec worker then
# encodes a whole batch of frames per foreign call (one GIL hand-over per batch instead of one
# per frame; docs/media.md, "Scaling"). Without it voice.media.opus encodes frame by frame as
# before, so a failure here costs capacity, not calls. Idempotent: rebuilt only when the source
# changes (the stamp holds its SHA-256 and is written last).
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=voice/media/native/opusbatch.c
LIBOPUS="$PWD/.venv/opt/libopus"
OUT="$PWD/.venv/opt/opusbatch"
STAMP="$OUT/.complete"
want=$(sha256sum "$SRC" | cut -d' ' -f1)

[ -f "$STAMP" ] && [ -f "$OUT/libopusbatch.so" ] && [ "$(cat "$STAMP")" = "$want" ] && exit 0
rm -rf "$OUT"               # a stale or unfinished helper is never loaded
if [ ! -f "$LIBOPUS/.complete" ] || [ ! -f "$LIBOPUS/include/opus/opus.h" ]; then
  echo "setup: WARNING: libopus 1.6.1 is not built; encoding frame by frame (no batch helper)" >&2
  exit 0
fi
mkdir -p "$OUT"
if "${CC:-gcc}" -shared -fPIC -O2 -Wall -Wextra -Werror -I"$LIBOPUS/include/opus" \
     -o "$OUT/libopusbatch.so.tmp" "$SRC" 2>"$OUT/build.log"; then
  mv "$OUT/libopusbatch.so.tmp" "$OUT/libopusbatch.so"
  rm -f "$OUT/build.log"
  echo "$want" > "$STAMP"
  echo "setup: built the batch encoder helper into .venv/opt/opusbatch"
else
  echo "setup: WARNING: building the batch encoder helper failed; encoding frame by frame" >&2
  cat "$OUT/build.log" >&2 || true
  rm -rf "$OUT"
fi
