"""Group calls, end to end through an SFU (Janus): each Opus frame is sealed with SFrame.

``voice.group.sframe`` is the pure SFrame layer (RFC 9605): headers, key derivation, a sender
that never reuses a counter and a receiver with per-key replay windows. ``voice.group.suites``
holds its cipher suites. Both take keys as bytes and do no I/O.

The media path (docs/group-media.md): ``janusd`` runs a Janus, ``janus`` and ``videoroom`` speak
its API, ``frames`` hooks our sealed frames into aiortc and takes received ones before its
decoder, and ``member`` is one member's publisher and subscriber connections.
"""
