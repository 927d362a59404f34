"""End-to-end encrypted voice client: identity, contacts, e2e crypto, calls, media, audio I/O."""
