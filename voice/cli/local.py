"""The contact and device subcommands: ``contacts``, ``trust``, ``devices``.

Only ``trust`` of someone not yet a contact goes to the server (for the key to check against the
fingerprint). ``voice id`` lives in :mod:`voice.cli.identity`.
"""

from __future__ import annotations

import asyncio

from voice.cli.context import Settings, check_username
from voice.crypto.contacts import Contact, ContactBook, TrustState
from voice.crypto.contactstore import KeySource
from voice.crypto.identity import Fingerprint, fingerprint_of
from voice.errors import SignalingUnreachable, UnknownFingerprint, UsageError
from voice.exitcodes import ExitCode


def _describe(contact: Contact) -> list[str]:
    lines = [f"{contact.user:<16} {contact.state.value:<10} {contact.fingerprint.human}"]
    if contact.state is TrustState.CHANGED and contact.pending_fingerprint is not None:
        source = contact.pending_source.description if contact.pending_source else "the server"
        lines.append(f"{'':<16} {'other key':<10} {contact.pending_fingerprint.human}")
        lines.append(
            f"{'':<16} from {source}: only the server vouches that it is {contact.user}'s. "
            "The pinned key still works."
        )
        lines.append(
            f"{'':<16} only if {contact.user} confirms this fingerprint in person or over "
            f"another channel: voice trust {contact.user} {contact.pending_fingerprint.machine}"
        )
    return lines


def cmd_contacts(settings: Settings) -> ExitCode:
    """List pinned contacts of every server: unverified (pinned on first use), verified, or
    changed (another key was presented)."""
    servers = settings.contacts().by_server()
    if not servers:
        print(
            "No contacts yet: a contact is pinned the first time you call each other, or "
            "by 'voice trust USER FINGERPRINT' with the fingerprint USER gave you.",
            file=(settings.out),
        )
        return ExitCode.OK
    for server, contacts in servers.items():
        print(f"On {server or 'no named server'}:", file=settings.out)
        print(f"{'USER':<16} {'STATE':<10} FINGERPRINT", file=settings.out)
        for contact in contacts:
            for line in _describe(contact):
                print(line, file=settings.out)
    return ExitCode.OK


def cmd_trust(settings: Settings, user: str, fingerprint: str) -> ExitCode:
    """Pin ``user``'s key as verified, after the user checked ``fingerprint`` out of band.

    Works for a changed contact (accepts the new key) and for an unverified one.
    """
    check_username(user)
    try:
        Fingerprint.parse(fingerprint)
    except ValueError as exc:
        raise UsageError(f"{fingerprint!r} is not a fingerprint: {exc}") from None
    book = settings.contacts()
    if book.get(user) is None:  # not on --server: the one server where user is a contact
        servers = book.servers_with(user)
        if len(servers) > 1:
            raise UsageError(f"{user} is a contact on several servers: pass --server URL")
        if servers:
            book = ContactBook(book.path, server=servers[0])
    if book.get(user) is None and not book.servers_with(user):
        contact = asyncio.run(_trust_new(settings, book, user, fingerprint))
    else:
        contact = book.trust(user, fingerprint)
    print(f"{user} is now verified: {contact.fingerprint.human}", file=settings.out)
    return ExitCode.OK


async def _trust_new(settings: Settings, book: ContactBook, user: str, fingerprint: str) -> Contact:
    """Make ``user`` a verified contact from the fingerprint the user was given: the server
    is asked for ``user``'s key, and it is pinned only if it has that fingerprint (so a server
    that names another key pins nothing). Then ``user`` may invite us to group calls, and our
    calls with ``user`` start verified."""
    from voice.cli.login import login_client  # the network: only for a new contact

    client = await login_client(settings)
    try:
        key = await client.lookup(user)
    except TimeoutError:
        raise SignalingUnreachable("the server did not answer the key lookup") from None
    finally:
        await client.close()
    if fingerprint_of(key) != Fingerprint.parse(fingerprint):
        raise UnknownFingerprint(
            f"the server names a key for {user} whose fingerprint is {fingerprint_of(key).human},"
            f" not the one you were given: nothing was pinned (a mistyped fingerprint, or "
            f"someone in the middle)"
        )
    book.check(user, key, source=KeySource.LOOKUP)
    return book.trust(user, fingerprint)


def cmd_devices(settings: Settings) -> ExitCode:
    """List the audio devices PortAudio sees, for --input and --output (by index or name)."""
    from voice.audio.devices import list_devices  # loads PortAudio: only when asked

    devices = list_devices()
    if not devices:
        print(
            "PortAudio sees no audio devices (start PulseAudio: scripts/pulse.sh).",
            file=(settings.err),
        )
        return ExitCode.NO_AUDIO_DEVICE
    print(f"{'INDEX':>5}  {'IN':>3} {'OUT':>3}  {'RATE':>6}  NAME", file=settings.out)
    for d in devices:
        print(
            f"{d.index:>5}  {d.max_input_channels:>3} {d.max_output_channels:>3}  "
            f"{d.default_sample_rate:>6.0f}  {d.name}",
            file=settings.out,
        )
    return ExitCode.OK
