"""End-to-end cryptography of the voice client: pure functions and objects, no sockets or audio.

identity      Ed25519 identity key file (0600) and fingerprints
contacts      pinned contacts (TOFU): unverified / verified / changed; retained secrets
envelope      sealed client-to-client messages (crypto_box) and their header
replay        ReplayGuard: replay, reordering window, maximum age (clock injected)
keyagreement  committed ephemeral X25519, transcript hash, HKDF -> SRTP keys, SAS, continuity
continuity    retained secrets and continuity tokens (ZRTP rs1/rs2)
sas           short authentication string: words, emoji, digits
kdf           the one HKDF derivation and its labels

The wire formats are in docs/protocol.md; tests/vectors/ holds test vectors for them.
"""
