"""voice.crypto.keyseal: a seed sealed under a passphrase (Argon2id + XChaCha20-Poly1305).

The format is checked against a second implementation built from libsodium's raw bindings, and
every way to change a sealed file must give the one WrongPassphrase error.
"""

from __future__ import annotations

import base64
import unicodedata

import nacl.bindings as sodium
import pytest
from nacl.pwhash import argon2id
from nacl.signing import SigningKey

from voice.crypto.keyseal import (
    BACKUP_MAGIC,
    DEFAULT_KDF,
    FAST_KDF_FOR_TESTS,
    LOCKED_MAGIC,
    KdfParams,
    open_seed,
    seal_seed,
    sealed_public_key,
)
from voice.errors import WrongPassphrase

SEED = bytes(range(32))
SALT = bytes(range(100, 116))
NONCE = bytes(range(200, 224))
PASS = "correct horse battery staple"
FAST = FAST_KDF_FOR_TESTS


def _reference(magic: str, seed: bytes, passphrase: str, kdf: KdfParams) -> bytes:
    """The documented format, from the raw libsodium calls (a second implementation)."""
    public = bytes(SigningKey(seed).verify_key)
    header = (
        f"{magic}\npublic {base64.b64encode(public).decode()}\n"
        f"argon2id13 {kdf.opslimit} {kdf.memlimit} {base64.b64encode(SALT).decode()}\n"
    ).encode()
    key = sodium.crypto_pwhash_alg(
        32,
        passphrase.encode(),
        SALT,
        kdf.opslimit,
        kdf.memlimit,
        sodium.crypto_pwhash_ALG_ARGON2ID13,
    )
    box = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(seed, header, NONCE, key)
    return header + b"sealed " + base64.b64encode(NONCE + box) + b"\n"


@pytest.mark.parametrize("magic", [LOCKED_MAGIC, BACKUP_MAGIC])
def test_format_matches_a_second_implementation(magic: str) -> None:
    sealed = seal_seed(magic, SEED, PASS, kdf=FAST, salt=SALT, nonce=NONCE)
    assert sealed == _reference(magic, SEED, PASS, FAST)
    assert sealed.decode("ascii").count("\n") == 4 and sealed.startswith(magic.encode() + b"\n")
    assert open_seed(sealed, PASS, magic=magic, source="x") == SEED
    assert sealed_public_key(sealed, magic=magic) == bytes(SigningKey(SEED).verify_key)


def test_default_cost_is_libsodium_moderate() -> None:
    assert KdfParams(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE) == DEFAULT_KDF
    assert DEFAULT_KDF.memlimit == 256 * 1024 * 1024


def test_salt_and_nonce_are_fresh_each_time() -> None:
    a = seal_seed(BACKUP_MAGIC, SEED, PASS, kdf=FAST)
    b = seal_seed(BACKUP_MAGIC, SEED, PASS, kdf=FAST)
    assert a != b
    assert a.split(b"\n")[2] != b.split(b"\n")[2] and a.split(b"\n")[3] != b.split(b"\n")[3]


def test_the_passphrase_is_compared_in_nfc() -> None:
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    assert unicodedata.normalize("NFC", decomposed) == composed
    sealed = seal_seed(LOCKED_MAGIC, SEED, composed, kdf=FAST)
    assert open_seed(sealed, decomposed, magic=LOCKED_MAGIC, source="x") == SEED


@pytest.mark.parametrize("passphrase", ["", "correct horse battery stapl", PASS + " "])
def test_a_wrong_passphrase_is_refused(passphrase: str) -> None:
    sealed = seal_seed(LOCKED_MAGIC, SEED, PASS, kdf=FAST)
    with pytest.raises(WrongPassphrase, match="wrong passphrase, or the file was changed"):
        open_seed(sealed, passphrase, magic=LOCKED_MAGIC, source="x")


def test_every_changed_byte_gives_the_same_error() -> None:
    """Each bit 0 and bit 7 of every byte flipped, every truncation, one byte appended."""
    sealed = seal_seed(BACKUP_MAGIC, SEED, PASS, kdf=FAST)
    variants = []
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            variants.append(sealed[:i] + bytes([sealed[i] ^ bit]) + sealed[i + 1 :])
    variants += [sealed[:n] for n in range(len(sealed))] + [sealed + b"\n", sealed + b"A"]
    messages = set()
    for variant in variants:
        with pytest.raises(WrongPassphrase) as info:
            open_seed(variant, PASS, magic=BACKUP_MAGIC, source="x")
        messages.add(str(info.value))
    assert len(variants) == 3 * len(sealed) + 2 and len(messages) == 1  # one opaque error


def test_a_backup_is_not_a_key_file_and_the_other_way_round() -> None:
    backup = seal_seed(BACKUP_MAGIC, SEED, PASS, kdf=FAST)
    locked = seal_seed(LOCKED_MAGIC, SEED, PASS, kdf=FAST)
    with pytest.raises(WrongPassphrase):
        open_seed(backup, PASS, magic=LOCKED_MAGIC, source="x")
    with pytest.raises(WrongPassphrase):
        open_seed(locked, PASS, magic=BACKUP_MAGIC, source="x")
    # relabelled by hand: the first line is authenticated
    relabelled = BACKUP_MAGIC.encode() + locked[len(LOCKED_MAGIC) :]
    with pytest.raises(WrongPassphrase):
        open_seed(relabelled, PASS, magic=BACKUP_MAGIC, source="x")


@pytest.mark.parametrize(
    ("ops", "mem"),
    [("4294967295", "268435456"), ("3", "4398046510080"), ("0", "268435456"), ("3", "1024")],
)
def test_a_hostile_cost_is_refused_before_any_work(
    ops: str, mem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file asking for 4 billion passes or 4 TiB would stall or kill the reader."""
    lines = seal_seed(BACKUP_MAGIC, SEED, PASS, kdf=FAST).split(b"\n")
    salt = lines[2].split(b" ")[3]
    lines[2] = b"argon2id13 %s %s %s" % (ops.encode(), mem.encode(), salt)
    calls: list[int] = []
    real_kdf = argon2id.kdf

    def counting_kdf(*args: object, **kw: object) -> bytes:
        calls.append(1)
        return real_kdf(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(argon2id, "kdf", counting_kdf)
    with pytest.raises(WrongPassphrase):
        open_seed(b"\n".join(lines), PASS, magic=BACKUP_MAGIC, source="x")
    assert calls == []


def test_sealing_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="empty passphrase"):
        seal_seed(LOCKED_MAGIC, SEED, "", kdf=FAST)
    with pytest.raises(ValueError, match="32 bytes"):
        seal_seed(LOCKED_MAGIC, SEED[:31], PASS, kdf=FAST)
    with pytest.raises(ValueError, match="unknown"):
        seal_seed("voice-identity-v1", SEED, PASS, kdf=FAST)
    with pytest.raises(ValueError):
        KdfParams(0, argon2id.MEMLIMIT_MIN)
