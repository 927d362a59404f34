#!/bin/sh
# Start Janus with our configs. JANUS_PUBLIC_IP (optional): the public address Janus announces
# in its ICE candidates (--nat-1-1), needed when the host reaches the Internet through a 1:1 NAT
# (most clouds); a host that has its public address on an interface needs none. JANUS_RTP_PORTS:
# the UDP port range for media. JANUS_CONFIGS: where our three .jcfg files are.
set -eu
set -- --configs-folder="${JANUS_CONFIGS:-/etc/janus-voice}" \
    --rtp-port-range="${JANUS_RTP_PORTS:-20000-29999}" "$@"
if [ -n "${JANUS_PUBLIC_IP:-}" ]; then
    set -- "$@" --nat-1-1="$JANUS_PUBLIC_IP"
fi
exec janus "$@"
