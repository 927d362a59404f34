"""Attack 11, identity lifecycle: the key at rest, its backup, and restoring it.

The attacker holds a copy of the key file or of the backup (a stolen laptop disk, a lost USB
stick), or can change the backup before it is imported. A protected key file must not hold the
seed in any encoding; a backup opened with a wrong passphrase or changed in any byte must fail
with one error and change nothing; an import must never leave a half-written key, nor replace
another identity without ``--force``. Everything runs through ``voice`` main and the real
Argon2id cost, except the exhaustive byte-flip sweep, which uses libsodium's minimum cost.
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.leakscan import decoded_runs, find_any, leak_needles
from voice.cli import main
from voice.crypto.backup import install_identity, read_backup, write_backup
from voice.crypto.identity import Identity, key_file_info
from voice.crypto.keyseal import DEFAULT_KDF
from voice.crypto.keyseal import FAST_KDF_FOR_TESTS as FAST
from voice.errors import WrongPassphrase
from voice.exitcodes import ExitCode

PASS = "backup passphrase for the tests"
KEYPASS = "key passphrase for the tests"
ONE_ERROR = "wrong passphrase, or the file was changed or damaged"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOICE_USER", "VOICE_PASSPHRASE", "VOICE_NEW_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VOICE_BACKUP_PASSPHRASE", PASS)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file in ``folder``: content, inode and mtime (a rewrite changes one of them)."""
    return {
        p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
    }


def secrets_of(identity: Identity) -> dict[str, bytes]:
    seed = bytes(identity._signing_key)  # the test reads the secret it must not find
    return {"seed": seed, "x25519 private key": bytes(identity.x25519_private_key())}


def leaks(blob: bytes, identity: Identity) -> set[str]:
    needles = leak_needles(secrets_of(identity))
    return find_any(blob + b"\n".join(decoded_runs(blob)), needles)


# -- the key at rest -----------------------------------------------------------------------------


def test_a_protected_key_file_holds_no_copy_of_the_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    assert run("--config-dir", str(conf), "id")[0] == ExitCode.OK
    key = conf / "identity.key"
    me = Identity.load(key)
    assert leaks(key.read_bytes(), me) == {"seed"}  # control: a plain key file shows it
    monkeypatch.setenv("VOICE_NEW_PASSPHRASE", KEYPASS)
    code, out, err = run("--config-dir", str(conf), "id", "--set-passphrase")
    assert code == ExitCode.OK, err
    sealed = key.read_bytes()
    assert leaks(sealed, me) == set()  # raw, hex, base64 at every alignment, repr
    assert KEYPASS.encode() not in sealed and KEYPASS not in out + err
    assert sorted(p.name for p in conf.iterdir()) == ["identity.key"]  # no temp copy left
    # the attacker's price per guess: libsodium's MODERATE cost, written in the file
    assert f"argon2id13 {DEFAULT_KDF.opslimit} {DEFAULT_KDF.memlimit} ".encode() in sealed
    assert DEFAULT_KDF.memlimit >= 256 * 1024 * 1024
    assert Identity.load(key, passphrase=lambda: KEYPASS).public_key == me.public_key


def test_a_backup_holds_no_copy_of_the_seed(tmp_path: Path) -> None:
    me = Identity.generate()
    write_backup(me, tmp_path / "b", PASS, kdf=FAST)
    assert leaks((tmp_path / "b").read_bytes(), me) == set()


def test_a_changed_protected_key_file_does_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    me = Identity.generate()
    me.save(conf / "identity.key", passphrase=KEYPASS)
    data = (conf / "identity.key").read_bytes()
    line3 = data.index(b"\nsealed ") + 20
    (conf / "identity.key").write_bytes(data[:line3] + bytes([data[line3] ^ 1]) + data[line3 + 1 :])
    monkeypatch.setenv("VOICE_PASSPHRASE", KEYPASS)
    code, _, err = run("--config-dir", str(conf), "--user", "alice", "call", "bob")
    assert code == ExitCode.LOCAL_ERROR and ONE_ERROR in err


# -- a wrong passphrase or a changed backup changes nothing --------------------------------------


def flipped(data: bytes, line: int, column: int) -> bytes:
    """``data`` with one bit flipped in ``line`` (0-3) at ``column`` (negative: from its end)."""
    starts = [0, *(i + 1 for i, c in enumerate(data) if c == 0x0A)][:-1]
    end = data.index(b"\n", starts[line])
    i = (starts[line] + column) if column >= 0 else end + column
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


