"""``voice listen``: a phone that stays online and answers call after call, reconnecting to the
server by itself; each call is followed by :class:`voice.cli.calls.Session`, as in ``voice call``.

Meanwhile it says when the link drops and comes back, reports missed calls, and shows a
refused call's key-changed warning without ending. Ctrl-C stops it, ``--timeout`` too.
"""

from __future__ import annotations

import asyncio
import contextlib

from voice.cli.calls import Session, race
from voice.cli.context import Settings
from voice.cli.options import CallOptions
from voice.cli.ui import ask_yes_no
from voice.crypto.contacts import Contact, TrustState
from voice.errors import CallEnded, PhoneClosed
from voice.exitcodes import ExitCode
from voice.phone import Call, KeyChangedWarning, Phone


async def listen(settings: Settings, options: CallOptions) -> ExitCode:
    """A phone that stays online: answers call after call, reconnects to the server by itself
    and says so, reports missed calls. Ends on Ctrl-C, after ``--timeout`` seconds (once the
    call in progress, if any, ended), or on a fatal error (the server refused our login, ...).

    Exit code: that of the last call that rang here; with none, OK on Ctrl-C and NO_ANSWER
    after ``--timeout``.
    """
    session = Session(settings, options)
    session.interrupt.install()
    try:
        phone, plan = await session.open()
        watchers = [
            asyncio.ensure_future(_show_link_changes(session, phone)),
            asyncio.ensure_future(_show_missed(session, phone)),
        ]
        try:
            return await _listen_loop(session, phone)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await phone.close()
            await plan.close()
    finally:
        session.interrupt.remove()


async def _listen_loop(session: Session, phone: Phone) -> ExitCode:
    options = session.options
    mode = "answering automatically" if options.auto_answer else "you will be asked"
    session.say(f"Waiting for a call ({mode}; Ctrl-C stops).")
    time_up = asyncio.Event()
    timer = None
    if options.timeout is not None:
        timer = asyncio.get_running_loop().call_later(options.timeout, time_up.set)
    last: ExitCode | None = None
    try:
        while not session.interrupt.event.is_set() and not time_up.is_set():
            got = await race(_incoming_or_warning(phone), session.interrupt.event, time_up)
            if got is None:
                break
            incoming: Call | None = None
            for item in got:
                if isinstance(item, KeyChangedWarning):
                    # A warning never ends listen: anyone can send one (audit finding 3).
                    session.say(f"Refused a call from {item.user}: another identity key.")
                    session.explain_key_change(
                        item.user, item.old_fingerprint, item.new_fingerprint
                    )
                else:
                    incoming = item
            if incoming is None:
                session.say("Still waiting for a call.")
                continue
            last = await _take(session, incoming)
            if not session.interrupt.event.is_set() and not time_up.is_set():
                session.say("Waiting for the next call.")
    finally:
        if timer is not None:
            timer.cancel()
    if last is not None:
        return last
    if time_up.is_set() and not session.interrupt.event.is_set():
        session.say("No call came.")
        return ExitCode.NO_ANSWER
    return ExitCode.OK


async def _take(session: Session, incoming: Call) -> ExitCode:
    """One incoming call, from ringing to its end: answered (automatically or at the
    prompt), declined, or given up by the caller."""
    session.say(
        f"Incoming call from {incoming.peer} ({caller_trust(session.contacts.get(incoming.peer))})."
    )
    if session.options.auto_answer:
        try:
            await incoming.accept()
        except CallEnded:
            return await session.ended(incoming)
    elif not await _answer(session, incoming):
        return await session.ended(incoming)
    return await session.follow(incoming)


def caller_trust(contact: Contact | None) -> str:
    """Who is calling, as far as the contact book knows: said before the user answers (a call
    whose key differs from the pinned one never rings: it is refused with a warning)."""
    if contact is None or (contact.connected_calls == 0 and not contact.solicited):
        return "new: not a contact you verified or called"
    earlier = contact.connected_calls
    calls = f"{earlier} earlier call{'' if earlier == 1 else 's'} with this key"
    if contact.state is TrustState.CHANGED:  # ringing under the pinned key, but another was shown
        return f"another key was also presented under this name: see 'voice contacts'; {calls}"
    if contact.state is TrustState.VERIFIED:
        return f"verified contact; {calls}"
    return f"unverified contact; {calls}"


_MISSED_TEXT = {
    "cancelled": "cancelled",
    "no_answer": "no answer",
    "busy": "you were in another call; they heard busy",
    "signaling_lost": "the connection to the server dropped while it rang",
}


async def _show_missed(session: Session, phone: Phone) -> None:
    while True:
        missed = await phone.next_missed()
        text = _MISSED_TEXT.get(missed.reason, missed.reason)
        session.say(f"Missed call from {missed.peer} ({text}).")


async def _show_link_changes(session: Session, phone: Phone) -> None:
    """The phone reconnects by itself; say when it is offline and when it is back."""
    while True:
        change = await phone.next_link_change()
        if change.online:
            session.say("online again")
        else:
            session.say(f"offline: {change.reason}, reconnecting")


async def _answer(session: Session, incoming: Call) -> bool:
    """Ask whether to accept; True if accepted. The caller may give up meanwhile."""
    session.lines.discard_typed_ahead()
    question = ask_yes_no(session.out, f"Accept the call from {incoming.peer}?", session.lines)
    ended = asyncio.Event()
    watcher = asyncio.ensure_future(_set_when_ended(incoming, ended))
    try:
        answer = await race(question, ended, session.interrupt.event)
    finally:
        watcher.cancel()
    try:
        if answer is None:
            if not ended.is_set():
                await incoming.decline()
            return False
        if answer:
            await incoming.accept()
            return True
        await incoming.decline()
    except CallEnded:  # the caller gave up just as the user answered: a missed call, no error
        pass
    return False


async def _incoming_or_warning(phone: Phone) -> list[Call | KeyChangedWarning]:
    """The next ringing call, or warnings that a contact with a changed key tried to call (both
    when both came at once: none is lost). Raises the reason the phone was lost for good."""
    calls = asyncio.ensure_future(phone.incoming())
    warnings = asyncio.ensure_future(phone.next_warning())
    try:
        await asyncio.wait([calls, warnings], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (calls, warnings):
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(calls, warnings, return_exceptions=True)
    got: list[Call | KeyChangedWarning] = []
    if not warnings.cancelled():
        got.append(warnings.result())
    if not calls.cancelled():
        if isinstance(calls.exception(), PhoneClosed) and phone.signaling_lost is not None:
            raise phone.signaling_lost  # fatal: the login refused, another server, replaced
        got.append(calls.result())
    return got


async def _set_when_ended(call: Call, event: asyncio.Event) -> None:
    await call.wait_ended()
    event.set()
