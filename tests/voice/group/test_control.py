"""voice.group.control's opener: what a delivery must be to reach the roster machine, and that
strangers cannot spend the freshness memory that protects our contacts' group messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voice.crypto.contacts import ContactBook
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity
from voice.crypto.replay import ReplayGuard
from voice.group import messages as gm
from voice.group.control import GroupOpener

NOW = 1_800_000_000.0


def sealed(sender: Identity, to: Identity, group: bytes, seq: int, message: gm.Message) -> bytes:
    header = EnvelopeHeader(group, seq, int(NOW * 1000))
    return seal(sender, to.public_key, header, gm.encode(message))


def leave(group: bytes) -> gm.Leave:
    return gm.Leave(group, 1)


@pytest.fixture
def me() -> Identity:
    return Identity.generate()


@pytest.fixture
def book(tmp_path: Path) -> ContactBook:
    return ContactBook(tmp_path / "contacts.json")


def opener_with(me: Identity, book: ContactBook, guard: ReplayGuard) -> GroupOpener:
    return GroupOpener(me, book, guard=guard)


def test_a_contacts_message_opens_once_and_its_replay_is_refused(
    me: Identity, book: ContactBook
) -> None:
    alice = Identity.generate()
    book.check("alice", alice.public_key)
    opener = GroupOpener(me, book, clock=lambda: NOW)
    group = os.urandom(gm.GROUP_ID_BYTES)
    body = sealed(alice, me, group, 1, leave(group))
    first = opener.open("alice", body)
    assert first is not None and first.pinned and first.message == leave(group)
    assert opener.open("alice", body) is None
    assert opener.dropped == {"replay": 1}


def test_a_message_under_another_key_than_the_pinned_one_is_refused(
    me: Identity, book: ContactBook
) -> None:
    book.check("alice", Identity.generate().public_key)
    opener = GroupOpener(me, book, clock=lambda: NOW)
    group = os.urandom(gm.GROUP_ID_BYTES)
    assert opener.open("alice", sealed(Identity.generate(), me, group, 1, leave(group))) is None
    assert opener.dropped == {"key_changed": 1}


def test_an_envelope_whose_group_differs_from_its_call_id_is_refused(
    me: Identity, book: ContactBook
) -> None:
    opener = GroupOpener(me, book, clock=lambda: NOW)
    group, other = os.urandom(gm.GROUP_ID_BYTES), os.urandom(gm.GROUP_ID_BYTES)
    assert opener.open("eve", sealed(Identity.generate(), me, group, 1, leave(other))) is None
    assert opener.open("eve", b"\x01garbage") is None
    assert opener.dropped == {"call_id_mismatch": 1, "bad_envelope": 1}


def test_strangers_with_many_accounts_cannot_crowd_out_a_contacts_groups(
    me: Identity, book: ContactBook
) -> None:
    """Strangers open as many groups as they like; every one lands in the guard's unsolicited
    pool, so a contact's new group still opens afterwards and its replays are still refused.
    (With every sender in the solicited pool, which refuses new calls when full, the contact's
    group would be refused: the guard is small here so that the test is quick.)"""
    alice = Identity.generate()
    book.check("alice", alice.public_key)
    guard = ReplayGuard(clock=lambda: NOW, max_calls=8, max_unsolicited=4)
    opener = opener_with(me, book, guard)
    strangers = [Identity.generate() for _ in range(12)]
    for n, stranger in enumerate(strangers):
        for _ in range(3):  # three groups each: 36 in all, more than both pools hold
            group = os.urandom(gm.GROUP_ID_BYTES)
            assert opener.open(f"s{n}", sealed(stranger, me, group, 1, leave(group))) is not None
    assert len(guard) <= 4  # the strangers' pool only
    for _ in range(8):  # the contact's groups fill the solicited pool, none refused
        group = os.urandom(gm.GROUP_ID_BYTES)
        body = sealed(alice, me, group, 1, leave(group))
        assert opener.open("alice", body) is not None
        assert opener.open("alice", body) is None  # and remembered: a replay is refused
    for n, stranger in enumerate(strangers):  # strangers go on; the contact's memory holds
        group = os.urandom(gm.GROUP_ID_BYTES)
        assert opener.open(f"s{n}", sealed(stranger, me, group, 1, leave(group))) is not None
    assert opener.open("alice", body) is None
    assert opener.dropped["replay"] == 9


def test_an_old_envelope_is_refused_by_age(me: Identity, book: ContactBook) -> None:
    opener = GroupOpener(me, book, clock=lambda: NOW + 3600)
    group = os.urandom(gm.GROUP_ID_BYTES)
    assert opener.open("eve", sealed(Identity.generate(), me, group, 1, leave(group))) is None
    assert opener.dropped == {"replay": 1}
