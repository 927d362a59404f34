"""The `voice` subcommands that need no server: id, contacts, trust, devices, and --help."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from voice.cli import main
from voice.crypto.contacts import ContactBook, TrustState
from voice.crypto.identity import Identity
from voice.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_id_creates_a_0600_key_and_prints_both_fingerprint_forms(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    code, out, _ = run("--config-dir", str(conf), "id")
    assert code == ExitCode.OK
    key = conf / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(conf.stat().st_mode) == 0o700
    fp = Identity.load_or_create(key).fingerprint
    assert fp.human in out and fp.machine in out
    assert "Created a new identity" in out


def test_second_id_run_shows_the_same_identity(tmp_path: Path) -> None:
    conf = str(tmp_path / "conf")
    _, first, _ = run("--config-dir", conf, "id")
    code, second, _ = run("id", "--config-dir", conf)  # global option after the subcommand
    assert code == ExitCode.OK
    fp = Identity.load_or_create(tmp_path / "conf" / "identity.key").fingerprint
    assert fp.machine in first and fp.machine in second
    assert "Created" not in second


def test_id_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    run("--config-dir", str(conf), "id")
    os.chmod(conf / "identity.key", 0o644)
    code, _, err = run("--config-dir", str(conf), "id")
    assert code == ExitCode.LOCAL_ERROR
    assert "chmod 600" in err


def test_id_uses_xdg_config_home_by_default(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("VOICE_USER", None)
    done = subprocess.run(
        [sys.executable, "-m", "voice.cli", "id"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "voice" / "identity.key").is_file()


def test_contacts_and_trust_round_trip(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    bob_old, bob_new = Identity.generate(), Identity.generate()
    book = ContactBook(conf / "contacts.json")
    book.check("bob", bob_old.public_key)  # pinned on first use, as a call would

    code, out, _ = run("--config-dir", str(conf), "contacts")
    assert code == ExitCode.OK
    assert "bob" in out and "unverified" in out and bob_old.fingerprint.human in out

    code, out, _ = run("--config-dir", str(conf), "trust", "bob", bob_old.fingerprint.machine)
    assert code == ExitCode.OK
    contact = ContactBook(conf / "contacts.json").get("bob")
    assert contact is not None and contact.state is TrustState.VERIFIED

    # bob's key changes: contacts shows both keys and the exact command to run
    with pytest.raises(Exception, match="changed"):
        ContactBook(conf / "contacts.json").check("bob", bob_new.public_key)
    code, out, _ = run("--config-dir", str(conf), "contacts")
    assert "changed" in out and bob_new.fingerprint.human in out
    assert f"voice trust bob {bob_new.fingerprint.machine}" in out

    # trusting a wrong fingerprint changes nothing; the human form (spaces) of the right one works
    stranger = Identity.generate().fingerprint.machine
    code, _, err = run("--config-dir", str(conf), "trust", "bob", stranger)
    assert code == ExitCode.USAGE and "not the fingerprint" in err
    code, _, _ = run("--config-dir", str(conf), "trust", "bob", *bob_new.fingerprint.human.split())
    assert code == ExitCode.OK
    contact = ContactBook(conf / "contacts.json").get("bob")
    assert contact is not None and contact.public_key == bob_new.public_key
    assert contact.state is TrustState.VERIFIED


def test_trust_of_a_new_contact_needs_the_server_and_a_well_formed_fingerprint(
    tmp_path: Path,
) -> None:
    """Someone not yet a contact is looked up on the server (tests/voice/test_cli_trust.py):
    with no server to ask, nothing is pinned and the exit code says why."""
    conf = str(tmp_path / "conf")
    fp = Identity.generate().fingerprint.machine
    code, _, err = run("--config-dir", conf, "--server", "ws://127.0.0.1:9", "--user", "alice",
                       "trust", "carol", fp)  # fmt: skip
    assert code == ExitCode.SERVER_UNREACHABLE, err
    assert ContactBook(tmp_path / "conf" / "contacts.json").get("carol") is None
    code, _, err = run("--config-dir", conf, "trust", "carol", "not-a-fingerprint")
    assert code == ExitCode.USAGE and "not a fingerprint" in err


@pytest.fixture
def pulse() -> None:
    """PulseAudio with a null sink (scripts/pulse.sh starts it if none runs)."""
    subprocess.run(["bash", str(REPO / "scripts" / "pulse.sh")], check=True)


def test_devices_lists_pulseaudio_devices(pulse: None) -> None:
    code, out, _ = run("devices")
    assert code == ExitCode.OK
    names = [line.split()[-1] for line in out.splitlines()[1:]]
    assert "pulse" in names


def test_help_documents_every_exit_code() -> None:
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "voice"), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    for code in ExitCode:
        assert f"{code.value:>3}  {code.name}" in done.stdout


def test_bad_username_is_a_usage_error(tmp_path: Path) -> None:
    argv = ["--config-dir", str(tmp_path), "--user", "Not A Name", "listen", "--silence"]
    code, _, err = run(*argv, "--no-output")
    assert code == ExitCode.USAGE and "not a valid username" in err
