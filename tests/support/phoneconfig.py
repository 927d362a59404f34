"""PhoneConfig from one flat set of keyword arguments, as the test helpers take them."""

from __future__ import annotations

import dataclasses
from typing import Any

from voice.phone import PhoneConfig, TestHooks

_HOOKS = frozenset(f.name for f in dataclasses.fields(TestHooks))


def phone_config(**fields: Any) -> PhoneConfig:
    """The TestHooks fields (clock, loss, key_observer, ...) go into ``hooks``; the rest stay."""
    hooks = {name: fields.pop(name) for name in list(fields) if name in _HOOKS}
    return PhoneConfig(**fields, hooks=TestHooks(**hooks))
