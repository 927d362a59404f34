"""``voice group``: a group call from the command line, in lines of text.

``voice group start --sfu URL --invite bob --invite carol`` opens a group on that Janus and
invites contacts; ``voice group join`` waits for an invite and asks (or, with ``--auto-accept``,
joins at once). While the call lasts, typed commands act on it: ``invite USER``, ``remove USER``
(the creator), ``members``, ``code``, ``leave`` (a member; for the creator it ends the call for
everyone). Ctrl-C leaves too; the end of input does not (a script's member runs with --duration).

Every membership change is printed with the new group security code. Everyone in the call sees
the same code if and only if nobody is in the middle; it changes whenever someone joins or leaves,
and the screen says so each time (docs/group-calls.md). Nothing here prints keys or audio.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TextIO

from voice.audio.base import AudioSink, AudioSource
from voice.cli.calls import race
from voice.cli.context import Settings
from voice.cli.groupopts import COMMANDS, GroupOptions
from voice.cli.login import login_client
from voice.cli.ui import Interrupt, LineReader, ask_yes_no, say
from voice.crypto.sas import Sas
from voice.errors import (
    KeyChangedError,
    RecipientOffline,
    SignalingClientError,
    UnknownUser,
)
from voice.exitcodes import ExitCode
from voice.group import messages as gm
from voice.group.janus import JanusError
from voice.group.roster import CreatorState, MemberState
from voice.group.session import GroupCall
from voice.net.client import SignalingClient

__all__ = ["cmd_group"]


def code_line(call: GroupCall) -> str:
    """The group code as every member shows it, or why there is none yet."""
    code: Sas | None = call.code
    if call.code_failure is not None:
        return f"Group security code: FAILED ({call.code_failure}): do not trust this call"
    round_ = call.keys.round
    if code is None or round_ is None or round_.epoch != call.epoch:  # the next one is coming
        return "Group security code: (waiting for every member's keys)"
    return f"Group security code (epoch {call.epoch}): {' '.join(code.words).upper()}   " + (
        " ".join(code.emoji)
    )


def members_line(call: GroupCall) -> str:
    names = [m.user + (" (creator)" if m.index == 0 else "") for m in call.members]
    return f"Members ({len(names)}): {', '.join(names)}"


class GroupScreen:
    """Follows one group call in lines: members, code, and the typed commands."""

    def __init__(self, settings: Settings, call: GroupCall, lines: LineReader) -> None:
        self.settings = settings
        self.call = call
        self.lines = lines
        self._members: tuple[gm.Member, ...] = ()
        self._code: str | None = None
        self._heard: set[str] = set()
        self._frames: dict[str, int] = {}
        self._told_lost = False

    def say(self, text: str) -> None:
        say(self.settings.out, text)

    def show_changes(self) -> None:
        """Print who joined or left and the code, each time they change."""
        call = self.call
        if call.members != self._members:
            old = {m.user for m in self._members}
            new = {m.user for m in call.members}
            if self._members:
                for user in sorted(new - old):
                    self.say(f"{user} joined.")
                for user in sorted(old - new):
                    self.say(f"{user} left.")
            self._members = call.members
            self.say(members_line(call))
        members = {m.user for m in call.members}
        for user, frames in call.hearing.frames.items():  # decoded frames from each member
            if frames > self._frames.get(user, 0) and user in members and user not in self._heard:
                self._heard.add(user)
                self.say(f"Hearing {user}.")
            self._frames[user] = frames
        self._heard &= members  # one who left and comes back is announced again
        if call.signaling_lost and not self._told_lost:
            self._told_lost = True
            self.say("Lost the signaling server: the call goes on, but nobody can join or leave "
                     "it now.")  # fmt: skip
        line = code_line(call)
        shown = call.code_failure is not None or "(epoch" in line
        if line != self._code and shown:
            changed = self._code is not None
            self._code = line
            self.say(line)
            if changed:
                self.say("The code changed because the members changed: compare it again.")
            else:
                self.say("Compare it with everyone (read it aloud): if all see the same, nobody is "
                         "in the middle.")  # fmt: skip

    async def follow(self) -> None:
        """Until the call ends: print changes as they come."""
        while not self.call.ended.is_set():
            self.show_changes()
            self.call.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.call.changed.wait(), 0.2)
        self.show_changes()

    async def commands(self) -> None:
        """Typed commands until ``leave``. The end of input is not a leave: a script's member
        (stdin from /dev/null) stays until --duration, Ctrl-C or the call's end."""
        while True:
            line = await self.lines.readline()
            if line is None:
                await asyncio.Event().wait()  # never set: until the call ends otherwise
                continue
            word, _, arg = line.strip().partition(" ")
            arg = arg.strip()
            if word in ("leave", "end", "quit", "q"):
                return
            if word == "members":
                self.say(members_line(self.call))
            elif word == "code":
                self.say(code_line(self.call))
            elif word in ("invite", "remove"):
                await self._admin(word, arg)
            elif word:
                self.say(COMMANDS)

    async def _admin(self, word: str, user: str) -> None:
        if not isinstance(self.call.state, CreatorState):
            self.say(f"Only the creator may {word} members.")
            return
        if not gm.USERNAME.fullmatch(user):
            self.say(f"{word} whom? ({COMMANDS})")
            return
        if word == "remove":
            await self.call.remove(user)
            return
        await invite(self.call, user, self.say)


