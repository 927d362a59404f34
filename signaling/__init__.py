"""Untrusted signaling server: routes opaque sealed envelopes between authenticated users."""
