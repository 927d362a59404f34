"""The controller's pure helpers: TURN URIs from the server, and config checks."""

from __future__ import annotations

import pytest

from voice.call.events import EndReason, FailReason
from voice.crypto.identity import Identity
from voice.phone import Outcome, PhoneConfig


def test_config_checks() -> None:
    identity = Identity.generate()
    base = {"server_url": "ws://x", "user": "alice", "identity": identity, "contacts": None}
    bad_configs: list[dict[str, object]] = [
        {"no_answer_timeout": 0},
        {"relay": "sometimes"},
        {"media_timeout": -1},
        {"sas_bits": 19},  # a man in the middle could grind a matching SAS (~2^19 tries)
        {"sas_bits": 65},
    ]
    for bad in bad_configs:
        with pytest.raises(ValueError):
            PhoneConfig(**base, **bad)  # type: ignore[arg-type]
    assert PhoneConfig(**base, sas_bits=20).sas_bits == 20  # type: ignore[arg-type]
    default = PhoneConfig(**base)  # type: ignore[arg-type]
    assert default.relay == "auto" and default.host_addresses is None


def test_an_outcome_says_whether_the_call_failed_and_why() -> None:
    assert not Outcome(EndReason.BUSY).failed and str(Outcome(EndReason.BUSY)) == "busy"
    failed = Outcome(FailReason.REMOTE_ERROR, "bad_key")
    assert failed.failed and str(failed) == "remote_error (bad_key)"