TAMPERS = {
    "format line": (0, 5),
    "public key": (1, 10),
    "argon2 passes": (2, 11),  # "argon2id13 3 ...": 3 -> 2, a cheaper KDF for the attacker
    "argon2 salt": (2, -5),
    "nonce": (3, 10),
    "ciphertext": (3, 45),
    "tag": (3, -5),
}


@pytest.fixture
def backup_of_bob(tmp_path: Path) -> Iterator[tuple[Path, Identity]]:
    """A backup at libsodium's minimum Argon2 cost (the reader takes the cost from the file)."""
    bob = Identity.generate()
    write_backup(bob, tmp_path / "bob.backup", PASS, kdf=FAST)
    yield tmp_path / "bob.backup", bob


@pytest.mark.parametrize("existing", [True, False], ids=["over an identity", "fresh dir"])
def test_a_wrong_passphrase_or_any_changed_byte_fails_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    bob, backup = Identity.generate(), tmp_path / "bob.backup"
    write_backup(bob, backup, PASS)  # the real cost: 3 passes over 256 MiB
    conf = tmp_path / "conf"
    conf.mkdir(mode=0o700)
    if existing:
        assert run("--config-dir", str(conf), "id")[0] == ExitCode.OK
    before = snapshot(conf)
    original = backup.read_bytes()
    attempts = {name: flipped(original, *where) for name, where in TAMPERS.items()}
    attempts["wrong passphrase"] = original
    for name, data in attempts.items():
        target = tmp_path / f"try-{name.replace(' ', '-')}"
        target.write_bytes(data)
        passphrase = PASS + "?" if name == "wrong passphrase" else PASS
        monkeypatch.setenv("VOICE_BACKUP_PASSPHRASE", passphrase)
        code, out, err = run("--config-dir", str(conf), "id", "--import", str(target), "--force")
        assert code == ExitCode.LOCAL_ERROR, (name, out, err)
        assert err == f"voice: cannot open {target}: {ONE_ERROR}\n", name  # one clear error
        assert snapshot(conf) == before, name  # the key, byte for byte, inode and mtime
    # control: the intact backup with its passphrase does restore bob (so the checks matter)
    monkeypatch.setenv("VOICE_BACKUP_PASSPHRASE", PASS)
    code, out, err = run("--config-dir", str(conf), "id", "--import", str(backup), "--force")
    assert code == ExitCode.OK, err
    assert bob.fingerprint.human in out
    assert Identity.load(conf / "identity.key").public_key == bob.public_key


def test_every_single_byte_change_to_a_backup_is_refused(tmp_path: Path) -> None:
    """Exhaustive, at libsodium's minimum Argon2 cost: every bit 0 of every byte, every
    truncation. None opens, and the key file is never touched."""
    bob, alice = Identity.generate(), Identity.generate()
    write_backup(bob, tmp_path / "b", PASS, kdf=FAST)
    key = tmp_path / "conf" / "identity.key"
    alice.save(key)
    before = snapshot(key.parent)
    data = (tmp_path / "b").read_bytes()
    variants = [data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :] for i in range(len(data))]
    variants += [data[:n] for n in range(len(data))]
    for variant in variants:
        (tmp_path / "v").write_bytes(variant)
        with pytest.raises(WrongPassphrase):
            install_identity(read_backup(tmp_path / "v", PASS), key, force=True)
    assert snapshot(key.parent) == before
    assert read_backup(tmp_path / "b", PASS).public_key == bob.public_key  # control


def test_a_hostile_backup_cannot_make_the_import_exhaust_memory(tmp_path: Path) -> None:
    bob = Identity.generate()
    write_backup(bob, tmp_path / "b", PASS, kdf=FAST)
    lines = (tmp_path / "b").read_bytes().split(b"\n")
    salt = lines[2].split()[3]
    lines[2] = b"argon2id13 4294967295 4398046510080 " + salt  # 4 billion passes over 4 TiB
    (tmp_path / "hostile").write_bytes(b"\n".join(lines))
    start = time.monotonic()
    code, _, err = run(
        "--config-dir", str(tmp_path / "conf"), "id", "--import", str(tmp_path / "hostile")
    )
    assert code == ExitCode.LOCAL_ERROR and ONE_ERROR in err
    assert time.monotonic() - start < 2.0
    assert not (tmp_path / "conf" / "identity.key").exists()


