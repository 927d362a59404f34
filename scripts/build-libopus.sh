#!/usr/bin/env bash
# Build libopus 1.6.1 into .venv/opt/libopus, with OSCE (the decoder's speech enhancement,
# LACE/NoLACE) and deep PLC. Debian 12 ships libopus 1.3.1, which has neither; with OSCE the
# speech sample scores PESQ-WB 3.26 / 2.89 at 5 / 10 % loss instead of 3.05 / 2.74
# (docs/opus-binding.md, "Which libopus"). voice.media.opus loads this build when it exists
# and falls back to the system's libopus0 otherwise, so a failure here costs quality, not calls.
#
# The source is Debian's upstream tarball (from Debian's own archive: the only source of C code
# this machine may fetch), checked against a pinned SHA-256 before anything is built.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.6.1
SHA256=001ac615b9f8f8994b229ad2b1a5969ed12ab48b0d154d0af1016a5899cd6ba1
TARBALL="opus_${VERSION}.orig.tar.xz"
# In Debian testing (forky) and unstable as of 2026-11; the pool keeps it while a suite does.
URLS=("http://deb.debian.org/debian/pool/main/o/opus/${TARBALL}")
PREFIX="$PWD/.venv/opt/libopus"
STAMP="$PREFIX/.complete"   # written last; voice.media.opus loads the build only if it exists

[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ] && exit 0
rm -rf "$PREFIX"            # an unfinished or older build is never used

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetched=""
for url in "${URLS[@]}"; do
  if curl -fsSL --max-time 300 -o "$work/$TARBALL" "$url"; then fetched="$url"; break; fi
done
if [ -z "$fetched" ]; then
  echo "setup: WARNING: could not download libopus $VERSION; using the system's libopus" >&2
  exit 0
fi
if ! echo "$SHA256  $work/$TARBALL" | sha256sum -c --quiet -; then
  echo "setup: WARNING: libopus $VERSION tarball has the wrong SHA-256; not building it" >&2
  exit 0
fi
echo "setup: building libopus $VERSION (OSCE, deep PLC) into .venv/opt/libopus"
tar -xJf "$work/$TARBALL" -C "$work"
src="$work/opus-$VERSION"
# Each step must succeed (errexit does not apply inside a subshell on the left of ||).
if (cd "$src" \
    && ./configure --prefix="$PREFIX" --enable-osce --enable-deep-plc --disable-dred \
         --disable-static --disable-doc --disable-extra-programs >"$work/configure.log" 2>&1 \
    && make -j"$(nproc)" >"$work/make.log" 2>&1 \
    && make install DESTDIR="$work/stage" >"$work/install.log" 2>&1); then
  mkdir -p "$(dirname "$PREFIX")"
  cp -a "$work/stage$PREFIX" "$PREFIX"
  echo "$VERSION" > "$STAMP"
else
  echo "setup: WARNING: building libopus $VERSION failed (log below); using the system's libopus" >&2
  tail -20 "$work"/*.log >&2 || true
  rm -rf "$PREFIX"
fi
