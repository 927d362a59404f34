"""End-to-end cryptography of the voice client: pure functions and objects, no sockets or audio.

identity      Ed25519 identity key file (0600, optionally sealed) and fingerprints
privatefile   private files and their folder: created 0600/0700, checked on every read
keyseal       a seed sealed under a passphrase (Argon2id, XChaCha20-Poly1305)
backup        encrypted identity backups (voice id --export / --import)
contacts      pinned contacts (TOFU): unverified / verified / changed; retained secrets
envelope      sealed client-to-client messages (crypto_box) and their header
replay        ReplayGuard: replay, reordering window, maximum age (clock injected)
keyagreement  committed ephemeral X25519, transcript hash, HKDF -> SRTP keys, SAS, continuity
continuity    retained secrets and continuity tokens (ZRTP rs1/rs2)
sas           short authentication string: words, emoji, digits
kdf           the one HKDF derivation and its labels

The wire formats are in docs/protocol.md; tests/vectors/ holds test vectors for them.
"""
