"""The replay memory on disk, so that a restart does not reopen the replay window.

A ``ReplayGuard`` refuses an envelope it has seen; after a restart it has seen nothing, and for
``max_age`` (60 s) a replayed offer would pass the age check and ring the phone (it could never
connect: the replayer lacks the caller's ephemeral key). The journal keeps (sender key, call id,
expiry) of recent calls in a small JSON file, 0600, rewritten atomically when a new call id is
seen (a few times per call, never per media packet). A missing, unreadable or malformed journal
is treated as empty: it only narrows a window that the age check already bounds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
from pathlib import Path

from voice.crypto.identity import write_new_file

log = logging.getLogger(__name__)

Entry = tuple[bytes, bytes, float]


def load_journal(path: Path) -> list[Entry]:
    """The entries in ``path`` (expired ones included; the guard skips them)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return [
            (
                base64.b64decode(sender, validate=True),
                base64.b64decode(call, validate=True),
                float(t),
            )
            for sender, call, t in raw["calls"]
        ]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring an unreadable replay journal %s: %s", path, type(exc).__name__)
        return []


def save_journal(path: Path, entries: list[Entry]) -> None:
    """Write ``entries`` to ``path`` atomically with mode 0600 (a fresh O_EXCL temporary file,
    fsync'ed, then renamed: never through a file or symlink already there)."""
    data = {
        "calls": [
            [base64.b64encode(sender).decode(), base64.b64encode(call).decode(), expires]
            for sender, call, expires in entries
        ]
    }
    text = json.dumps(data, separators=(",", ":")).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        write_new_file(tmp, text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