async def invite(call: GroupCall, user: str, show: Callable[[str], None]) -> None:
    try:
        await call.invite(user)
    except UnknownUser:
        show(f"{user} is not a user of this server: not invited.")
    except RecipientOffline:
        show(f"{user} is offline: not invited.")
    except KeyChangedError:
        show(f"{user}'s key has changed since you pinned it: not invited (see 'voice contacts').")
    except (SignalingClientError, TimeoutError) as exc:  # refused, rate limited, no answer
        show(f"Could not invite {user}: {exc or 'the server did not answer'}.")
    else:
        show(f"Invited {user}.")


async def cmd_group(settings: Settings, options: GroupOptions) -> ExitCode:
    """Run ``voice group start`` or ``voice group join``; its exit code."""
    source, sink = await options.audio.build()
    try:
        client = await login_client(settings)
    except BaseException:
        await source.close()
        await sink.close()
        raise
    interrupt = Interrupt()
    interrupt.install()
    try:
        return await _run(settings, options, client, source, sink, interrupt)
    finally:
        interrupt.remove()
        with contextlib.suppress(SignalingClientError):
            await client.close()
        await source.close()
        await sink.close()


async def _run(
    settings: Settings,
    options: GroupOptions,
    client: SignalingClient,
    source: AudioSource,
    sink: AudioSink,
    interrupt: Interrupt,
) -> ExitCode:
    out = settings.out
    lines = LineReader()
    contacts = settings.contacts()
    identity = settings.identity()
    say(out, f"Logged in to {settings.server} as {client.user} ({options.audio.describe()}).")
    if options.start:
        assert options.sfu is not None
        try:
            call = await GroupCall.create(
                client, identity, contacts, options.sfu, mixed=sink, janus_ca=settings.ca_file
            )
        except JanusError as exc:
            say(out, f"Could not open a group on {options.sfu}: {exc}")
            return ExitCode.SERVER_UNREACHABLE
        say(out, f"Group call open on {options.sfu}. {COMMANDS}.")
    else:
        call = GroupCall.listen(
            client,
            identity,
            contacts,
            auto_accept=options.auto_accept,
            mixed=sink,
            janus_ca=settings.ca_file,
        )
    try:
        if options.start:
            call.play(source)
            for user in options.invite:
                await invite(call, user, lambda text: say(out, text))
        else:
            refused = await _answer(settings, options, call, lines, interrupt)
            if refused is not None:
                return refused
        screen = GroupScreen(settings, call, lines)
        return await _in_call(options, call, screen, source, interrupt)
    finally:
        await call.close()