# -- never a half-written key, never another identity replaced by accident ------------------------


class DiskFull(OSError):
    pass


def _half_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write in the private-file helpers writes half of what it is given, then fails."""
    real_write = os.write

    def half(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[: max(1, len(data) // 2)]))
        raise DiskFull(28, "No space left on device")

    monkeypatch.setattr(os, "write", half)


def test_control_a_direct_write_leaves_a_torn_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the temporary file, the same failure leaves half a key where the key was."""
    key = tmp_path / "identity.key"
    Identity.generate().save(key)
    new = Identity.generate().key_file_bytes()
    _half_writes(monkeypatch)
    fd = os.open(key, os.O_WRONLY | os.O_TRUNC)
    with pytest.raises(DiskFull):
        os.write(fd, new)
    os.close(fd)
    monkeypatch.undo()
    assert len(key.read_bytes()) < len(new)
    with pytest.raises(Exception, match="not a voice identity key file"):
        Identity.load(key)


@pytest.mark.parametrize("existing", [True, False], ids=["replace", "create"])
@pytest.mark.parametrize("fault", ["disk full", "crash before rename"])
def test_an_import_that_fails_midway_leaves_the_old_key_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool, fault: str
) -> None:
    conf = tmp_path / "conf"
    bob = Identity.generate()
    write_backup(bob, tmp_path / "bob.backup", PASS, kdf=FAST)
    if existing:
        Identity.generate().save(conf / "identity.key")
    else:
        conf.mkdir(mode=0o700)
    before = snapshot(conf)
    if fault == "disk full":
        _half_writes(monkeypatch)
    else:

        def crash(*args: object) -> None:
            raise DiskFull(5, "Input/output error")

        monkeypatch.setattr(os, "replace" if existing else "link", crash)
    code, _, err = run(
        "--config-dir", str(conf), "id", "--import", str(tmp_path / "bob.backup"), "--force"
    )
    monkeypatch.undo()
    assert code == ExitCode.LOCAL_ERROR and "nothing was changed" in err, err
    assert snapshot(conf) == before  # the old key (or none), and no temporary file left


def test_an_import_refuses_another_identity_without_force(
    tmp_path: Path, backup_of_bob: tuple[Path, Identity]
) -> None:
    backup, bob = backup_of_bob
    conf = tmp_path / "conf"
    assert run("--config-dir", str(conf), "id")[0] == ExitCode.OK
    alice = Identity.load(conf / "identity.key")
    before = snapshot(conf)
    code, _, err = run("--config-dir", str(conf), "id", "--import", str(backup))
    assert code == ExitCode.USAGE
    assert "holds another identity" in err and alice.fingerprint.human in err and "--force" in err
    assert snapshot(conf) == before
    code, out, _ = run("--config-dir", str(conf), "id", "--import", str(backup), "--force")
    assert code == ExitCode.OK
    assert f"It replaced the identity {alice.fingerprint.human}" in out
    assert key_file_info(conf / "identity.key").public_key == bob.public_key


def test_an_imported_key_can_be_protected_without_ever_being_stored_in_clear(
    tmp_path: Path, backup_of_bob: tuple[Path, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    backup, bob = backup_of_bob
    conf = tmp_path / "conf"
    written: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes | memoryview) -> int:
        written.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)
    monkeypatch.setenv("VOICE_NEW_PASSPHRASE", KEYPASS)
    code, _, err = run("--config-dir", str(conf), "id", "--import", str(backup), "--set-passphrase")
    monkeypatch.undo()
    assert code == ExitCode.OK, err
    assert written and not any(leaks(chunk, bob) for chunk in written)
    assert key_file_info(conf / "identity.key").protected


def test_the_backup_file_format_is_what_the_docs_say(tmp_path: Path) -> None:
    bob, backup = Identity.generate(), tmp_path / "bob.backup"
    write_backup(bob, backup, PASS)
    lines = backup.read_text("ascii").split("\n")
    assert lines[0] == "voice-identity-backup-v1" and lines[4] == "" and len(lines) == 5
    assert lines[1] == "public " + base64.b64encode(bob.public_key).decode()
    assert lines[2].startswith("argon2id13 3 268435456 ")
    assert len(base64.b64decode(lines[3].removeprefix("sealed "))) == 24 + 32 + 16
    assert backup.stat().st_mode & 0o777 == 0o600
