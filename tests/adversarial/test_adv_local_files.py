"""Attack 8, local files: the config directory and the private files in it.

Another local user (simulated with ``os.chown`` to a uid that is not ours: the suite runs as
root) plants files or symlinks where the client reads and writes. Everything here goes through
the client's real entry points (``voice`` main, Settings, ServerPins, read_secret_file), so the
same tests, run against the code before the fix, fail.
"""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest

from voice.cli import main
from voice.cli.context import resolve_settings
from voice.cli.serverpins import ServerPins
from voice.crypto.identity import Identity, read_secret_file
from voice.errors import InsecureKeyFile
from voice.exitcodes import ExitCode

STRANGER = 54321  # a uid that is not ours


def octal(mode: int) -> str:
    return f"{mode:04o}"


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="os.chown to another uid needs root"
)


@pytest.fixture(autouse=True)
def _no_user_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICE_USER", raising=False)
    monkeypatch.delenv("VOICE_PASSPHRASE", raising=False)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True)
    return path


def private_file(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.close(fd)
    return path


def free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}"


# -- the `user` file and its temporary name ------------------------------------------------------


def _old_remember_user(conf: Path, user: str) -> None:
    """The code before the fix (voice/cli/context.py), kept as the control."""
    tmp = (conf / "user").with_name(f".user.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(user + "\n")
    os.replace(tmp, conf / "user")


def test_control_a_symlink_at_the_predictable_name_redirected_the_old_write(
    tmp_path: Path,
) -> None:
    conf = private_dir(tmp_path / "conf")
    victim = tmp_path / "victim"  # say ~/.bashrc
    victim.write_text("precious\n")
    (conf / f".user.{os.getpid()}.tmp").symlink_to(victim)
    _old_remember_user(conf, "alice")
    assert victim.read_text() == "alice\n"  # the attack works without the defence
    assert (conf / "user").is_symlink()  # and the user file is now the attacker's link


def test_a_symlink_at_the_predictable_name_redirects_nothing(tmp_path: Path) -> None:
    conf = private_dir(tmp_path / "conf")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (conf / f".user.{os.getpid()}.tmp").symlink_to(victim)
    settings = resolve_settings(config_dir=str(conf), server=None, user=None, env={})
    settings.remember_user("alice")
    assert victim.read_text() == "precious\n"
    assert not (conf / "user").is_symlink()
    assert (conf / "user").read_bytes() == b"alice\n"
    assert (conf / "user").stat().st_mode & 0o777 == 0o600


def test_even_a_guessed_temporary_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is random; if an attacker still guessed it, O_EXCL|O_NOFOLLOW refuse the link."""
    conf = private_dir(tmp_path / "conf")
    settings = resolve_settings(config_dir=str(conf), server=None, user=None, env={})
    settings.remember_user("alice")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    monkeypatch.setattr(os, "urandom", lambda n: b"\x00" * n)
    (conf / f".user.{os.getpid()}.{'00' * 8}.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        settings.remember_user("mallory")
    assert victim.read_text() == "precious\n"
    assert (conf / "user").read_bytes() == b"alice\n"  # the old name, untouched


# -- the config directory -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o730, 0o703, 0o1777], ids=octal)
def test_a_config_dir_others_can_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    conf = private_dir(tmp_path / "conf")
    os.chmod(conf, mode)
    code, _, err = run("--config-dir", str(conf), "id")
    assert code == ExitCode.LOCAL_ERROR, err
    assert f"chmod 700 {conf}" in err and "Traceback" not in err
    assert list(conf.iterdir()) == []  # no key was created in it


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755], ids=octal)
def test_control_a_config_dir_only_we_can_write_to_is_used(tmp_path: Path, mode: int) -> None:
    conf = private_dir(tmp_path / "conf")
    os.chmod(conf, mode)
    assert run("--config-dir", str(conf), "id")[0] == ExitCode.OK
    assert run("--config-dir", str(conf), "id")[0] == ExitCode.OK  # and read back


def test_an_existing_key_in_a_config_dir_made_writable_is_refused(tmp_path: Path) -> None:
    conf = private_dir(tmp_path / "conf")
    assert run("--config-dir", str(conf), "id")[0] == ExitCode.OK
    os.chmod(conf, 0o777)
    code, _, err = run("--config-dir", str(conf), "id")
    assert code == ExitCode.LOCAL_ERROR and "group or others can write" in err


def test_a_new_config_dir_is_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        code, _, _ = run("--config-dir", str(tmp_path / "a" / "conf"), "id")
    finally:
        os.umask(old)
    assert code == ExitCode.OK
    assert (tmp_path / "a" / "conf").stat().st_mode & 0o777 == 0o700


@needs_root
def test_a_config_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    conf = private_dir(tmp_path / "conf")
    os.chown(conf, STRANGER, -1)
    code, _, err = run("--config-dir", str(conf), "id")
    assert code == ExitCode.LOCAL_ERROR
    assert "belongs to another user" in err and not (conf / "identity.key").exists()


# -- servers.json, user, replay.json and the other private files ---------------------------------


@needs_root
def test_a_servers_json_of_another_user_is_refused(tmp_path: Path) -> None:
    """Another user who pins a relay's name for our server would make us refuse the real one
    and accept theirs (see test_adv_server_relay.py)."""
    conf = private_dir(tmp_path / "conf")
    url = free_url()
    pins = private_file(conf / "servers.json", b'{"%s": "relay"}' % url.encode())
    assert ServerPins(pins).get(url) is not None  # control: ours, the pin is used
    os.chown(pins, STRANGER, -1)
    with pytest.raises(InsecureKeyFile, match="belongs to another user"):
        ServerPins(pins).get(url)
    # the CLI stops before it connects: exit 12, not 3 (the server is unreachable)
    argv = ["--config-dir", str(conf), "--server", url, "--user", "alice", "call", "bob"]
    code, _, err = run(*argv, "--silence", "--no-output", "--no-prompt")
    assert code == ExitCode.LOCAL_ERROR, err
    assert "servers.json belongs to another user" in err


@pytest.mark.parametrize("mode", [0o666, 0o644, 0o620], ids=octal)
def test_a_servers_json_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    conf = private_dir(tmp_path / "conf")
    pins = private_file(conf / "servers.json", b'{"ws://a:1": "relay"}')
    os.chmod(pins, mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        ServerPins(pins).get("ws://a:1")


@needs_root
def test_a_user_file_of_another_user_is_refused(tmp_path: Path) -> None:
    conf = private_dir(tmp_path / "conf")
    user = private_file(conf / "user", b"mallory\n")
    code, out, _ = run("--config-dir", str(conf), "id")
    assert code == ExitCode.OK and "User:         mallory" in out  # control: ours, it is used
    os.chown(user, STRANGER, -1)
    code, out, err = run("--config-dir", str(conf), "id")
    assert code == ExitCode.LOCAL_ERROR, out + err
    assert "user belongs to another user" in err and "mallory" not in out


@needs_root
@pytest.mark.parametrize(
    "name", ["identity.key", "contacts.json", "servers.json", "replay.json", "user"]
)
def test_the_shared_reader_refuses_every_private_file_of_another_user(
    tmp_path: Path, name: str
) -> None:
    conf = private_dir(tmp_path / "conf")
    path = private_file(conf / name, b"anything\n")
    assert read_secret_file(path) == b"anything\n"  # control
    os.chown(path, STRANGER, -1)
    with pytest.raises(InsecureKeyFile, match="belongs to another user"):
        read_secret_file(path)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702], ids=octal)
def test_the_shared_reader_refuses_a_private_file_in_a_folder_others_can_write(
    tmp_path: Path, mode: int
) -> None:
    """0600 and ours is not enough if someone else could have put it there (or can swap it)."""
    conf = private_dir(tmp_path / "conf")
    key = conf / "identity.key"
    Identity.load_or_create(key)
    os.chmod(conf, mode)
    with pytest.raises(InsecureKeyFile, match="chmod 700"):
        read_secret_file(key)
    with pytest.raises(InsecureKeyFile, match="chmod 700"):
        Identity.load_or_create(key)