async def _answer(
    settings: Settings,
    options: GroupOptions,
    call: GroupCall,
    lines: LineReader,
    interrupt: Interrupt,
) -> ExitCode | None:
    """Wait for an invite and answer it: None once we are in the group, else the exit code
    (no invite, declined, or the join failed)."""
    out = settings.out
    say(out, "Waiting for an invite to a group call...")
    told = asyncio.ensure_future(_tell_refused(call, out))
    try:
        got = await _until(call, lambda c: c.invitation is not None, options.timeout, interrupt)
    finally:
        told.cancel()
    if not got or call.invitation is None:
        say(out, "No invite came." if not interrupt.event.is_set() else "Stopped.")
        return ExitCode.OK if interrupt.event.is_set() else ExitCode.NO_ANSWER
    creator = call.invitation.creator
    if not options.auto_accept:
        lines.discard_typed_ahead()  # a "y" typed before the question must not join
        question = ask_yes_no(out, f"{creator} invites you to a group call. Join?", lines)
        answer = await race(question, call.ended, interrupt.event)
        if answer is None:  # Ctrl-C, or the invite was withdrawn or lapsed meanwhile
            if not call.ended.is_set():
                await call.decline()
            say(out, "Stopped." if interrupt.event.is_set() else "The invite was withdrawn.")
            return ExitCode.OK if interrupt.event.is_set() else ExitCode.CALL_FAILED
        if not answer:
            await call.decline()
            say(out, "Declined.")
            return ExitCode.DECLINED
        await call.accept()
    say(out, f"Joining {creator}'s group call...")
    joined = await _until(call, lambda c: c.stream is not None, 30.0, interrupt)
    if not joined:
        say(out, "Could not join: " + _end_text(call))
        return ExitCode.OK if interrupt.event.is_set() else ExitCode.CALL_FAILED
    return None


async def _tell_refused(call: GroupCall, out: TextIO) -> None:
    """Say whose invites were refused: only contacts may invite us (docs/group-calls.md)."""
    assert isinstance(call.state, MemberState)
    shown: set[str] = set()
    while True:
        for user in call.state.refused_invites:
            if user not in shown:
                shown.add(user)
                say(out, f"Refused an invite from {user}: not one of your contacts. Only "
                         f"contacts may invite you ('voice trust {user} FINGERPRINT', or call "
                         f"{user} once).")  # fmt: skip
        await asyncio.sleep(0.2)


async def _in_call(
    options: GroupOptions,
    call: GroupCall,
    screen: GroupScreen,
    source: AudioSource,
    interrupt: Interrupt,
) -> ExitCode:
    if isinstance(call.state, MemberState):
        call.play(source)
    stoppers: list[Awaitable[object]] = [
        screen.commands(),
        call.ended.wait(),
        call.media_lost.wait(),
        interrupt.event.wait(),
    ]
    if options.duration is not None:
        stoppers.append(asyncio.sleep(options.duration))
    follow = asyncio.ensure_future(screen.follow())
    tasks = [asyncio.ensure_future(s) for s in stoppers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    left_by_us = not call.ended.is_set()
    if left_by_us:
        with contextlib.suppress(SignalingClientError, TimeoutError):
            async with asyncio.timeout(5):
                await call.end()
    follow.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follow
    if call.media_lost.is_set():
        screen.say("Lost the connection to the SFU (Janus): the group call has ended here.")
        return ExitCode.CALL_FAILED
    screen.say(_end_text(call))
    return ExitCode.OK


def _end_text(call: GroupCall) -> str:
    state = call.state
    if isinstance(state, CreatorState):
        return "Group call ended."
    reason = state.reason.value if state.reason is not None else "not joined"
    return f"Group call over ({reason.replace('_', ' ')})."


async def _until(
    call: GroupCall,
    predicate: Callable[[GroupCall], bool],
    limit: float | None,
    interrupt: Interrupt,
) -> bool:
    """Whether ``predicate`` came true before ``limit`` s, the call's end or Ctrl-C."""
    waiter = asyncio.ensure_future(call.until(lambda c: predicate(c) or c.ended.is_set()))
    stop = asyncio.ensure_future(interrupt.event.wait())
    try:
        await asyncio.wait(
            [waiter, stop],
            timeout=limit,  # None: until it comes
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        waiter.cancel()
        stop.cancel()
    return predicate(call)
