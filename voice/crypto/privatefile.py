"""Private files and their folder: created 0600 in a 0700 folder, read only while still private.

Every private file of the client (identity key, contacts, server pins, replay journal, the
``user`` file) goes through these helpers, so each check is made in one place:

* reading (:func:`read_secret_file`): opened with ``O_NOFOLLOW`` (a symlink is refused); the
  open descriptor must be a regular file that we own, with no group or other permission bit;
  its folder must pass :func:`check_private_dir`;
* writing: always a new file, ``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600 from ``os.open`` (never a
  chmod afterwards), under a random temporary name (never a predictable one at which someone
  could plant a symlink), fsync'ed, then linked (:func:`create_private_file`, never overwrites)
  or renamed (:func:`replace_private_file`) into place: a reader or a crash sees the old file or
  the new one, never half of one;
* folders (:func:`ensure_private_dir`): created 0700; an existing one must be ours and not
  writable by group or others (anyone who can write to the folder can rename our files away and
  put their own in place). Readable is allowed: the files in it are not.

A failed check raises :class:`~voice.errors.InsecureKeyFile`, whose message says what to run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from voice.errors import InsecureKeyFile

__all__ = [
    "check_private_dir",
    "check_secret_file_mode",
    "create_private_file",
    "ensure_private_dir",
    "locked",
    "read_secret_file",
    "replace_private_file",
    "write_new_file",
]


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def check_secret_file_mode(path: Path, st: os.stat_result) -> None:
    """Refuse a secret file that group/others can access, that is not ours, or not a file."""
    if not stat.S_ISREG(st.st_mode):
        raise InsecureKeyFile(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise InsecureKeyFile(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can access it. "
            f"Run 'chmod 600 {path}' if you are sure nobody copied it."
        )
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        raise InsecureKeyFile(
            f"{path} belongs to another user (uid {st.st_uid}, you are uid {uid}): it was not "
            "written by voice as you. Find out who put it there, then remove it."
        )


def check_private_dir(path: Path) -> None:
    """Refuse a folder for private files that is not ours or that group/others can write to."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureKeyFile(f"{path} is not a directory")
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        raise InsecureKeyFile(
            f"{path} belongs to another user (uid {st.st_uid}, you are uid {uid}): keep your "
            "voice files in a directory of your own (--config-dir DIR)."
        )
    if st.st_mode & 0o022:
        raise InsecureKeyFile(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can write to it, "
            f"so they can replace the files in it. Check its contents, then run "
            f"'chmod 700 {path}'."
        )


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) with mode 0700 if missing, then check it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_dir(path)


def read_secret_file(path: Path) -> bytes:
    """Read a private file after checking (on the open descriptor) that only we can access it,
    and that its folder is ours and closed to writers other than us.

    FileNotFoundError if it does not exist (its folder is not checked then).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InsecureKeyFile(f"{path} is a symbolic link") from exc
        raise
    try:
        check_secret_file_mode(path, os.fstat(fd))
        check_private_dir(path.parent)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes, *, remove_on_error: bool = False) -> None:
    """Write ``data`` to a new 0600 file (O_EXCL, O_NOFOLLOW), fsync'ed.

    ``remove_on_error``: if writing fails, remove the partial file (it is ours: O_EXCL made it).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        if remove_on_error:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    finally:
        os.close(fd)


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(8).hex()}.tmp")


def create_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``; FileExistsError if it already exists.

    The data goes to a temporary file that is hard-linked into place (atomic, and refuses an
    existing name), so nobody ever sees a half-written file. The folder is not checked: callers
    that keep private files there use :func:`ensure_private_dir` first.
    """
    tmp = _temporary_name(path)
    try:
        write_new_file(tmp, data)
        os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _sync_dir(path.parent)


def replace_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a new 0600 file, fsync'ed, renamed over it,
    the folder fsync'ed, so a crash leaves the old or the new content, never a torn file.

    The folder is created 0700 if missing and must pass :func:`check_private_dir`.
    """
    ensure_private_dir(path.parent)
    tmp = _temporary_name(path)
    try:
        write_new_file(tmp, data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (through ``PATH.lock``, 0600, never through a symlink)
    while the block runs: exclusive, or shared among readers-appenders. Several processes (a
    ``voice listen`` and a ``voice call``) coordinate their writes to one private file with it."""
    ensure_private_dir(path.parent)
    lock = path.with_name(path.name + ".lock")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock, flags, 0o600)
    except OSError as exc:
        raise InsecureKeyFile(f"cannot open the lock file {lock}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
