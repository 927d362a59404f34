"""What ``voice call``, ``voice listen`` and the call screen share to log in: the phone's
configuration from the settings and options, and what is saved once a login worked."""

from __future__ import annotations

import contextlib
from typing import Any

from voice.cli.context import Settings
from voice.cli.options import CallOptions
from voice.crypto.contacts import ContactBook
from voice.net.client import SignalingClient
from voice.phone import Phone, PhoneConfig
from voice.phone.history import CallLog

__all__ = ["login_client", "phone_config", "remember_login"]


def phone_config(settings: Settings, options: CallOptions, contacts: ContactBook) -> PhoneConfig:
    """The phone of ``settings.user`` on ``settings.server``: the server pinned for this
    address (name or id), the replay journal and the call log in the config directory, the
    relay policy and the no-answer timeout of the options."""
    pin = settings.server_pins().get(settings.server)
    extra: dict[str, Any] = {}
    if options.timeout is not None:
        extra["no_answer_timeout"] = options.timeout
    return PhoneConfig(
        server_url=settings.server,
        fallback_urls=settings.fallback_servers,
        user=settings.require_user(),
        identity=settings.identity(),
        contacts=contacts,
        replay_journal=settings.replay_journal_path,
        call_log=CallLog(settings.call_log_path, server=settings.server),
        expected_server=pin.name if pin is not None and pin.server_id is None else None,
        expected_server_id=pin.server_id if pin is not None else None,
        ca_file=settings.ca_file,
        insecure=settings.insecure,
        relay=options.relay,
        **extra,
    )


def remember_login(settings: Settings, phone: Phone) -> str | None:
    """Pin the server that answered and remember the username; a warning to show if the
    config directory could not be written (the phone stays logged in)."""
    try:
        settings.server_pins().pin(settings.server, phone.server_name, phone.server_id)
        settings.remember_user(phone.user)
    except OSError as exc:  # a read-only or full config directory
        return f"could not save to {settings.config_dir}: {exc}"
    return None


async def login_client(settings: Settings) -> SignalingClient:
    """A plain signaling session (no phone: group calls, ``voice trust`` of a new contact)
    with the pins, CAs and keepalive a phone's login has; the server is pinned on success."""
    pin = settings.server_pins().get(settings.server)
    identity = settings.identity()
    client = await SignalingClient.connect(
        settings.server,
        settings.require_user(),
        identity.public_key,
        identity.sign,
        expected_server=pin.name if pin is not None and pin.server_id is None else None,
        expected_server_id=pin.server_id if pin is not None else None,
        ca_file=settings.ca_file,
        insecure=settings.insecure,
    )
    with contextlib.suppress(OSError):  # the login stands; the pin is saved next time
        settings.server_pins().pin(settings.server, client.server, client.server_id)
        settings.remember_user(client.user)
    return client
