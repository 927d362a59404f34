#!/usr/bin/env bash
# Start a PulseAudio daemon with a null sink named vsink (no sound card needed), if none runs.
# What is played to vsink can be recorded again from vsink.monitor.
set -euo pipefail
if pactl info >/dev/null 2>&1; then
  pactl list short sinks | grep -q vsink || pactl load-module module-null-sink sink_name=vsink >/dev/null
  exit 0
fi
pulseaudio --system=false --daemonize=yes --exit-idle-time=-1 --disallow-exit -n \
  --load="module-null-sink sink_name=vsink" --load="module-native-protocol-unix" \
  --log-target=syslog 2>/dev/null || true
for _ in $(seq 1 50); do pactl info >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "pulse: PulseAudio did not start" >&2
exit 1
