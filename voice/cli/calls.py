"""``voice call USER`` (one call per run), and the :class:`Session` that follows a call, for it
and for ``voice listen`` (:mod:`voice.cli.listen`), through the call controller.

A session logs in, hands the controller the audio prepared up front, and then follows the call:
ringing, the SAS once connected (with a prompt to mark the contact verified), continuity
warnings, and the end reason, which becomes the exit code (:mod:`voice.exitcodes`). Ctrl-C
hangs up cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from voice.call.events import EndReason, FailReason, Role
from voice.cli.audio import AudioPlan
from voice.cli.context import Settings, check_username
from voice.cli.login import phone_config, remember_login
from voice.cli.options import CallOptions
from voice.cli.summary import audio_summary, end_text
from voice.cli.ui import Interrupt, LineReader, ask_yes_no, sas_lines, say
from voice.crypto.contacts import Contact, TrustState
from voice.crypto.continuity import ContinuityResult
from voice.crypto.identity import Fingerprint
from voice.errors import CallEnded, KeyChangedError, RecipientOffline, UnknownUser
from voice.exitcodes import ExitCode, for_reason
from voice.phone import Call, Phone

T = TypeVar("T")


async def race(main: Awaitable[T], *stoppers: asyncio.Event) -> T | None:
    """``main``'s result, or None (``main`` cancelled) as soon as one of ``stoppers`` is set."""
    task = asyncio.ensure_future(main)
    waits = [asyncio.ensure_future(e.wait()) for e in stoppers]
    try:
        await asyncio.wait([task, *waits], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled ourselves: never leave ``main`` running unattended
        task.cancel()
        raise
    finally:
        for w in waits:
            w.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


class Session:
    """One logged-in phone and the terminal it talks to."""

    def __init__(self, settings: Settings, options: CallOptions) -> None:
        self.settings = settings
        self.options = options
        self.out = settings.out
        self.interrupt = Interrupt()
        self.lines = LineReader()
        self.contacts = settings.contacts()
        self.phone: Phone | None = None
        self._rang = False

    def say(self, text: str) -> None:
        say(self.out, text)

    async def open(self) -> tuple[Phone, AudioPlan]:
        config = phone_config(self.settings, self.options, self.contacts)
        plan = await AudioPlan.prepare(self.options.audio)
        try:
            phone = await Phone.connect(config, audio=plan)
        except BaseException:
            await plan.close()
            raise
        self.phone = phone
        try:
            warning = remember_login(self.settings, phone)
        except BaseException:
            self.phone = None
            await phone.close()
            await plan.close()
            raise
        if warning is not None:
            self.say(f"WARNING: {warning}")
        user = phone.user
        self.say(f"Logged in to {self.settings.server} as {user} ({plan.choice.describe()}).")
        return phone, plan

    # -- the call itself ------------------------------------------------------------------
    async def follow(self, call: Call) -> ExitCode:
        """From placing/accepting to the end: ringing, SAS, prompts, hang-up, exit code."""
        watchers = [
            asyncio.ensure_future(self._show_progress(call)),
            asyncio.ensure_future(self._show_notices(call)),
        ]
        if self.phone is not None:
            watchers.append(asyncio.ensure_future(self._show_signaling_lost(self.phone, call)))
        try:
            return await self._follow(call)
        finally:
            for watcher in watchers:
                watcher.cancel()

    async def _follow(self, call: Call) -> ExitCode:
        try:
            connected = await race(_connected(call), self.interrupt.event)
        except CallEnded:
            return await self.ended(call)
        if connected is None and self.interrupt.event.is_set():
            await call.hangup()
            return await self.ended(call)
        self._show_connected(call)
        prompt = asyncio.ensure_future(self._confirm_sas(call))
        stop = asyncio.Event()
        timer = None
        if self.options.duration is not None:
            timer = asyncio.get_running_loop().call_later(self.options.duration, stop.set)
        try:
            ended = await race(call.wait_ended(), self.interrupt.event, stop)
            if ended is None:
                self.say("Hanging up.")
                await call.hangup()
        finally:
            if timer is not None:
                timer.cancel()
            prompt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prompt
        return await self.ended(call)

    async def _show_progress(self, call: Call) -> None:
        while True:
            self._show_ringing(call)
            await asyncio.sleep(0.02)

    async def _show_notices(self, call: Call) -> None:
        """Reconnecting / reconnected, as the call's media watch reports them."""
        while True:
            notice = await call.next_notice()
            if notice == "reconnecting":
                self.say(f"Reconnecting: no audio from {call.peer} for a moment...")
            else:
                self.say(f"Reconnected to {call.peer}.{self._path_text(call)}")

    @staticmethod
    def _path_text(call: Call) -> str:
        stats = call.media_stats()
        path = stats.path if stats is not None else None
        return f" Media path: {path}." if path else ""

    async def _show_signaling_lost(self, phone: Phone, call: Call) -> None:
        """Once: the server is gone. A connected call goes on; say what that means."""
        await phone.wait_signaling_lost()
        await asyncio.sleep(0.1)  # let the call take the news first (setup fails, media stays)
        if not call.state.terminal:
            self.say(
                "WARNING: lost the connection to the signaling server. The call goes on "
                f"peer to peer; when you hang up, {call.peer} only notices when the audio stops."
            )

    def _show_ringing(self, call: Call) -> None:
        """Once: the callee's phone rings (timings.ringing_at stays set, so it is never missed)."""
        if call.role is Role.CALLER and call.timings.ringing_at is not None and not self._rang:
            self._rang = True
            self.say(f"Ringing {call.peer}...")

    def _show_connected(self, call: Call) -> None:
        self._show_ringing(call)
        self.say(f"Connected to {call.peer}: audio is end-to-end encrypted (SRTP, AES-256-GCM).")
        stats = call.media_stats()
        if stats is not None and stats.path:
            self.say(f"Media path: {stats.path}")
        if call.sas is not None:
            for line in sas_lines(call.sas, call.peer):
                self.say(line)
        warning = call.continuity_warning
        if warning:
            self.say(f"WARNING: {warning}")
        elif self._verified(call):
            self.say(verified_line(call.peer, self.contacts.get(call.peer), call.continuity))
        self.say("Ctrl-C hangs up.")

    def _verified(self, call: Call) -> bool:
        """A contact the user verified (SAS or fingerprint), calling under that key, whose
        continuity check found nothing wrong: no need to compare the words again (as Signal
        does not ask again after a verified safety number). A continuity MISMATCH asks again."""
        contact = self.contacts.get(call.peer)
        return (
            contact is not None
            and contact.state is TrustState.VERIFIED
            and call.continuity is not ContinuityResult.MISMATCH
        )

    async def _confirm_sas(self, call: Call) -> None:
        """Verification follows a shown SAS, always: only the user's answer to this question,
        asked after the SAS is on screen, marks the contact verified."""
        if not self.options.prompt or self._verified(call):
            return
        if await ask_yes_no(self.out, f"Does {call.peer} read the same words?", self.lines):
            call.mark_verified()
            self.say(f"{call.peer} marked verified.")
        else:
            self.say(f"{call.peer} stays unverified. If the words differ, hang up: someone is in "
                     "the middle.")  # fmt: skip

    async def ended(self, call: Call) -> ExitCode:
        """Once ``call`` ended: say why, and return the exit code for it."""
        outcome = await call.wait_ended()
        reason: EndReason | FailReason = outcome.reason
        text = end_text(reason, call.peer)
        detail = getattr(outcome, "detail", None)
        self.say(f"Call ended: {text}" + (f" ({detail})" if detail else "") + ".")
        stats = call.media_stats()
        summary = audio_summary(stats) if stats is not None else None
        if summary:
            self.say(summary)
        code = for_reason(reason)
        if reason is FailReason.KEY_CHANGED:
            self.explain_key_change(call.peer, None, None)
        return code

    def explain_key_change(
        self, peer: str, old: str | None, new: str | None, source: str | None = None
    ) -> None:
        """Both fingerprints, where the other one came from, and what to check before the
        ``voice trust`` command (on stderr)."""
        contact = self.settings.contacts().get(peer)
        if contact is not None:
            old = old or contact.fingerprint.human
            if contact.pending_fingerprint is not None:
                new = new or contact.pending_fingerprint.human
            if source is None and contact.pending_source is not None:
                source = contact.pending_source.description
        source = source or "the server"
        err = self.settings.err
        say(err, f"voice: another identity key was presented for {peer}.")
        say(err, f"  pinned: {old or '?'} (still works: calls under it go through)")
        say(err, f"  other:  {new or '?'} (from {source}; only the server vouches for it)")
        say(err, "This is what a man-in-the-middle looks like (or a reinstall).")
        if new:
            say(err, f"Only if {peer} confirms this other fingerprint in person or over another")
            say(err, f"channel: voice trust {peer} {Fingerprint.parse(new).machine}")


async def call(settings: Settings, peer: str, options: CallOptions) -> ExitCode:
    check_username(peer)
    session = Session(settings, options)
    session.interrupt.install()
    try:
        phone, plan = await session.open()
        try:
            session.say(f"Calling {peer}...")
            try:
                placed = await phone.call(peer)
            except KeyChangedError as exc:
                session.explain_key_change(
                    peer, exc.old_fingerprint, exc.new_fingerprint, exc.source
                )
                return ExitCode.KEY_CHANGED
            except RecipientOffline:
                say(settings.err, f"voice: {peer} is offline (registered, not connected now).")
                return ExitCode.USER_OFFLINE
            except UnknownUser:
                say(settings.err, f"voice: there is no user {peer} on {settings.server}.")
                return ExitCode.UNKNOWN_USER
            return await session.follow(placed)
        finally:
            await phone.close()
            await plan.close()
    finally:
        session.interrupt.remove()


async def _connected(call: Call) -> bool:
    await call.wait_connected()
    return True


def verified_line(peer: str, contact: Contact | None, continuity: ContinuityResult | None) -> str:
    """What a call with a verified contact says instead of asking to compare the words (shown
    once connected: the contact book already counts this call)."""
    earlier = max(0, contact.connected_calls - 1) if contact is not None else 0
    line = f"{peer} is verified: the same identity key as in your {earlier} earlier call"
    line += "" if earlier == 1 else "s"
    if continuity is ContinuityResult.MATCH:
        line += ", and this call's keys continue a secret kept from them"
    return line + ". No need to compare the words again."
