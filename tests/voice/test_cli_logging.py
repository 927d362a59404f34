"""voice.cli's logging: without -v a warning is one sentence and never a traceback."""

from __future__ import annotations

import subprocess
import sys

SNIPPET = """
import logging, sys
from voice.cli import _configure_logging
_configure_logging(int(sys.argv[1]))
try:
    raise RuntimeError("deep detail")
except RuntimeError:
    logging.getLogger("voice.phone").warning("no relay offered", exc_info=True)
logging.getLogger("voice.phone").info("chatter")
"""


def run(verbosity: int) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(verbosity)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stderr


def test_a_warning_is_one_sentence_without_a_traceback() -> None:
    assert run(0) == "voice: warning: no relay offered\n"


def test_with_v_the_details_and_the_traceback_come_back() -> None:
    err = run(1)
    assert "WARNING voice.phone: no relay offered" in err
    assert "Traceback" in err and "deep detail" in err
    assert "INFO voice.phone: chatter" in err
