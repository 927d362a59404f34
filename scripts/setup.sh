#!/usr/bin/env bash
# Install everything the demo and the tests need on a fresh Debian 12 machine with Python 3.11:
# Debian packages (audio, Opus, coturn, Redis, speech synthesis), a virtualenv in .venv and the
# pinned Python packages from pyproject.toml. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  portaudio19-dev     # pyaudio builds against it
  pulseaudio          # a null sink stands in for a sound card in CI
  pulseaudio-utils    # pactl
  libopus0            # libopus: PLC and in-band FEC decoding through our ctypes binding
  curl                # fetches the libopus 1.6.1 source from Debian's archive
  xz-utils            # ... which is a .tar.xz
  gcc                 # builds it (and pyaudio)
  libc6-dev           # ... with the C library's headers (gcc only recommends them)
  make
  python3.11-dev      # Python.h, for pyaudio's C extension
  coturn              # STUN/TURN relay (UDP, TCP, TLS) for the relay and netlab tests
  janus               # WebRTC server: its VideoRoom is the SFU of group calls (voice/group)
  redis-server        # fan-out across signaling instances
  postgresql          # the shared registry of several instances (tests start a throwaway one)
  haproxy             # the load balancer in front of them (tests/test_deploy.py runs it)
  espeak-ng           # speech sample for the demo and the audio tests
  sox                 # audio measurement helpers
  iproute2            # network namespaces (ip netns, veth) for the netlab tests and benchmarks
  iptables            # NAT, loss and outages in the netlab (tests/support/netlab.py)
  docker-compose      # only to check that docker-compose.yml parses (no engine runs here)
  tmux                # two real terminals for the call screen's end-to-end test
  spin                # model-checks the call machine's Promela model (test_call_model.py)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtualenv .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.setup-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pinned Python packages"
  .venv/bin/python -m pip install -q --upgrade "pip==25.3"
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

# libopus 1.6.1 with the decoder's speech enhancement, in .venv/opt/libopus (falls back to the
# system's libopus0 with a warning if it cannot be fetched or built).
bash scripts/build-libopus.sh

# The batch encoder helper beside it, in .venv/opt/opusbatch (without it, or without libopus
# 1.6.1, the codec worker encodes frame by frame, with a warning here).
bash scripts/build-opusbatch.sh
