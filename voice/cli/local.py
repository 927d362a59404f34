"""The subcommands that need no server: ``id``, ``contacts``, ``trust``, ``devices``."""

from __future__ import annotations

from voice.cli.context import Settings, check_username
from voice.crypto.contacts import Contact, TrustState
from voice.crypto.identity import Fingerprint
from voice.errors import UsageError
from voice.exitcodes import ExitCode


def cmd_id(settings: Settings) -> ExitCode:
    """Create the identity on first use, then show it (the same on every later run)."""
    existed = settings.identity_path.exists()
    identity = settings.identity()
    out = settings.out
    if not existed:
        print(f"Created a new identity key: {settings.identity_path} (mode 0600)", file=out)
    else:
        print(f"Identity key: {settings.identity_path}", file=out)
    if settings.user is not None:
        print(f"User:         {settings.user}", file=out)
    print(f"Fingerprint:  {identity.fingerprint.human}", file=out)
    print(f"              {identity.fingerprint.machine}", file=out)
    print(
        "Give your contacts this fingerprint (in person or over a channel you trust); "
        "they check it with `voice trust`.",
        file=out,
    )
    return ExitCode.OK


def _describe(contact: Contact) -> list[str]:
    lines = [f"{contact.user:<16} {contact.state.value:<10} {contact.fingerprint.human}"]
    if contact.state is TrustState.CHANGED and contact.pending_fingerprint is not None:
        lines.append(f"{'':<16} {'new key':<10} {contact.pending_fingerprint.human}")
        lines.append(
            f"{'':<16} check the new fingerprint with {contact.user}, then run: "
            f"voice trust {contact.user} {contact.pending_fingerprint.machine}"
        )
    return lines


def cmd_contacts(settings: Settings) -> ExitCode:
    """List pinned contacts: unverified (pinned on first use), verified, or changed."""
    contacts = settings.contacts().all()
    if not contacts:
        print(
            "No contacts yet: a contact is pinned the first time you call each other.",
            file=(settings.out),
        )
        return ExitCode.OK
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
    contact = settings.contacts().trust(user, fingerprint)
    print(f"{user} is now verified: {contact.fingerprint.human}", file=settings.out)
    return ExitCode.OK


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
